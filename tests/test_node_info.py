"""Facts a node reports about itself that are not counts (``Worker.report_info``): carried in
the metrics' ``info``, merged across replicas as the set of values per key, and shown by
``beampipe status``, the end of ``beampipe run``, the viewer's status and ``/metrics``.
(ml.onnx's execution provider, the first user, is tested in tests/test_onnx.py.)"""

from __future__ import annotations

import dataclasses
import importlib
import shutil
import sys
from io import StringIO
from pathlib import Path

import msgpack
import pytest
from conftest import NODES, Recorder
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

import beampipe
from beampipe.cli.console import ConsoleObserver
from beampipe.config import load_pipeline
from beampipe.launch import Launcher
from beampipe.runtime import control
from beampipe.runtime.metrics import NodeMetrics, merge, merge_info
from beampipe.testing import run
from beampipe.viewer.prometheus import RunCollector, registry

DEVICES = """\
import beampipe


class Device(beampipe.Worker):
    \"\"\"Reports its device when made, and its replica (which differs) from a hook.\"\"\"

    def __init__(self, params, name=""):
        super().__init__(params, name)
        self.report_info("device", "cpu")

    def on_stream_start(self, stream, metadata):
        self.report_info("replica", f"r{self.replica}")

    def process(self, msg):
        return msg
"""


def device(folder: Path) -> type[beampipe.Worker]:
    """The class of :data:`DEVICES`, written to ``folder`` (on ``sys.path``) and imported."""
    (folder / "devices.py").write_text(DEVICES)
    sys.modules.pop("devices", None)
    return importlib.import_module("devices").Device


def test_merge_keeps_the_distinct_values_of_each_key_in_the_order_given():
    a = NodeMetrics(messages_in=2, info={"execution_provider": "CUDAExecutionProvider"})
    b = NodeMetrics(messages_in=3, info={"execution_provider": "CPUExecutionProvider", "v": "1"})
    c = NodeMetrics(info={"execution_provider": "CUDAExecutionProvider"})
    total = merge([a, b, c])
    assert total.messages_in == 5
    assert total.info == {
        "execution_provider": "CUDAExecutionProvider, CPUExecutionProvider",
        "v": "1",
    }
    same = merge([NodeMetrics(info={"p": "CPU"}), NodeMetrics(info={"p": "CPU"})])
    assert same.info == {"p": "CPU"}
    assert merge_info([total.info, b.info]) == total.info  # merging merged info changes nothing
    assert merge([]).info == {} and a.info == {"execution_provider": "CUDAExecutionProvider"}


def test_info_round_trips_through_a_progress_report_on_the_control_channel():
    m = NodeMetrics(messages_in=12, info={"execution_provider": "CPUExecutionProvider"})
    report = control.Progress({"scan1": 12}, m.snapshot())
    frame = control.encode(report)
    assert msgpack.unpackb(frame) == {"t": "progress", **dataclasses.asdict(report)}
    decoded = control.decode(frame)
    assert decoded == report
    assert NodeMetrics.from_snapshot(decoded.metrics) == m
    old = NodeMetrics.from_snapshot({"messages_in": 1})  # a report without info
    assert old.info == {}


def test_report_info_takes_text_only_and_the_harness_shows_it(folder: Path):
    results = run(
        device(folder),
        [beampipe.StreamStart("s1", {}), beampipe.Message(data={}, stream="s1", id=1)],
        name="dev",
    )
    assert results.info == {"device": "cpu", "replica": "r0"}
    with pytest.raises(TypeError, match=r"node 'dev': report_info\(\) takes a non-empty str key"):
        results.node.report_info("threads", 4)
    with pytest.raises(TypeError, match="report_info"):
        results.node.report_info("", "x")
    with pytest.raises(ValueError, match="1000 characters at most"):
        results.node.report_info("model", "x" * 1001)
    for i in range(30):
        results.node.report_info(f"k{i}", "v")
    results.node.report_info("k0", "again")  # a key reported again: not a new one
    with pytest.raises(ValueError, match=r"node 'dev': report_info\('k30', ...\): 32 keys at most"):
        results.node.report_info("k30", "v")
    assert len(results.info) == 32 and results.info["k0"] == "again"


PIPELINE = """\
name: info
nodes:
  count: {use: flownodes:Counter, params: {n: 10, streams: 2}}
  dev: {use: devices:Device, replicas: 2}
  sink: {use: flownodes:Collect, params: {path: out.jsonl}}
connections:
  - count.out -> dev.in
  - dev.out -> sink.in
"""


def test_a_run_carries_the_info_of_both_replicas_to_status_summary_and_metrics(folder: Path):
    launcher = Launcher(load_pipeline(_write(folder)), Recorder())
    result = launcher.run()
    assert result.exit_code == 0, result.errors
    info = result.metrics["dev"].info
    assert info["device"] == "cpu"  # the same in both replicas: once
    assert info["replica"] in ("r0, r1", "r1, r0")  # both, in the order the replicas reported
    assert result.metrics["count"].info == {} and result.metrics["sink"].info == {}

    replicas = [r for r in launcher.status()["replicas"] if r["node"] == "dev"]
    assert [r["info"]["device"] for r in replicas] == ["cpu", "cpu"]  # beampipe status --json

    text = generate_latest(registry(RunCollector("info", lambda: launcher.published, dict)))
    assert b'beampipe_node_info{key="device",node="dev",pipeline="info",replica="1",' in text
    families = text_string_to_metric_families(text.decode())
    (family,) = [f for f in families if f.name == "beampipe_node_info"]
    assert family.type == "gauge"  # an info metric, in the classic text format
    samples = {(s.labels["node"], s.labels["replica"], s.labels["key"]): s for s in family.samples}
    assert {k[:2] for k in samples} == {("dev", "0"), ("dev", "1")}
    for replica in ("0", "1"):
        assert samples["dev", replica, "device"].labels["value"] == "cpu"
        assert samples["dev", replica, "device"].value == 1.0
        assert samples["dev", replica, "replica"].labels["value"] == f"r{replica}"

    out = StringIO()
    console = ConsoleObserver(launcher.pipeline, Console(file=out, width=200))
    console.metrics_table(result.metrics, result.wall_time)
    assert f"dev: device cpu; replica {info['replica']}" in out.getvalue().splitlines()


def _write(folder: Path) -> Path:
    shutil.copy(NODES / "flownodes.py", folder)
    (folder / "devices.py").write_text(DEVICES)
    path = folder / "pipeline.yaml"
    path.write_text(PIPELINE)
    return path


def test_the_viewer_shows_the_info_in_the_nodes_tooltip(folder: Path):
    from test_viewer import run_watched, wait_until

    dev = "#graph g.node[data-node=dev] title"

    def script(page, thread) -> str:
        page.wait_for_selector("#graph g.node")
        thread.ready.set()
        thread.run_done.wait(120)
        wait_until(page, "() => window.beampipe.status?.run.state === 'done'")
        wait_until(page, f"() => document.querySelector('{dev}').textContent.includes('r0')")
        return page.evaluate(f"() => document.querySelector('{dev}').textContent")

    result, shown, viewer, _ = run_watched(_write(folder), script)
    assert viewer is not None
    viewer.stop()
    assert result.exit_code == 0, result.errors
    info = result.metrics["dev"].info
    assert shown.splitlines()[1:] == ["device: cpu", f"replica: {info['replica']}"]
    assert shown.startswith("dev: 20 messages")
