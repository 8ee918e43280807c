"""The local launcher with user-defined workers: results, fail fast, dead processes, signals."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import EXAMPLE, Recorder, beampipe

NODES = textwrap.dedent(
    '''
    import json
    import os
    import signal
    import time

    import numpy as np

    import beampipe


    class Counter(beampipe.Source):
        """Streams 'a' and 'b' of ``n`` messages each, x = id."""

        class Params(beampipe.Params):
            n: int = 50

        def generate(self):
            for stream in ("a", "b"):
                yield beampipe.StreamStart(stream, {"origin": "test"})
                for i in range(1, self.params.n + 1):
                    yield beampipe.Message(data={"x": float(i)}, stream=stream, id=i)
                yield beampipe.EndOfStream(stream, self.params.n)


    class Square(beampipe.Worker):
        class Params(beampipe.Params):
            fail_at: int = 0
            die_at: int = 0
            start_delay: float = 0.0

        def __init__(self, params, name=""):
            super().__init__(params, name)
            if params.start_delay:
                print("loading the model", flush=True)
                time.sleep(params.start_delay)

        def process(self, msg):
            if msg.id == self.params.fail_at and msg.stream == "b":
                raise ValueError(f"cannot square {float(msg.data['x'])}")
            if msg.id == self.params.die_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return beampipe.Message(data={"y": msg.data["x"] ** 2})


    @beampipe.worker
    def plus_one(msg):
        return beampipe.Message(data={"y": msg.data["y"] + 1})


    class JsonSink(beampipe.Worker):
        """Writes one JSON line per message and per stream event."""

        inputs = None
        outputs = ()

        class Params(beampipe.Params):
            path: str
            fail_on_close: bool = False

        def __init__(self, params, name=""):
            super().__init__(params, name)
            self.file = open(params.path, "w")

        def _write(self, **record):
            self.file.write(json.dumps(record) + "\\n")
            self.file.flush()

        def on_stream_start(self, stream, metadata):
            self._write(event="start", stream=stream, metadata=metadata)

        def process(self, msg):
            self._write(event="msg", port=msg.port, stream=msg.stream, id=msg.id,
                        y=float(msg.data["y"]), hops=[t[0] for t in msg.timestamps])

        def on_stream_end(self, stream):
            self._write(event="end", stream=stream)

        def close(self):
            self.file.close()
            if self.params.fail_on_close:
                raise OSError("disk full while closing")
    '''
)


def _pipeline(tmp_path: Path, square: str = "{}", sink: str = "") -> Path:
    (tmp_path / "usernodes.py").write_text(NODES)
    out = tmp_path / "out.jsonl"
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            name: user-nodes
            nodes:
              count: {{use: "usernodes:Counter", params: {{n: 50}}}}
              square: {{use: "usernodes:Square", params: {square}}}
              plus: {{use: "usernodes:plus_one"}}
              sink: {{use: "usernodes:JsonSink", params: {{path: "{out}"{sink}}}}}
            connections:
              - count.out -> square.in
              - square.out -> plus.in
              - square.out -> sink.squares
              - plus.out -> sink.plus
            """
        )
    )
    return path


def _records(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_user_defined_workers_from_a_module_next_to_the_pipeline(tmp_path, transport):
    result = beampipe("run", str(_pipeline(tmp_path)), "--transport", transport, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    records = _records(tmp_path)
    for stream in ("a", "b"):
        events = [r for r in records if r["stream"] == stream]
        assert events[0] == {"event": "start", "stream": stream, "metadata": {"origin": "test"}}
        assert events[-1] == {"event": "end", "stream": stream}
        for port, offset in (("squares", 0), ("plus", 1)):
            got = [(r["id"], r["y"]) for r in events if r.get("port") == port]
            assert got == [(i, float(i * i + offset)) for i in range(1, 51)]
    hops = next(r["hops"] for r in records if r.get("port") == "plus")
    assert hops == ["count", "square", "plus"]
    assert "2/2 streams, 100 messages" in result.stderr


def test_exception_in_worker_fails_fast_naming_node_stream_and_id(tmp_path):
    result = beampipe("run", str(_pipeline(tmp_path, "{fail_at: 17}")), cwd=tmp_path)
    assert result.returncode == 1
    err = " ".join(result.stderr.split())
    assert "node 'square', stream 'b', message id 17: ValueError: cannot square 17.0" in err
    assert "Traceback" in result.stderr and "usernodes.py" in result.stderr
    assert not [r for r in _records(tmp_path) if r["stream"] == "b" and r.get("id", 0) >= 17]


def test_a_node_process_that_dies_fails_the_run(tmp_path):
    result = beampipe("run", str(_pipeline(tmp_path, "{die_at: 30}")), cwd=tmp_path)
    assert result.returncode == 1
    err = " ".join(result.stderr.split())
    assert "node 'square'" in err and "was killed by SIGKILL before finishing" in err


def _node_processes(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "beampipe.runtime" in cmdline and marker in cmdline:
                pids.append(int(proc.name))
    return pids


def _stop_run(proc: subprocess.Popen, marker: str) -> None:
    """Kill the run ``proc`` and its node processes (``marker`` on their command lines) where
    a test left them running (it failed before they ended)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)
    for pid in _node_processes(marker):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_every_process(tmp_path, signum):
    path = _pipeline(tmp_path)
    text = path.read_text().replace("name: user-nodes", f"name: sig{signum.value}-{os.getpid()}")
    path.write_text(text.replace("params: {n: 50}", "params: {n: 100000000}"))
    marker = f"beampipe-sig{signum.value}-{os.getpid()}-"
    proc = subprocess.Popen(
        [sys.executable, "-m", "beampipe", "run", str(path)],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out = tmp_path / "out.jsonl"
        deadline = time.monotonic() + 60
        while not (out.exists() and out.stat().st_size > 10_000):  # messages reach the sink
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        assert len(_node_processes(marker)) == 4
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=30)
    finally:
        _stop_run(proc, marker)
    assert proc.returncode == 130, stderr
    assert f"interrupted by {signum.name}: drained, every file closed" in " ".join(stderr.split())
    assert _node_processes(marker) == []
    # Drained: every message the source sent reached the sink on both paths, none was cut off.
    records = [r for r in _records(tmp_path) if r["event"] == "msg"]
    by_port = {p: sorted(r["id"] for r in records if r["port"] == p) for p in ("squares", "plus")}
    n = len(by_port["squares"])
    assert [r["event"] for r in _records(tmp_path)][-1] == "end"  # the stream was ended
    assert n > 0 and by_port["squares"] == by_port["plus"] == list(range(1, n + 1))


def test_a_node_that_cannot_start_fails_the_run_naming_it(tmp_path):
    pipeline = str(EXAMPLE / "pipeline.yaml")
    result = beampipe("run", pipeline, "--set", "scan.paths=[missing/*.xdi]", cwd=tmp_path)
    assert result.returncode == 1
    err = " ".join(result.stderr.split())
    assert "error: node 'scan': NoFilesMatched:" in err
    assert "missing/*.xdi' matches no file" in err
    assert not list(tmp_path.glob("out/*.nxs"))  # nothing written but the node logs, kept:
    (logs,) = (tmp_path / "out" / "logs").iterdir()
    assert sorted(p.name for p in logs.iterdir()) == [
        f"{node}.0.log" for node in ("mu", "nexus", "normalize", "scan")
    ]


def test_an_error_when_a_sink_closes_fails_the_run(tmp_path):
    result = beampipe("run", str(_pipeline(tmp_path, sink=", fail_on_close: true")), cwd=tmp_path)
    assert result.returncode == 1
    assert "error: node 'sink': OSError: disk full while closing" in result.stderr


def test_a_node_that_does_not_start_in_time_fails_the_run_naming_it(tmp_path, monkeypatch):
    """A worker whose constructor takes 60 s, with ``start_timeout=2``: the run fails naming
    it and showing the end of its log; no process is left."""
    from beampipe.config import load_pipeline
    from beampipe.launch import Launcher

    path = _pipeline(tmp_path, square="{start_delay: 60}")
    monkeypatch.syspath_prepend(str(tmp_path))
    launcher = Launcher(load_pipeline(path), Recorder(), start_timeout=2)
    result = launcher.run()
    assert result.exit_code == 1
    assert len(result.errors) == 1, result.errors
    error = result.errors[0]
    assert error.startswith("node 'square' (pid ") and "did not start within 2 s" in error
    assert error.rstrip().endswith("loading the model")
    assert all(rep.process.poll() is not None for rep in launcher.replicas.values())


def test_launcher_api_reports_stream_ends_and_messages_sent(tmp_path, monkeypatch):
    from beampipe.config import load_pipeline
    from beampipe.launch import Launcher

    path = _pipeline(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    recorder = Recorder()
    result = Launcher(load_pipeline(path), recorder, window=4).run()
    assert (result.exit_code, result.errors, recorder.failures) == (0, [], [])
    assert result.sent == {
        "count": {"out": 100},
        "square": {"out": 100},
        "plus": {"out": 100},
        "sink": {},
    }
    ends = {
        (node, report["stream"]): report["messages"] for node, _, report in recorder.stream_ends
    }
    assert ends == {
        (node, s): n
        for s in "ab"
        for node, n in [("count", 50), ("square", 50), ("plus", 50), ("sink", 100)]
    }


def test_a_second_signal_stops_at_once_without_draining(tmp_path):
    """The first SIGTERM drains; a second one, while the slow worker still has messages in
    flight, stops every process at once."""
    shutil.copy(Path(__file__).parent / "nodes" / "flownodes.py", tmp_path)
    name = f"second-{os.getpid()}"
    (tmp_path / "pipeline.yaml").write_text(
        textwrap.dedent(
            f"""\
            name: {name}
            nodes:
              src: {{use: flownodes:Counter, params: {{n: 100000000}}}}
              slow: {{use: flownodes:Tag, params: {{delay: 0.05}}}}
              sink: {{use: flownodes:Collect, params: {{path: out.jsonl}}}}
            connections: [src -> slow, slow -> sink.in]
            """
        )
    )
    marker = f"beampipe-{name}-"
    proc = subprocess.Popen(
        [sys.executable, "-m", "beampipe", "run", "pipeline.yaml", "--window", "32"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(_node_processes(marker)) < 3:  # all started
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        # Two signals close together may reach Python's handler as one: repeat the second
        # while every node still runs (the launcher stops them before it gives up its handler).
        while len(_node_processes(marker)) == 3:
            assert time.monotonic() < deadline, "the run did not stop"
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.2)
        _, stderr = proc.communicate(timeout=30)
    finally:
        _stop_run(proc, marker)
    assert proc.returncode == 130, stderr
    assert "interrupted by SIGTERM: stopped before the pipeline drained" in " ".join(stderr.split())
    assert _node_processes(marker) == []
