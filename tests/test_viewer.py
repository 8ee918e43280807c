"""The live viewer (``beampipe run --ui``), driven in a real browser (Debian's Chromium through
Playwright), plus its preview reduction, ``/metrics`` and the file browser.

Two kinds of runs: the README's P65 example under ``beampipe run --ui`` as a user starts it (a
subprocess whose printed URL the browser opens), and ``detector_sim`` pipelines run in this
process with :class:`Launcher` and :class:`Viewer` (the launcher's loop in the main thread,
the browser in a thread), so that the launcher's own metrics can be compared with what the page
and ``/metrics`` show.
"""

from __future__ import annotations

import base64
import http.server
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import httpx
import numpy as np
import pytest
from conftest import EXAMPLE, NODES, Recorder
from PIL import Image
from playwright.sync_api import Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

import beampipe
from beampipe.config import load_pipeline
from beampipe.launch import Launcher
from beampipe.nodes.sim.detector import DetectorSim
from beampipe.runtime.metrics import EDGES
from beampipe.viewer import Viewer
from beampipe.viewer.hosts import LOCAL_NAMES, allowed_hosts
from beampipe.viewer.images import MAX_SIDE, bin_image
from beampipe.viewer.previews import PortPreview

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 1000}
WAIT = 60_000
"""Milliseconds the page may take to show what a test waits for."""
SCANS = sorted((EXAMPLE / "data").glob("20K_GOE_Fe_K_240.*.xdi"))
PACE = 700
"""Points per second of the P65 replay: about 14 s for the 9713 points, long enough to watch
the nodes at work."""

THROTTLE = """
// Slow reader: every websocket message is handled a second after the previous one.
(() => {
  const Native = window.WebSocket;
  window.__handled = 0;
  window.WebSocket = class extends Native {
    set onmessage(handler) {
      let queue = Promise.resolve();
      super.onmessage = (event) => {
        queue = queue
          .then(() => new Promise((resolve) => setTimeout(resolve, 1000)))
          .then(() => { window.__handled += 1; handler(event); });
      };
    }
  };
})();
"""


def need_chromium() -> None:
    """Skip the test unless Debian's Chromium is installed (checked before anything starts)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"no Chromium at {CHROMIUM}: bash scripts/test.sh installs Debian's chromium (as root)"
        )


def chromium(playwright: Any) -> Any:
    need_chromium()
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def wait_until(page: Page, condition: str, arg: Any = None, output: str = "") -> None:
    """Wait for the JS function ``condition(arg)`` to be true on the page; on time-out, fail
    with what the page showed (and ``output``, the run's terminal output)."""
    try:
        page.wait_for_function(condition, arg=arg, timeout=WAIT, polling=200)
    except PlaywrightTimeout:
        shown = page.evaluate("() => JSON.stringify(window.beampipe.status)")
        raise AssertionError(
            f"timed out waiting for {condition}\npage status: {shown}\n{output}"
        ) from None


def select_node(page: Page, node: str) -> None:
    page.wait_for_selector(f'#graph g.node[data-node="{node}"]')
    page.click(f'#graph g.node[data-node="{node}"]')


# -- previews, without a browser -------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2167, 2070), (1024, 1024), (7, 1300), (300, 200)])
def test_bin_image_gives_block_means_of_at_most_max_side(shape):
    rng = np.random.default_rng(1)
    image = rng.poisson(7.0, shape).astype(np.uint16)
    binned, f = bin_image(image)
    assert max(binned.shape) <= MAX_SIDE and binned.dtype == np.float32
    assert f == max(1, -(-max(shape) // MAX_SIDE))
    rows, cols = shape
    for i in (0, binned.shape[0] - 1):
        for j in (0, binned.shape[1] - 1):
            block = image[i * f : (i + 1) * f, j * f : (j + 1) * f]
            assert binned[i, j] == pytest.approx(block.mean(), rel=1e-6)
    full = image[: rows // f * f, : cols // f * f].astype(np.float64)
    means = full.reshape(rows // f, f, cols // f, f).mean(axis=(1, 3))
    np.testing.assert_allclose(binned[: rows // f, : cols // f], means, rtol=1e-6)


def test_preview_curves_per_stream_against_the_metadata_axis_and_images_rate_limited():
    now = [0.0]
    preview = PortPreview(clock=lambda: now[0])
    meta = {"signal": "mu", "axes": ["energy"]}
    for stream in ("a", "b"):
        preview.add(beampipe.StreamStart(stream, {}))
        for i in range(1, 4):
            msg = beampipe.Message(
                data={"energy": np.float64(10 * i), "mu": np.float64(i + (stream == "b"))},
                metadata=meta,
                stream=stream,
                id=i,
            )
            preview.add(msg)
    preview.add(beampipe.EndOfStream("a", 3))
    plot = preview.payload(None)
    assert plot["kind"] == "points" and plot["key"] == "mu" and plot["axis"] == "energy"
    assert [t["stream"] for t in plot["traces"]] == ["a", "b"]
    assert [t["finished"] for t in plot["traces"]] == [True, False]
    np.testing.assert_array_equal(plot["traces"][1]["x"], [10, 20, 30])
    np.testing.assert_array_equal(plot["traces"][1]["y"], [2, 3, 4])

    frames = [np.full((40, 30), k, dtype=np.uint16) for k in range(1, 21)]
    images = PortPreview(clock=lambda: now[0])
    for k, frame in enumerate(frames, 1):
        now[0] = k * 0.1  # 10 frames per second: two of them are binned per second
        images.add(beampipe.Message(data={"image": frame}, stream="s", id=k))
        images.tick()
    assert images.images["image"].id < 20
    images.add(beampipe.EndOfStream("s", 20))  # the last frame of a stream is always shown
    assert images.images["image"].id == 20 and images.images_binned <= 11
    assert images.payload(None)["kind"] == "images"


# -- the P65 example under `beampipe run --ui` -----------------------------------------------


class Cli:
    """``beampipe run ... --ui`` in a subprocess; its terminal output is collected."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.cwd = cwd
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "beampipe", "run", *args, "--ui"],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.lines.append("")  # end of output
            self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        """The first match of ``pattern`` in a line printed so far or later."""
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            for line in self.lines:
                if m := regex.search(line):
                    return m
            return None

        with self._changed:
            ok = self._changed.wait_for(lambda: found() or (self.lines[-1:] == [""]), timeout)
        m = found()
        assert ok and m, f"no {pattern!r} in the output:\n{''.join(self.lines)}"
        return m

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def interrupt(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(30)

    def stop(self) -> None:
        """Interrupt the run; kill it if it has not ended within 30 s."""
        try:
            self.interrupt()
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)


@pytest.fixture(scope="module")
def p65(tmp_path_factory):
    """The P65 example under ``--ui`` and a browser page on it (nothing selected yet); the run
    is stopped whatever happens (Ctrl-C, then killed if it does not end)."""
    need_chromium()
    cwd = tmp_path_factory.mktemp("p65")
    cli = Cli([str(EXAMPLE / "pipeline.yaml"), "--set", f"scan.pace={PACE}"], cwd)
    try:
        url = cli.wait_for(r"viewer: (http://\S+)")[1]
        with sync_playwright() as playwright:
            browser = chromium(playwright)
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(url)
            yield cli, page, url
            browser.close()
    finally:
        cli.stop()


def _entries(path: Path) -> dict[str, str]:
    with h5py.File(path, "r") as f:
        return {f[name]["entry_identifier"][()].decode(): name for name in f}


def test_page_shows_all_nodes_with_nonzero_rates(p65):
    cli, page, _ = p65
    nodes = ["scan", "mu", "normalize", "nexus"]
    wait_until(
        page,
        """nodes => nodes.every(n => {
             const g = document.querySelector(`#graph g.node[data-node="${n}"]`);
             return g && parseFloat(g.dataset.rate) > 0 && g.dataset.state === "running";
           })""",
        nodes,
        cli.output,
    )
    shown = page.eval_on_selector_all("#graph g.node", "gs => gs.map(g => g.dataset.node)")
    assert shown == nodes
    assert page.locator("#graph path.edge").count() == 4
    rates = page.eval_on_selector_all("#graph g.node .rates", "ts => ts.map(t => t.textContent)")
    assert all(re.match(r"[\d.]+k? msg/s · [\d.]+ MB/s", r) for r in rates), rates
    assert page.locator("#run-state").text_content() == "running"


def test_normalize_shows_mu_of_e_whose_last_point_is_what_the_sink_wrote(p65, tmp_path):
    cli, page, _ = p65
    select_node(page, "normalize")
    page.wait_for_selector('select.key[data-port="out"] option[value="mu"]', state="attached")
    page.select_option('select.key[data-port="out"]', "mu")
    wait_until(
        page,
        """n => {
             const p = window.beampipe.payloads.out;
             return p && p.key === "mu" && p.traces.length === n
               && p.traces.every(t => t.finished);
           }""",
        len(SCANS),
        cli.output,
    )
    cli.wait_for(r"finished: 5/5 streams")  # the sink has closed the file
    curves = page.evaluate(
        """() => document.getElementById("plot-out").data
                  .map(t => ({stream: t.name, x: Array.from(t.x), y: Array.from(t.y)}))"""
    )
    path = cli.cwd / "out" / "xas-p65.nxs"
    entries = _entries(path)
    assert sorted(c["stream"] for c in curves) == [s.stem for s in SCANS]
    with h5py.File(path, "r") as f:
        for c in curves:
            normalized = f[entries[c["stream"]]]["normalized"]
            assert c["y"][-1] == normalized["mu"][-1]
            np.testing.assert_array_equal(c["y"], normalized["mu"][()])
            np.testing.assert_array_equal(c["x"], normalized["energy"][()])
    title = page.locator("#plot-out .xtitle").text_content()
    assert title == "energy (eV)"  # the unit from the metadata's units
    shot = tmp_path / "viewer-xas.png"
    page.screenshot(path=shot, full_page=True)
    print(f"screenshot: {shot}")


def test_stream_list_counts_states_and_links_to_the_nexus_entries(p65):
    cli, page, _ = p65
    wait_until(
        page,
        "n => document.querySelectorAll('#streams tr[data-state=\"finished\"]').length === n",
        len(SCANS),
        cli.output,
    )
    rows = page.eval_on_selector_all(
        "#streams tbody tr",
        """trs => trs.map(tr => ({
             stream: tr.dataset.stream,
             state: tr.querySelector(".state").textContent,
             messages: Number(tr.querySelector(".messages").textContent),
             entry: tr.querySelector(".files a")?.dataset.entry,
           }))""",
    )
    path = cli.cwd / "out" / "xas-p65.nxs"
    entries = _entries(path)
    expected = {s.stem: np.loadtxt(s).shape[0] for s in SCANS}
    assert {r["stream"]: r["messages"] for r in rows} == expected
    assert {r["state"] for r in rows} == {"finished"}
    assert {r["stream"]: r["entry"] for r in rows} == {s: f"/{e}" for s, e in entries.items()}

    first = SCANS[0].stem
    page.click(f'#streams tr[data-stream="{first}"] .files a')
    entry = f"/{entries[first]}"
    page.wait_for_selector(f'#file-view[data-path="{entry}"]', timeout=WAIT)
    children = page.eval_on_selector_all("#file-children li a", "as => as.map(a => a.textContent)")
    assert {"points", "normalized", "instrument", "metadata"} <= set(children)
    page.click('#file-children li a:text-is("normalized")')
    wait_until(page, "() => document.getElementById('nxdata-plot')?.data?.length === 1")
    y = page.evaluate("() => Array.from(document.getElementById('nxdata-plot').data[0].y)")
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(y, f[entries[first]]["normalized"]["norm"][()])


def test_ctrl_c_ends_the_viewer_with_the_runs_exit_code(p65):
    cli, _, url = p65
    cli.wait_for(r"viewer: still serving")
    assert cli.interrupt() == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=5)


# -- detector_sim runs in this process -------------------------------------------------------


class PageThread(threading.Thread):
    """A browser page in a thread of its own (the launcher's loop needs the main thread).

    ``script(page, run_done)`` runs once the page has loaded ``url`` (with ``init_script``
    before its scripts, if given); :attr:`ready` is set when it calls ``ready.set()``,
    ``run_done`` when the run is over. Its result or exception is kept for :meth:`result`.
    """

    def __init__(self, url: str, script: Callable[..., Any], init_script: str = "") -> None:
        super().__init__(daemon=True)
        self.url, self.script, self.init_script = url, script, init_script
        self.ready = threading.Event()
        self.run_done = threading.Event()
        self._result: Any = None
        self._error: BaseException | None = None

    def run(self) -> None:
        try:
            with sync_playwright() as playwright:
                browser = chromium(playwright)
                page = browser.new_page(viewport=VIEWPORT)
                if self.init_script:
                    page.add_init_script(self.init_script)
                page.goto(self.url)
                self._result = self.script(page, self)
                browser.close()
        except BaseException as exc:
            self._error = exc
        finally:
            self.ready.set()

    def result(self) -> Any:
        self.join(120)
        assert not self.is_alive(), "the browser thread did not finish"
        if self._error is not None:
            raise self._error
        return self._result


def detector_pipeline(folder: Path, **detector: Any) -> Path:
    path = folder / "pipeline.yaml"
    params = ", ".join(f"{k}: {v}" for k, v in detector.items())
    path.write_text(
        f"""
name: detector
nodes:
  detector:
    use: detector_sim
    params: {{{params}}}
  sum:
    use: sum
    params: {{every: 25}}
  nexus:
    use: nexus_writer
    params: {{path: out/sum.nxs, groups: {{sum: {{mode: replace}}}}}}
connections:
  - detector.out -> sum.in
  - sum.out -> nexus.sum
"""
    )
    return path


def run_watched(
    path: Path, script: Callable[..., Any] | None, init_script: str = ""
) -> tuple[Any, Any, Viewer | None, Launcher]:
    """Run the pipeline in ``path`` (with a viewer and a page running ``script`` unless None);
    ``(run result, script result, viewer, launcher)``. The viewer is still serving."""
    pipeline = load_pipeline(path)
    if script is None:
        launcher = Launcher(pipeline, Recorder())
        return launcher.run(), None, None, launcher
    need_chromium()
    viewer = Viewer(pipeline)
    launcher = Launcher(pipeline, viewer.observer(Recorder()))
    viewer.start(launcher)
    page = PageThread(viewer.url, script, init_script)
    page.start()
    assert page.ready.wait(60), "the page did not load"
    try:
        result = launcher.run()
    finally:
        page.run_done.set()
    return result, page.result(), viewer, launcher


IMAGE = {"shape": "[1024, 1024]", "rate": 20, "frames": 60, "seed": 3}


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """A 1024 x 1024 detector_sim at 20 Hz watched in a page: (result, what the page showed,
    viewer, launcher, folder)."""
    need_chromium()
    folder = tmp_path_factory.mktemp("image")
    cwd = Path.cwd()
    os.chdir(folder)
    shot = folder / "viewer-image.png"

    def script(page: Page, thread: PageThread) -> dict[str, Any]:
        select_node(page, "detector")
        thread.ready.set()
        wait_until(page, "() => document.getElementById('plot-out')?.data?.[0]?.type === 'heatmap'")
        image = page.evaluate("() => window.beampipe.payloads.out.image")
        z = page.evaluate(
            "() => { const z = document.getElementById('plot-out').data[0].z;"
            " return [z.length, z[0].length]; }"
        )
        page.evaluate("() => document.getElementById('plot-out').scrollIntoView()")
        box = page.locator("#plot-out .nsewdrag").bounding_box()
        area = page.screenshot(clip=box)
        page.screenshot(path=shot, full_page=True)
        page.check('input[type="checkbox"][data-port="out"]')
        wait_until(
            page,
            "() => document.getElementById('plot-out').data[0].colorbar.title.text"
            ".startsWith('log10')",
        )
        log = page.evaluate(
            "() => ({image: window.beampipe.payloads.out.image,"
            " z: document.getElementById('plot-out').data[0].z[5][7]})"
        )
        thread.run_done.wait(120)
        return {"image": image, "z": z, "area": area, "log": log}

    try:
        result, shown, viewer, launcher = run_watched(detector_pipeline(folder, **IMAGE), script)
        print(f"screenshot: {shot}")
        yield result, shown, viewer, launcher, folder
        assert viewer is not None
        viewer.stop()
    finally:
        os.chdir(cwd)


def test_detector_image_is_shown_binned_and_the_screenshot_is_not_uniform(image_run):
    result, shown, *_ = image_run
    assert result.exit_code == 0, result.errors
    image = shown["image"]
    assert image["shape"] == [1024, 1024] and image["binning"] == 2
    assert shown["z"] == [512, 512]
    z = np.frombuffer(base64.b64decode(image["z"]), "<f4").reshape(512, 512)
    params = DetectorSim.Params.model_validate({"shape": [1024, 1024], "seed": 3, "frames": 60})
    frame = DetectorSim(params).pooled_frames()[(image["id"] - 1) % params.pool]
    np.testing.assert_array_equal(z, bin_image(frame)[0])
    log = shown["log"]  # after ticking "log colour scale"
    z = np.frombuffer(base64.b64decode(log["image"]["z"]), "<f4").reshape(512, 512)
    assert log["z"] == pytest.approx(np.log10(np.float64(z[5, 7])), rel=1e-9)
    pixels = np.asarray(Image.open(io.BytesIO(shown["area"])).convert("L"), dtype=np.float64)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 200
    assert pixels.std() > 10, "the plot area is (nearly) uniform"
    assert len(np.unique(pixels)) > 50


def test_metrics_endpoint_equals_the_launchers_metrics(image_run):
    _, _, viewer, launcher, _ = image_run
    text = urllib.request.urlopen(viewer.url + "metrics", timeout=10).read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    expected = launcher.metrics
    assert set(expected) == {("detector", 0), ("sum", 0), ("nexus", 0)}

    def value(family: str, suffix: str, node: str, **labels: str) -> float:
        for s in families[family].samples:
            if (
                s.name == family + suffix
                and s.labels["node"] == node
                and all(s.labels.get(k) == v for k, v in labels.items())
            ):
                assert s.labels["pipeline"] == "detector" and s.labels.get("replica", "0") == "0"
                return s.value
        raise AssertionError(f"no {family}{suffix} for {node} {labels}")

    for (node, _), m in expected.items():
        assert value("beampipe_messages_received", "_total", node) == m.messages_in
        assert value("beampipe_received_bytes", "_total", node) == m.bytes_in
        assert value("beampipe_messages_sent", "_total", node) == m.messages_out
        assert value("beampipe_sent_bytes", "_total", node) == m.bytes_out
        assert value("beampipe_cpu_seconds", "_total", node) == pytest.approx(m.cpu_time)
        assert value("beampipe_in_flight_messages", "", node) == m.in_flight
        assert value("beampipe_replica_up", "", node) == 0  # the run is over
        for family, h in (
            ("beampipe_latency_seconds", m.latency),
            ("beampipe_process_time_seconds", m.process_time),
        ):
            assert families[family].type == "histogram"
            assert value(family, "_count", node) == h.total
            assert value(family, "_bucket", node, le="+Inf") == h.total
            for i in (40, 80, 120):
                le = EDGES[i]
                bucket = value(family, "_bucket", node, le=repr(le))
                assert bucket == sum(h.counts[: i + 1])
    assert families["beampipe_messages_received"].type == "counter"
    assert value("beampipe_messages_sent", "_total", "detector") == IMAGE["frames"]
    tap = value("beampipe_viewer_tap_messages", "_total", "detector", port="out")
    assert 0 < tap <= IMAGE["frames"]


def get_json(url: str) -> tuple[int, Any]:
    """(HTTP status, decoded JSON body) of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_file_endpoints_serve_slices_of_the_sinks_files_only(image_run):
    *_, viewer, _, folder = image_run
    api = viewer.url + "api/files/"
    assert get_json(api[:-1]) == (
        200,
        [{"node": "nexus", "path": str(folder / "out" / "sum.nxs"), "exists": True}],
    )
    status, meta = get_json(api + "nexus/meta?path=/series_00001/sum")
    assert status == 200 and meta["kind"] == "group"
    assert {c["name"] for c in meta["children"]} >= {"image", "count"}
    query = urllib.parse.urlencode({"path": "/series_00001/sum/image", "selection": "10:12,::256"})
    status, data = get_json(api + f"nexus/data?{query}")
    with h5py.File(folder / "out" / "sum.nxs", "r") as f:
        assert status == 200 and data == f["series_00001/sum/image"][10:12, ::256].tolist()
    assert get_json(api + "detector/meta")[0] == 404  # a source writes no file
    assert get_json(api + "nexus/meta?path=/nothing")[0] == 404
    assert get_json(api + "nexus/data?path=/series_00001")[0] == 422  # a group
    assert get_json(api + "nexus/data?path=/series_00001/sum/image&selection=x")[0] == 422


def test_a_node_with_errors_stands_out(folder):
    """A worker that skips every 5th message (``on_error: skip``) is drawn red with its count;
    the others are not, and a sink's file that is not HDF5 is not offered for browsing."""
    shutil.copy(NODES / "flownodes.py", folder)
    path = folder / "pipeline.yaml"
    path.write_text(
        """
name: errors
nodes:
  src: {use: flownodes:Counter, params: {n: 200}}
  work: {use: flownodes:Flaky, params: {every: 5}, on_error: skip}
  sink: {use: flownodes:Collect, params: {path: out.jsonl}}
connections:
  - src.out -> work.in
  - work.out -> sink.in
"""
    )

    def script(page: Page, thread: PageThread) -> dict[str, Any]:
        page.wait_for_selector("#graph g.node")
        thread.ready.set()
        thread.run_done.wait(120)
        wait_until(page, "() => window.beampipe.status?.run.state === 'done'")
        wait_until(
            page,
            "() => document.querySelector('#graph g.node[data-node=work]').dataset.errors === '40'",
        )
        return page.evaluate(
            """() => ({
                 red: Array.from(document.querySelectorAll('#graph g.node.has-errors'))
                   .map(g => g.dataset.node),
                 text: document.querySelector('#graph g.node[data-node=work] .errors').textContent,
                 files: Array.from(document.querySelectorAll('#file-list button'))
                   .map(b => b.disabled),
               })"""
        )

    result, shown, viewer, _ = run_watched(path, script)
    assert viewer is not None
    viewer.stop()
    assert result.exit_code == 0, result.errors
    assert result.metrics["work"].skipped == 40
    assert shown == {"red": ["work"], "text": "errors 40 · restarts 0", "files": [True]}


# -- a slow browser does not slow the pipeline -----------------------------------------------

SLOW = {"shape": "[512, 1024]", "rate": 50, "frames": 150}


def test_a_slow_browser_does_not_reduce_the_pipelines_throughput(folder):
    """Messages, not time: with a fixed-rate source and a fixed number of frames, the run watched
    by a page that reads its websocket slowly processes exactly the messages of the run without
    viewer, every one reaching the sink, while the page was shown only a few of them."""
    need_chromium()
    path = detector_pipeline(folder, **SLOW)
    plain, _, _, _ = run_watched(path, None)
    assert plain.exit_code == 0, plain.errors

    def script(page: Page, thread: PageThread) -> dict[str, int]:
        select_node(page, "detector")
        thread.ready.set()
        thread.run_done.wait(120)
        return page.evaluate(
            "() => ({handled: window.__handled, plots: window.beampipe.plotsReceived})"
        )

    watched, page, viewer, _ = run_watched(path, script, init_script=THROTTLE)
    assert viewer is not None
    status = viewer.status()
    viewer.stop()
    assert watched.exit_code == 0, watched.errors

    def counts(result: Any) -> dict[str, tuple[int, int]]:
        return {n: (m.messages_in, m.messages_out) for n, m in result.metrics.items()}

    assert counts(watched) == counts(plain)
    frames = SLOW["frames"]
    assert counts(watched)["detector"] == (0, frames) and counts(watched)["sum"][0] == frames
    with h5py.File(folder / "out" / "sum.nxs", "r") as f:
        assert int(f["series_00001"]["sum"]["count"][()]) == frames
    # The viewer was behind: the tap dropped frames (conflation), and the page, which takes a
    # second per message, was sent updates only when it had acknowledged the last one.
    tap = status["viewer"]["ports"]["detector.out"]
    print(
        f"wall time {plain.wall_time:.2f} s without viewer, {watched.wall_time:.2f} s watched; "
        f"viewer: {tap}, {status['viewer']['updates_sent']} updates sent, "
        f"{status['viewer']['updates_held_back']} held back, page handled {page['handled']}"
    )
    assert 0 < tap["messages"] < frames
    assert status["viewer"]["updates_held_back"] > 0
    assert page["handled"] < tap["messages"]


# -- who may connect: Host and Origin (issue 16, S4) ----------------------------------------------


@pytest.fixture
def serving(tmp_path):
    """A viewer serving with one configured host, ``beamline.example.org``; no run (only who
    may connect is looked at)."""
    viewer = Viewer(
        load_pipeline(detector_pipeline(tmp_path, frames=1)),
        extra_hosts=["beamline.example.org"],
    )
    viewer.start(None)
    yield viewer
    viewer.stop()


def first_message(url: str, origin: str | None) -> dict[str, Any]:
    """The first message of the viewer's websocket, opened by a page of ``origin`` (None: by a
    client that is not a browser)."""
    ws_url = url.replace("http", "ws", 1) + "ws"
    with connect(ws_url, origin=origin, proxy=None, open_timeout=60) as ws:
        return json.loads(ws.recv(timeout=60))


def test_the_websocket_is_refused_to_pages_of_other_sites(serving):
    url = serving.url
    assert url.startswith("http://127.0.0.1:")
    own = url.rstrip("/")
    assert first_message(url, own)["type"] == "hello"
    assert first_message(url, None)["type"] == "hello"
    assert first_message(url, "https://beamline.example.org")["type"] == "hello"
    others = ["http://evil.example", "http://127.0.0.1:1", "null", "file://", f"ftp://{own[7:]}"]
    for origin in others:
        with pytest.raises(InvalidStatus) as refused:
            first_message(url, origin)
        assert refused.value.response.status_code == 403, origin
    assert serving.status()["viewer"]["refused"] == {"host": 0, "origin": len(others)}


def test_requests_for_another_host_name_are_refused(serving):
    port = serving.url.rsplit(":", 1)[1].strip("/")
    status = serving.url + "api/status"
    for host in ("evil.example", "127.0.0.1.evil.example", "example.org"):
        reply = httpx.get(status, headers={"Host": f"{host}:{port}"}, timeout=30)
        assert (reply.status_code, reply.text) == (400, "Invalid host header"), host
    upgrade = {
        "Host": f"evil.example:{port}",
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(),
    }
    assert httpx.get(serving.url + "ws", headers=upgrade, timeout=30).status_code == 400
    for host in ("localhost", "127.0.0.1", "[::1]", "beamline.example.org"):
        reply = httpx.get(status, headers={"Host": f"{host}:{port}"}, timeout=30)
        assert reply.status_code == 200, host
    assert serving.status()["viewer"]["refused"] == {"host": 4, "origin": 0}


def test_a_page_of_another_site_in_the_browser_cannot_read_the_live_data(serving, tmp_path):
    need_chromium()
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<html><body>another site</body></html>")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(site), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    read = """url => new Promise(done => {
        const ws = new WebSocket(url);
        ws.onmessage = (e) => { done("read " + JSON.parse(e.data).type); ws.close(); };
        ws.onclose = (e) => done("closed " + e.code);
    })"""
    ws_url = serving.url.replace("http", "ws", 1) + "ws"

    def script(page: Page, thread: PageThread) -> list[str]:
        seen = [page.evaluate(read, ws_url)]  # from the other site's page
        page.goto(serving.url)
        return [*seen, page.evaluate(read, ws_url)]  # from the viewer's own page

    page = PageThread(f"http://127.0.0.1:{other.server_address[1]}/", script)
    page.start()  # in a thread: the p65 fixture may hold this thread's Playwright
    try:
        assert page.result() == ["closed 1006", "read hello"]  # refused: no message read
    finally:
        other.shutdown()
        other.server_close()
    assert serving.status()["viewer"]["refused"]["origin"] == 1


def test_the_host_names_answered_beyond_loopback_and_configured(tmp_path):
    assert allowed_hosts("127.0.0.1") == allowed_hosts("localhost") == list(LOCAL_NAMES)
    own = {socket.gethostname().lower(), socket.getfqdn().lower()}
    assert set(allowed_hosts("0.0.0.0")) >= {*LOCAL_NAMES, *own}
    assert set(allowed_hosts("::")) >= {*LOCAL_NAMES, *own}
    assert set(allowed_hosts("10.1.2.3")) >= {*own, "10.1.2.3"}
    extra = allowed_hosts("::1", ["Beamline.Example.org", "fe80::1", "*.example.net"])
    assert extra == [*LOCAL_NAMES, "beamline.example.org", "[fe80::1]", "*.example.net"]
    for bad in ("host:80", "http://host", "a*b", "*"):
        with pytest.raises(ValueError, match=r"host name|wildcard"):
            allowed_hosts("127.0.0.1", [bad])
    # bound to every interface, the viewer answers the URL it prints (this machine's name)
    viewer = Viewer(load_pipeline(detector_pipeline(tmp_path, frames=1)), host="0.0.0.0")
    viewer.start(None)
    try:
        assert viewer.url.startswith(f"http://{socket.gethostname()}:")
        port = viewer.url.rsplit(":", 1)[1].strip("/")
        local = httpx.get(f"http://127.0.0.1:{port}/api/pipeline", timeout=30)
        assert local.status_code == 200
        named = httpx.get(local.url, headers={"Host": f"{socket.gethostname()}:{port}"})
        assert named.status_code == 200
        assert first_message(viewer.url.replace(socket.gethostname(), "127.0.0.1"), None)
    finally:
        viewer.stop()


def test_a_preview_that_raises_is_counted_and_the_live_view_goes_on(tmp_path, capsys):
    """A bug in one port's preview is counted, named (node, port, stream, id) and shown in the
    status; the viewer's thread goes on folding the other ports' messages, and the run is not
    affected."""
    pipeline = load_pipeline(detector_pipeline(tmp_path, frames=60, rate=20, shape="[64, 64]"))
    viewer = Viewer(pipeline)
    broken = viewer.previews.previews[("sum", "out")]

    def add(item):
        raise ValueError("no preview for you")

    broken.add = add
    launcher = Launcher(pipeline, viewer.observer(Recorder()))
    viewer.start(launcher)
    try:
        result = launcher.run()
        status = viewer.status()["viewer"]
    finally:
        viewer.stop()
    assert result.exit_code == 0, result.errors
    previews = status["previews"]
    assert previews["failed"] >= 1 and previews["undecodable"] == 0
    assert previews["failure"].startswith("viewer: no preview of sum.out, stream 'series_00001'")
    assert previews["failure"].endswith("ValueError: no preview for you")
    # the thread lived on: detector frames after the first failure were folded too
    assert status["ports"]["detector.out"]["messages"] > 25
