"""Nothing goes wrong unnoticed: warnings raised in nodes, inputs they drop, NaN they emit and
the console's numbers, as a user sees them at the end of ``beampipe run``, in the metrics, the
node logs and the NeXus file."""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from io import StringIO
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import EXAMPLE, NODES, Recorder, beampipe, rows, run_pipeline
from dectris_server import DectrisServer, v1_end, v1_header, v1_image
from rich.console import Console

from beampipe.cli.console import ConsoleObserver
from beampipe.config import load_pipeline
from beampipe.launch import Launcher
from beampipe.runtime.notes import NoteLog
from beampipe.viewer.prometheus import RunCollector

NOISY = """\
name: noisy
nodes:
  count: {{use: flownodes:Counter, params: {{n: 20, streams: 2}}}}
  work: {{use: noisy:Noisy, params: {{drop: [5], nan: [7, 8]}}{options}}}
  nexus: {{use: nexus_writer, params: {{path: out/noisy.nxs, xas: null}}}}
connections:
  - count.out -> work.in
  - work.out -> nexus.y
"""


def _write(folder: Path, text: str) -> Path:
    for module in ("flownodes.py", "noisy.py"):
        shutil.copy(NODES / module, folder)
    path = folder / "pipeline.yaml"
    path.write_text(text)
    return path


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_warnings_drops_and_nan_reach_the_summary_logs_and_nexus_file(tmp_path):
    """Per stream of 20: numpy warns on the 10 even ids, the worker logs a warning at id 3,
    drops id 5 and sends 4 NaN at ids 7 and 8."""
    path = _write(tmp_path, NOISY.format(options=""))
    result = beampipe("run", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    err = _flat(result.stderr)
    first = "first in stream 's0' id"
    assert "warning: node 'work': RuntimeWarning: Mean of empty slice" in err
    assert re.search(rf"Mean of empty slice \(numpy/\S+:\d+\) \(20 times, {first} 2\)", err)
    assert re.search(
        r"warning: node 'work': WARNING noisy: detector temperature 2\.5 K above its set point "
        rf"\(noisy\.py:\d+\) \(2 times, {first} 3\)",
        err,
    )
    assert (
        "warning: node 'work': inputs dropped: frame size 1000 does not match the header's "
        f"4148x4362 (id 5) (2 times, {first} 5)" in err
    )
    assert "2 inputs dropped by nodes (work: 2), listed in noisy.dead-letters.jsonl" in err
    assert f"warning: node 'work': NaN or infinite values in 'y' (16 times, {first} 7)" in err
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("finished with warnings (")
    assert "2/2 streams, 40 messages" in _flat(last)

    dropped = rows(tmp_path / "noisy.dead-letters.jsonl")
    assert [(r["node"], r["stream"], r["id"]) for r in dropped] == [
        ("work", "s0", 5),
        ("work", "s1", 5),
    ]
    assert "4148x4362" in dropped[0]["error"]

    logs = re.search(r"node logs: (\S+)", err)[1]
    assert Path(tmp_path / logs).parent == tmp_path / "out" / "logs"
    log = (tmp_path / logs / "work.0.log").read_text()
    assert log.count("Mean of empty slice") == 1  # the first of its kind; the rest counted

    with h5py.File(tmp_path / "out/noisy.nxs", "r") as f:
        for entry in ("s0", "s1"):
            note = f[entry]["warnings"]
            assert note.attrs["NX_class"] == "NXnote"
            lines = note["data"][()].decode().splitlines()
            assert re.fullmatch(
                r"work: RuntimeWarning: Mean of empty slice \(numpy/\S+\) \(10 times\)", lines[0]
            )
            assert "work: NaN or infinite values in 'y' (8 times)" in lines
            assert any(line.startswith("work: inputs dropped: frame size") for line in lines)


def test_the_launcher_counts_them_in_the_metrics_and_check_finite_turns_nan_counting_off(
    folder, monkeypatch
):
    _write(folder, "")
    result, _ = run_pipeline(folder, NOISY.format(options=""))
    assert result.exit_code == 0, result.errors
    work = result.metrics["work"]
    assert work.dropped == 2 and work.nonfinite == 16
    notes = {text.split(" (")[0]: count for text, count, *_ in work.notes.values()}
    assert notes["RuntimeWarning: Mean of empty slice"] == 20
    assert notes["WARNING noisy: detector temperature 2.5 K above its set point"] == 2
    assert work.warnings >= 22  # numpy may add its own divide warning to each empty mean
    assert result.metrics["count"].nonfinite == 0 and not result.metrics["count"].notes

    path = _write(folder, NOISY.format(options=", check_finite: false"))
    launcher = Launcher(load_pipeline(path), Recorder())
    quiet = launcher.run()
    assert quiet.exit_code == 0, quiet.errors
    assert quiet.metrics["work"].nonfinite == 0 and quiet.metrics["work"].dropped == 2
    assert not [k for k in quiet.metrics["work"].notes if k.startswith("nonfinite")]

    # what beampipe status and the viewer's /metrics show of it
    (status,) = [r for r in launcher.status()["replicas"] if r["node"] == "work"]
    assert status["warnings"] == quiet.metrics["work"].warnings + 2
    assert status["warnings"] >= 24 and status["nonfinite"] == 0
    families = {
        f.name: {s.labels["node"]: s.value for s in f.samples if s.name.endswith("_total")}
        for f in RunCollector("noisy", lambda: launcher.published, dict).collect()
    }
    assert families["beampipe_warnings"]["work"] == quiet.metrics["work"].warnings
    assert families["beampipe_dropped_inputs"] == {"count": 0, "work": 2, "nexus": 0}


def test_a_connector_that_drops_every_frame_warns_and_uses_the_pipelines_dead_letter_file(
    tmp_path,
):
    """Every image of a DECTRIS series arrives damaged (a truncated bslz4 blob): the run
    finishes (the source's policy: skip damaged frames), warns with the count and the first
    error, and the pipeline's dead-letter file names each image."""
    good = np.arange(40 * 60, dtype=np.uint16).reshape(40, 60)
    damaged = []
    for k in range(4):
        image = v1_image(7, k, good, "bs-lz4<")
        image[2] = image[2][:-25]
        info = json.loads(image[1])
        info["size"] = len(image[2])
        image[1] = json.dumps(info).encode()
        damaged.append(image)
    with DectrisServer([v1_header(7), *damaged, v1_end(7)]) as server:
        path = tmp_path / "pipeline.yaml"
        path.write_text(
            textwrap.dedent(
                f"""\
                name: dectris
                nodes:
                  cam:
                    use: dectris_stream
                    params: {{endpoint: "{server.endpoint}", series: 1, timeout: 30}}
                  nexus: {{use: nexus_writer, params: {{path: out/frames.nxs, xas: null}}}}
                connections:
                  - cam.out -> nexus.frames
                """
            )
        )
        result = beampipe("run", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    err = _flat(result.stderr)
    assert "4 inputs dropped by nodes (cam: 4), listed in dectris.dead-letters.jsonl" in err
    assert (
        f"warning: node 'cam': inputs dropped: CorruptMessage: dectris_stream {server.endpoint}: "
        "series 7, image 0: bslz4 data" in err
    )
    assert "(4 times, first in stream 'series-000007' id 1)" in err
    assert result.stderr.strip().splitlines()[-1].startswith("finished with warnings")
    lines = rows(tmp_path / "dectris.dead-letters.jsonl")
    assert [(r["node"], r["stream"], r["id"]) for r in lines] == [
        ("cam", "series-000007", k) for k in (1, 2, 3, 4)
    ]
    assert not list(tmp_path.glob("cam.dead-letters.jsonl"))


# -- the console's numbers -------------------------------------------------------------------


def test_a_streams_rate_waits_for_time_to_divide_by():
    """The first progress report of a stream shows no rate (it was millions of msg/s: its
    count over the microseconds since the line appeared); a finished stream's rate is its
    messages over the time from its first message to its last."""
    pipeline = load_pipeline(EXAMPLE / "pipeline.yaml")
    out = StringIO()
    observer = ConsoleObserver(pipeline, Console(file=out, width=120))
    with observer:
        observer.progress("scan", 0, {"a": 500})
        s = observer.streams["a"]
        assert observer._rate(s) == "-"
        observer.stream_end("scan", 0, {"stream": "a", "messages": 1001, "t_first": 100.0})
        observer.stream_end(
            "nexus", 0, {"stream": "a", "messages": 1001, "t_first": 100.5, "t_last": 110.0}
        )
    assert observer._rate(s) == "100"
    assert re.search(r"✓ a\s+1001 msgs\s+100 msg/s", out.getvalue())


def test_a_failed_run_counts_what_was_sent_and_a_reducers_stream_shows_its_messages(tmp_path):
    path = _write(
        tmp_path,
        textwrap.dedent(
            """\
            name: fails
            nodes:
              count: {use: flownodes:Counter, params: {n: 100000}}
              work: {use: noisy:Raises, params: {at: 100}}
              sink: {use: flownodes:Collect, params: {path: rows.jsonl}}
            connections:
              - count.out -> work.in
              - work.out -> sink.in
            """
        ),
    )
    failed = beampipe("run", str(path), cwd=tmp_path)
    assert failed.returncode == 1
    summary = re.search(r"failed \(exit 1\): 0/1 streams, (\d+) messages", _flat(failed.stderr))
    assert summary and int(summary[1]) >= 100, failed.stderr

    merged = beampipe(
        "run", str(EXAMPLE / "merge.yaml"), "--set", "scan.pace=max", "--no-metrics", cwd=tmp_path
    )
    assert merged.returncode == 0, merged.stderr
    assert re.search(r"✓ merged\s+6 msgs", merged.stderr), merged.stderr  # 5 scans, 1 final


# -- the counts themselves -------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype", ["float16", "float32", "float64", "longdouble", "complex64", "complex128"]
)
def test_nonfinite_values_are_counted_exactly_in_every_float_dtype(dtype):
    notes = NoteLog()
    frame = np.ones((3, 4), dtype)
    assert notes.count_nonfinite({"image": frame}, "s", 1) == 0
    frame[1, 2], frame[0, 0] = np.nan, -np.inf
    assert notes.count_nonfinite({"image": frame}, "s", 2) == 2
    assert notes.count_nonfinite({"image": frame[:, 2:3]}, "s", 3) == 1  # not contiguous
    ((text, count, stream, msg_id),) = notes.snapshot().values()
    assert (text, count, stream, msg_id) == ("NaN or infinite values in 'image'", 3, "s", 2)


def test_large_finite_values_integers_and_scalars():
    notes = NoteLog()
    huge = np.full(10, 3e38, np.float32)  # its sum of squares overflows: then counted exactly
    assert notes.count_nonfinite({"a": huge, "n": np.arange(5), "b": b"x"}, "s", 1) == 0
    assert notes.count_nonfinite({"x": np.array(np.nan), "y": np.array(2.0)}, "s", 2) == 1
    assert notes.count_nonfinite({"z": np.array(complex(1, np.inf))}, "s", 3) == 1
