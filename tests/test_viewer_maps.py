"""The viewer's element maps (issue 20): examples/xrf-map under ``beampipe run --ui``, watched in
Debian's Chromium through Playwright. The ``maps`` node's ``area`` (element lines x y x x) is
shown as a heat map of one element, chosen by name, on the motor axes in um; the plotted values
equal the maps the reducer sent (as the NeXus sink wrote them), the pixel never measured is not
drawn (the grey background shows through), and the map grows while the scan runs.
"""

from __future__ import annotations

import io
from typing import Any

import h5py
import numpy as np
import pytest
from conftest import REPO
from PIL import Image
from playwright.sync_api import Page, sync_playwright
from test_viewer import VIEWPORT, Cli, chromium, need_chromium, select_node, wait_until

import beampipe
from beampipe.viewer.images import MAX_SLICES, MAX_STACK_PIXELS, bin_image
from beampipe.viewer.previews import PortPreview

EXAMPLE = REPO / "examples" / "xrf-map"
PACE = 2
"""Spectra per second: 10 s for the 19 points, with a map every 2 points (``maps.every``), so
the page sees the map grow even when it subscribes to the taps a few seconds into the run."""
GREY = (0xC8, 0xCC, 0xD2)
"""The plot background seen through pixels not measured (plots.js, NOT_MEASURED)."""

PLOTTED = """() => {
  const t = document.getElementById("plot-out").data[0];
  return {type: t.type, z: t.z, x: Array.from(t.x), y: Array.from(t.y),
          title: t.colorbar.title.text};
}"""

MISSING_PIXEL = """([row, col]) => {
  // Where pixel (row, col) of the heat map is drawn, relative to the plot's div.
  const div = document.getElementById("plot-out"), t = div.data[0], L = div._fullLayout;
  return [L.xaxis._offset + L.xaxis.l2p(t.x[col]), L.yaxis._offset + L.yaxis.l2p(t.y[row])];
}"""


@pytest.fixture(scope="module")
def xrf_map(tmp_path_factory):
    """The example under ``--ui`` and a page watching ``maps`` until the run is done: (the
    run's output folder, what the page showed)."""
    need_chromium()
    cwd = tmp_path_factory.mktemp("xrf-map")
    pace = ["--set", f"spectra.pace={PACE}", "--set", "maps.every=2"]
    cli = Cli([str(EXAMPLE / "pipeline.yaml"), *pace], cwd)
    try:
        url = cli.wait_for(r"viewer: (http://\S+)")[1]
        with sync_playwright() as playwright:
            browser = chromium(playwright)
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(url)
            select_node(page, "maps")
            shown = watch(page, cli)
            cli.wait_for(r"1/1 streams")
            shown.update(choose_elements(page, cwd / "shot.png"))
            browser.close()
        cli.wait_for(r"viewer: still serving")
        assert cli.interrupt() == 0, cli.output
        yield cwd, shown, cli.output
    finally:
        cli.stop()


def watch(page: Page, cli: Cli) -> dict[str, Any]:
    """Follow the map while the scan runs (the pixels missing in each map the page showed),
    until the final map (1 pixel never measured) of the finished run."""
    wait_until(
        page,
        """() => {
             const p = window.beampipe.payloads.out;
             const seen = (window.seenMissing ||= []);
             if (p?.image && seen[seen.length - 1] !== p.image.missing) seen.push(p.image.missing);
             return window.beampipe.status?.run.state === "done" && p?.image?.missing === 1
               && document.getElementById("plot-out")?.data?.[0]?.type === "heatmap";
           }""",
        output=cli.output,
    )
    return {"missing": page.evaluate("() => window.seenMissing")}


def choose_elements(page: Page, shot: Any) -> dict[str, Any]:
    """The first element's map as shown; then each element chosen by name in turn."""
    shown: dict[str, Any] = {"first": page.evaluate(PLOTTED)}
    labels = page.eval_on_selector_all(
        'select.slice[data-port="out"] option', "os => os.map(o => o.textContent)"
    )
    shown["labels"] = labels
    shown["titles"] = [
        page.locator("#plot-out .xtitle").text_content(),
        page.locator("#plot-out .ytitle").text_content(),
    ]
    shown["chosen"] = {}
    for label in ("Fe Ka", "Cr K", labels[-1]):
        page.select_option('select.slice[data-port="out"]', label=label)
        wait_until(
            page,
            "l => document.getElementById('plot-out').data[0].colorbar.title.text === 'area ' + l",
            label,
        )
        shown["chosen"][label] = page.evaluate(PLOTTED)
    page.select_option('select.slice[data-port="out"]', label="Fe Ka")
    wait_until(
        page,
        "() => document.getElementById('plot-out').data[0].colorbar.title.text === 'area Fe Ka'",
    )
    page.evaluate("() => document.getElementById('plot-out').scrollIntoView()")
    box = page.locator("#plot-out").bounding_box()
    shown["area"] = page.screenshot(clip=box)
    shown["pixel"] = page.evaluate(MISSING_PIXEL, [2, 3])
    shown["info"] = page.locator('.plot-card[data-port="out"] .info').text_content()
    page.screenshot(path=shot, full_page=True)
    print(f"screenshot: {shot}")
    return shown


def test_the_map_is_a_heat_map_per_element_on_the_motor_axes(xrf_map):
    cwd, shown, _ = xrf_map
    with h5py.File(cwd / "out" / "xrf-map.nxs", "r") as f:
        maps = f["scan_mca/maps"]
        area, x, y = maps["area"][()], maps["x"][()], maps["y"][()]
        names = list(maps.attrs.get("names", [])) or None
    first = shown["first"]
    assert first["type"] == "heatmap"
    assert first["x"] == list(x) and first["y"] == list(y)  # um, not pixel indices
    assert shown["titles"] == ["x (um)", "y (um)"]
    assert len(shown["labels"]) == area.shape[0] == 15
    assert {"Fe Ka", "Cr K"} <= set(shown["labels"])
    if names is not None:
        assert shown["labels"] == names
    assert "1 px not measured" in shown["info"]


def plotted(z: list[list[float | None]]) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in z])


def test_choosing_an_element_plots_its_map_as_the_reducer_sent_it(xrf_map):
    cwd, shown, _ = xrf_map
    labels = shown["labels"]
    with h5py.File(cwd / "out" / "xrf-map.nxs", "r") as f:
        area = f["scan_mca/maps/area"][()]
    np.testing.assert_array_equal(plotted(shown["first"]["z"]), area[0].astype(np.float32))
    assert shown["first"]["title"] == f"area {labels[0]}"
    maps = []
    for label, seen in shown["chosen"].items():
        expected = area[labels.index(label)].astype(np.float32)
        np.testing.assert_array_equal(plotted(seen["z"]), expected)
        maps.append(expected)
    assert not np.array_equal(maps[0], maps[1], equal_nan=True)  # Fe and Cr differ
    for seen in (shown["first"], *shown["chosen"].values()):
        z = seen["z"]
        assert z[2][3] is None  # the pixel lost during the scan (examples/xrf-map/README.md)
        assert sum(v is None for row in z for v in row) == 1


def test_the_pixel_not_measured_shows_grey_and_the_map_grows(xrf_map):
    _, shown, output = xrf_map
    pixels = np.asarray(Image.open(io.BytesIO(shown["area"])).convert("RGB"))
    px, py = (round(v) for v in shown["pixel"])
    assert tuple(pixels[py, px]) == GREY
    assert pixels.reshape(-1, 3).std(axis=0).max() > 10, "the plot area is (nearly) uniform"
    missing = shown["missing"]
    assert missing[-1] == 1 and len(missing) >= 2, (missing, output)  # it grew on screen
    assert missing == sorted(missing, reverse=True)


def test_stacks_keep_their_first_slices_within_the_budget():
    """Without a browser: which slices of a stack are kept and how they are named."""
    rng = np.random.default_rng(4)
    cases = [  # (shape, names) -> slices kept, labels of the first two
        ((100, 300, 300), None, MAX_STACK_PIXELS // (300 * 300), ["0", "1"]),
        ((200, 20, 30), None, MAX_SLICES, ["0", "1"]),
        ((3, 2000, 2100), ["a", "b", "c"], 1, ["a"]),
        ((2, 3, 4, 5), None, 6, ["0,0", "0,1"]),
        ((2, 3, 4, 5), ["Fe K", "Cr K", "Mn K"], 6, ["0, Fe K", "0, Cr K"]),  # element, line
        ((3, 4, 5), ["Fe K", "Cr K"], 3, ["0", "1"]),  # names of another length: indices
        ((4, 5), ["Fe K", "Cr K"], 1, [""]),  # a 2-D item of a message with names
    ]
    for shape, names, kept, first in cases:
        stack = rng.poisson(9.0, shape).astype(np.float64)
        preview = PortPreview()
        meta = {"names": names} if names else {}
        preview.add(beampipe.Message(data={"maps": stack}, metadata=meta, stream="s", id=1))
        image = preview.images["maps"]
        assert len(image.slices) == len(image.labels) == kept, shape
        assert image.labels[:2] == first and image.count == int(np.prod(shape[:-2]))
        last = stack.reshape(-1, *shape[-2:])[kept - 1]
        np.testing.assert_array_equal(image.slices[-1], bin_image(last)[0])
        plot = preview.payload("maps", kept - 1)["image"]
        assert plot["slice"] == kept - 1 and plot["slices"] == image.count
        assert preview.payload("maps", kept)["image"]["slice"] == 0  # not kept: the first
    empty = PortPreview()
    empty.add(beampipe.Message(data={"maps": np.zeros((0, 4, 5))}, stream="s", id=1))
    assert empty.keys == {} and empty.payload(None)["kind"] is None
