"""The viewer's diffraction plots (issue 18), with stand-in nodes sending messages of the shapes
the azimuthal integration, peak finding and hit-rate nodes send (tests/nodes/diffraction.py),
watched in Debian's Chromium through Playwright: I(q) against q in nm^-1 with a band of
+- sigma and a log y scale, the peak counts as a time series, and the hit rate as a number that
is there while the run goes.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import NODES
from playwright.sync_api import Page
from test_viewer import PageThread, run_watched, select_node, wait_until

import beampipe
from beampipe.viewer.images import bin_image
from beampipe.viewer.previews import PortPreview
from beampipe.viewer.waterfall import MAX_ROWS, Waterfall

PIPELINE = """
name: diffraction
nodes:
  azint: {use: diffraction:Patterns, params: {streams: 2, frames: 40, rate: 10}}
  peaks: {use: diffraction:Peaks, params: {min_peaks: 10}}
  rate: {use: diffraction:HitRate, params: {every: 5}}
  watch: {use: diffraction:Discard}
connections:
  - azint.out -> peaks.in
  - peaks.out -> rate.in
  - rate.out -> watch.in
"""
STREAMS = ["run_00001", "run_00002"]
FRAMES = 40

CARD = '.plot-card[data-port="out"]'
TRACES = """() => document.getElementById("plot-out").data.map(t => ({
  name: t.name, x: Array.from(t.x), y: Array.from(t.y), fill: t.fill || null}))"""


def script(page: Page, thread: PageThread) -> dict[str, Any]:
    """What the page shows of ``rate`` while the run goes, then of each node at the end."""
    shown: dict[str, Any] = {}
    select_node(page, "rate")
    thread.ready.set()
    wait_until(page, f"() => document.querySelector('{CARD} .value')?.textContent")
    shown["live"] = page.evaluate(
        f"""() => ({{value: document.querySelector('{CARD} .value').textContent,
                    state: window.beampipe.status.run.state}})"""
    )
    thread.run_done.wait(120)
    wait_until(page, "() => window.beampipe.status?.run.state === 'done'")
    wait_until(
        page,
        "n => window.beampipe.payloads.out?.traces?.filter(t => t.finished).length === n",
        len(STREAMS),
    )
    shown["rate"] = page.locator(f"{CARD} .value").text_content()

    select_node(page, "azint")
    wait_until(
        page,
        "n => window.beampipe.payloads.out?.traces?.filter(t => t.finished).length === n",
        len(STREAMS),
    )
    wait_until(page, "() => document.getElementById('plot-out')?.data?.length === 6")
    shown["patterns"] = page.evaluate(TRACES)
    shown["titles"] = [
        page.locator("#plot-out .xtitle").text_content(),
        page.locator("#plot-out .ytitle").text_content(),
        page.locator(f"{CARD} label.log").text_content(),
    ]
    page.check('input[type="checkbox"][data-port="out"]')
    wait_until(page, "() => document.getElementById('plot-out').layout.yaxis.type === 'log'")
    page.screenshot(path=Path.cwd() / "viewer-patterns.png", full_page=True)

    # The waterfall (frame x q) of the first stream, linear colour scale.
    page.uncheck('input[type="checkbox"][data-port="out"]')
    page.select_option('select.key[data-port="out"]', "intensity waterfall")
    wait_until(page, "() => document.getElementById('plot-out').data[0].type === 'heatmap'")
    page.select_option('select.slice[data-port="out"]', label=STREAMS[0])
    wait_until(
        page,
        "s => document.getElementById('plot-out').data[0].colorbar.title.text === 'intensity ' + s",
        STREAMS[0],
    )
    shown["waterfall"] = page.evaluate(
        """() => { const t = document.getElementById("plot-out").data[0];
                   return {z: t.z, x: Array.from(t.x), y: Array.from(t.y)}; }"""
    )
    shown["waterfall_titles"] = [
        page.locator("#plot-out .xtitle").text_content(),
        page.locator("#plot-out .ytitle").text_content(),
    ]
    page.screenshot(path=Path.cwd() / "viewer-waterfall.png", full_page=True)

    select_node(page, "peaks")
    page.wait_for_selector('select.key[data-port="out"] option[value="n_peaks"]', state="attached")
    page.select_option('select.key[data-port="out"]', "n_peaks")
    wait_until(
        page,
        "() => window.beampipe.payloads.out?.key === 'n_peaks'"
        " && document.getElementById('plot-out')?.data?.length === 2",
    )
    shown["peaks"] = page.evaluate(TRACES)
    shown["peak_keys"] = page.evaluate("() => window.beampipe.payloads.out.keys")
    shown["peak_axis"] = page.locator("#plot-out .xtitle").text_content()
    return shown


@pytest.fixture
def watched(folder):
    shutil.copy(NODES / "diffraction.py", folder)
    path = folder / "pipeline.yaml"
    path.write_text(PIPELINE)
    result, shown, viewer, _ = run_watched(path, script)
    assert viewer is not None
    viewer.stop()
    assert result.exit_code == 0, result.errors
    print(f"screenshot: {folder / 'viewer-patterns.png'}")
    return shown


def test_patterns_peaks_and_the_hit_rate_as_the_page_shows_them(watched):
    from diffraction import n_peaks, pattern

    shown = watched
    # I(q): per stream, the last frame's pattern against q, with a band of +- sigma.
    assert shown["titles"] == ["q (nm^-1)", "intensity", " log y"]
    lines = {t["name"]: t for t in shown["patterns"]}
    suffixes = ("", " + sigma", " - sigma")
    assert set(lines) == {f"{s}{suffix}" for s in STREAMS for suffix in suffixes}
    for s, stream in enumerate(STREAMS):
        q, intensity, sigma = pattern(s, FRAMES)
        np.testing.assert_array_equal(lines[stream]["x"], q)
        np.testing.assert_array_equal(lines[stream]["y"], intensity)
        np.testing.assert_allclose(lines[f"{stream} + sigma"]["y"], intensity + sigma, rtol=1e-15)
        np.testing.assert_allclose(lines[f"{stream} - sigma"]["y"], intensity - sigma, rtol=1e-15)
        assert lines[f"{stream} - sigma"]["fill"] == "tonexty"

    # The waterfall of the first stream: one row per frame, in frame order, against q (the tap
    # misses the frames sent before the viewer had subscribed: ids says which rows are there).
    waterfall = shown["waterfall"]
    assert shown["waterfall_titles"] == ["q (nm^-1)", "id"]
    ids = waterfall["y"]
    assert ids == list(range(FRAMES - len(ids) + 1, FRAMES + 1)) and ids
    np.testing.assert_array_equal(waterfall["x"], pattern(0, 1)[0])
    rows = [pattern(0, int(i))[1].astype(np.float32) for i in ids]
    np.testing.assert_array_equal(np.array(waterfall["z"]), rows)

    # Peaks: 0-d items per frame, a time series per stream; the hit (bool) is one too.
    assert shown["peak_keys"] == {"n_peaks": "points", "hit": "points"}
    assert shown["peak_axis"] == "time"
    expected = [n_peaks(i) for i in range(1, FRAMES + 1)]
    peaks = {t["name"]: t["y"] for t in shown["peaks"]}
    assert set(peaks) == set(STREAMS)
    for y in peaks.values():  # the last frames at least (see the waterfall)
        assert y and y == expected[-len(y) :]
    assert len(peaks[STREAMS[-1]]) > FRAMES / 2  # the second run began 4 s into the run

    # The hit rate: shown as a number while the run goes, and at the end the last stream's.
    # (the run's badge may still say "starting" while a node is slow to report running)
    assert shown["live"]["state"] in ("starting", "running", "draining"), shown["live"]
    assert re.fullmatch(r"hit_rate = [\d.e-]+ \(run_0000[12], #\d+\)", shown["live"]["value"])
    hits = sum(n >= 10 for n in expected)
    value = float(f"{hits / FRAMES:.4g}")
    assert shown["rate"] == f"hit_rate = {value:g} ({STREAMS[-1]}, #{FRAMES})"


def test_uncertainty_and_units_of_a_pattern_in_the_payload():
    """Without a browser: the band comes from ``sigma`` for the signal only, or from
    ``<item>_sigma``, of the same shape; units from the metadata."""
    preview = PortPreview()
    q = np.linspace(1, 2, 5)
    meta = {"signal": "intensity", "axes": ["q"], "units": {"q": "nm^-1"}}
    data = {"q": q, "intensity": q * 2, "sigma": q / 10, "bkg": q, "bkg_sigma": q / 5}
    preview.add(beampipe.Message(data=data, metadata=meta, stream="s", id=1))
    plot = preview.payload("intensity")
    assert plot["axis"] == "q" and plot["units"] == {"q": "nm^-1"}
    np.testing.assert_array_equal(plot["traces"][0]["sigma"], q / 10)
    np.testing.assert_array_equal(preview.payload("bkg")["traces"][0]["sigma"], q / 5)
    assert preview.payload("q")["traces"][0]["sigma"] is None  # sigma is the signal's only


def test_a_waterfall_keeps_its_whole_extent_in_bounded_rows():
    """600 curves of 1000 points: 500 columns (block means of 2), at most MAX_ROWS rows, every
    4th message kept once 512 have come; a curve of another length starts again."""
    curves = np.random.default_rng(2).poisson(50.0, (600, 1000)).astype(np.float64)
    w = Waterfall()
    for i, curve in enumerate(curves, 1):
        w.add(i, curve)
    assert w.stride == 4 and w.n == 150 and w.rows.shape == (MAX_ROWS, 500)
    np.testing.assert_array_equal(w.ids[: w.n], np.arange(1, 601, 4))
    for row, i in zip(w.rows[: w.n], w.ids[: w.n], strict=True):
        np.testing.assert_array_equal(row, bin_image(curves[i - 1][None, :], 512)[0][0])
    image = w.payload("intensity", "s", "q", np.arange(1000.0))
    assert image["shape"] == [600, 1000] and image["rows"] == 150 and image["columns"] == 500
    np.testing.assert_array_equal(image["x"], np.arange(0.5, 1000, 2))
    w.add(601, np.ones(10))
    assert (w.n, w.stride, w.size, w.rows.shape) == (1, 1, 10, (MAX_ROWS, 10))


def test_a_cake_is_a_heat_map_on_chi_and_q():
    """Without a browser: ``azint.integrate2d``'s ``intensity`` (chi x q) with ``axes: [chi, q]``
    is drawn on those axes, binned with the image (1200 q points: by 3)."""
    q, chi = np.linspace(0.5, 40.0, 1200), np.linspace(-180.0, 180.0, 36)
    cake = np.outer(np.cos(np.radians(chi)) + 2, 1 / q)
    meta = {"signal": "intensity", "axes": ["chi", "q"], "units": {"q": "nm^-1", "chi": "deg"}}
    preview = PortPreview()
    data = {"intensity": cake, "chi": chi, "q": q}
    preview.add(beampipe.Message(data=data, metadata=meta, stream="s", id=1))
    plot = preview.payload(None)
    image = plot["image"]
    assert plot["key"] == "intensity" and plot["units"] == meta["units"]
    assert (image["y_axis"], image["x_axis"], image["binning"]) == ("chi", "q", 3)
    np.testing.assert_allclose(image["y"], [chi[i : i + 3].mean() for i in range(0, 36, 3)])
    np.testing.assert_allclose(image["x"], q.reshape(400, 3).mean(axis=1))
    assert image["rows"] == 12 and image["columns"] == 400 and image["label"] is None
