"""EPICS connectors against a real caproto soft IOC (tests/epics_ioc.py) on the loopback interface.

The IOC, and a Channel Access repeater that the tests own, run as separate processes on ports
chosen free for this run (never 5064/5065), so parallel runs do not meet. Values are put and read
back with caproto's synchronous client (``repeater=False``: it must not spawn a repeater).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import caproto.client.common
import numpy as np
import pytest
from caproto import CaprotoTimeoutError
from caproto.sync.client import read, write
from conftest import REPO, rows
from conftest import beampipe as run_cli
from pydantic import ValidationError

import beampipe
from beampipe.nodes.epics.ca import PVConnectionError
from beampipe.nodes.epics.sink import EpicsSink, MissingField, PutError
from beampipe.nodes.epics.source import EpicsSource, pv_key
from beampipe.testing import run

IOC = Path(__file__).with_name("epics_ioc.py")
EXAMPLE = REPO / "examples" / "epics" / "pipeline.yaml"
PREFIX = "BL:"  # the example pipeline's PV names; the ports keep this IOC apart from others
READY_TIMEOUT = 30.0


def _ticks_dropped(items):
    """The source's items without the idle ticks (``None``) it yields while waiting."""
    return (item for item in items if item is not None)


def loopback_ca_env() -> dict[str, str]:
    """Channel Access on loopback only, on free server and repeater ports: the environment of
    a test's IOC, repeater and clients."""
    server_port = _free_port()
    repeater_port = _free_port(avoid=server_port)
    return {
        "EPICS_CA_ADDR_LIST": "127.0.0.1",
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
        "EPICS_CA_SERVER_PORT": str(server_port),
        "EPICS_CA_REPEATER_PORT": str(repeater_port),
        "EPICS_CAS_BEACON_PORT": str(repeater_port),
        "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
        "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1",
    }


def _free_port(avoid: int = 0) -> int:
    """A port that is free for TCP on 127.0.0.1 and for UDP on all interfaces (Channel Access
    servers listen on both; the repeater binds UDP 0.0.0.0)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            if port in (avoid, 5064, 5065):
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("0.0.0.0", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port for the test IOC")


def _udp_port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        try:
            udp.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Ioc:
    """The test IOC process: start, stop, and put and read its PVs (names without prefix)."""

    def __init__(self, prefix: str, env: dict[str, str], log: Path) -> None:
        self.prefix = prefix
        self.env = env
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start the IOC and wait until it answers (polling a PV, at most READY_TIMEOUT s)."""
        with open(self.log, "a") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    str(IOC),
                    "--prefix",
                    self.prefix,
                    "--interfaces",
                    "127.0.0.1",
                    "-q",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            assert self.process.poll() is None, f"the test IOC exited:\n{self.log.read_text()}"
            try:
                self.get("RingCurrent")
                return
            except (CaprotoTimeoutError, TimeoutError, ConnectionError):
                assert time.monotonic() < deadline, f"IOC not ready:\n{self.log.read_text()}"

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)

    def put(self, name: str, value: Any) -> None:
        write(self.prefix + name, value, notify=True, repeater=False, timeout=5)

    def get(self, name: str, data_type: str = "native") -> Any:
        return read(self.prefix + name, data_type=data_type, repeater=False, timeout=5)

    def history(self) -> list[float]:
        return [float(v) for v in self.get("QualityHistory").data]


@pytest.fixture(scope="module")
def ioc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ioc]:
    """The soft IOC and a repeater, with this module's Channel Access environment in
    ``os.environ`` (inherited by every process the tests start)."""
    folder = tmp_path_factory.mktemp("ioc")
    env = loopback_ca_env()
    log = folder / "ioc.log"
    server = Ioc(PREFIX, env, log)
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        with open(log, "w") as out:
            repeater = subprocess.Popen(
                [sys.executable, "-m", "caproto.commandline.repeater", "--quiet"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            server.start()
            yield server
        finally:
            server.stop()
            _stop(repeater)
        # Nobody else started a repeater on our port (our clients must not spawn one).
        repeater_port = int(env["EPICS_CA_REPEATER_PORT"])
        assert not _udp_port_taken(repeater_port), "a Channel Access repeater is left running"


def _source(**params: Any) -> EpicsSource:
    """The source as node ``beam``; a missing update ends its stream after 30 s, not never."""
    return EpicsSource(EpicsSource.Params(**{"duration": 30.0, **params}), "beam")


# -- epics_source ------------------------------------------------------------------------------


def test_each_update_is_one_message_in_order(ioc: Ioc) -> None:
    ioc.put("I0", 0)
    ioc.put("Motor", 0.0)
    ioc.put("RingCurrent", 100.0)
    puts = [("motor", 1.25), ("i0", 100), ("motor", 2.5), ("current", 99.5), ("i0", 250)]
    pvs = {"i0": "BL:I0", "motor": "BL:Motor", "current": "BL:RingCurrent"}
    source = _source(pvs=pvs, stream="scan_001", messages=3 + len(puts))
    try:
        items = _ticks_dropped(source.generate())
        start = next(items)
        assert start == beampipe.StreamStart(
            "scan_001",
            {
                "pvs": pvs,
                "mode": "each",
                "trigger": None,
                "units": {"i0": "counts", "motor": "mm", "current": "mA"},
            },
        )
        first = [next(items) for _ in range(3)]  # the monitors' current values, any order
        assert {k: v.item() for m in first for k, v in m.data.items()} == {
            "i0": 0,
            "motor": 0.0,
            "current": 100.0,
        }
        names = {"i0": "I0", "motor": "Motor", "current": "RingCurrent"}
        for key, value in puts:
            ioc.put(names[key], value)
        rest = list(items)
    finally:
        source.close()

    messages, end = rest[:-1], rest[-1]
    assert end == beampipe.EndOfStream("scan_001", last_id=3 + len(puts))
    assert [m.id for m in first + messages] == list(range(1, 4 + len(puts)))
    assert [(k, v.item()) for m in messages for k, v in m.data.items()] == puts
    for m in messages:
        (key,) = m.data
        assert m.data[key].shape == ()
        assert m.data[key].dtype == (np.int32 if key == "i0" else np.float64)
        assert m.metadata["pv"] == pvs[key]
        assert m.metadata["severity"] == 0 and m.metadata["status"] == 0
        assert m.metadata["units"] == {key: start.metadata["units"][key]}
    # The timestamp is the IOC's, as caproto reads it.
    assert messages[-1].metadata["timestamp"] == ioc.get("I0", "time").metadata.timestamp
    assert messages[2].metadata["timestamp"] == ioc.get("Motor", "time").metadata.timestamp


def test_snapshot_per_trigger_update_with_latest_values(ioc: Ioc) -> None:
    ioc.put("I0", 0)
    ioc.put("Motor", 0.0)
    ioc.put("RingCurrent", 100.0)
    source = _source(
        pvs=["BL:I0", "BL:Motor", "BL:RingCurrent"],
        mode="snapshot",
        trigger="BL:I0",
        initial=False,
        messages=3,
    )
    try:
        items = _ticks_dropped(source.generate())
        start = next(items)
        assert start.metadata["trigger"] == "BL:I0"
        assert start.stream == "beam"  # the node's name
        for name, value in [
            ("RingCurrent", 98.5),
            ("Motor", 1.0),
            ("I0", 10),
            ("Motor", 2.0),
            ("I0", 20),
            ("RingCurrent", 97.0),
            ("I0", 30),
        ]:
            ioc.put(name, value)
        items = list(items)
    finally:
        source.close()

    *messages, end = items
    assert end == beampipe.EndOfStream("beam", 3)
    got = [(m.id, {k: v.item() for k, v in m.data.items()}) for m in messages]
    assert got == [
        (1, {"BL_I0": 10, "BL_Motor": 1.0, "BL_RingCurrent": 98.5}),
        (2, {"BL_I0": 20, "BL_Motor": 2.0, "BL_RingCurrent": 98.5}),
        (3, {"BL_I0": 30, "BL_Motor": 2.0, "BL_RingCurrent": 97.0}),
    ]
    last = messages[-1].metadata
    assert last["pv"] == "BL:I0"
    assert last["timestamp"] == ioc.get("I0", "time").metadata.timestamp
    assert last["pvs"]["BL_RingCurrent"] == {
        "pv": "BL:RingCurrent",
        "timestamp": ioc.get("RingCurrent", "time").metadata.timestamp,
        "severity": 0,
        "status": 0,
    }
    assert last["units"] == {"BL_I0": "counts", "BL_Motor": "mm", "BL_RingCurrent": "mA"}


def test_arrays_strings_and_enums(ioc: Ioc) -> None:
    ioc.put("Spectrum", [0.0])
    ioc.put("Shutter", 0)
    pvs = {"spectrum": "BL:Spectrum", "state": "BL:MachineState", "shutter": "BL:Shutter"}
    source = _source(pvs=pvs, messages=5)
    try:
        items = _ticks_dropped(source.generate())
        start = next(items)
        assert start.metadata["enum_strings"] == {"shutter": ["CLOSED", "OPEN"]}
        initial = {k: v for _ in range(3) for k, v in next(items).data.items()}
        ioc.put("Spectrum", [1.5, 2.5, 3.5])
        ioc.put("Shutter", 1)
        spectrum, shutter, _end = list(items)
    finally:
        source.close()
    assert initial["state"] == b"USER"
    assert initial["shutter"].dtype == np.uint16 and initial["shutter"].item() == 0
    np.testing.assert_array_equal(spectrum.data["spectrum"], [1.5, 2.5, 3.5])
    assert spectrum.data["spectrum"].dtype == np.float64  # native byte order, not the wire's
    assert not spectrum.data["spectrum"].flags.writeable
    assert shutter.data == {"shutter": np.array(1, dtype=np.uint16)}


def test_alarm_severity_and_status_come_with_the_value(ioc: Ioc) -> None:
    ioc.put("RingCurrent", 100.0)
    source = _source(pvs={"current": "BL:RingCurrent"}, initial=True, messages=4)
    try:
        items = _ticks_dropped(source.generate())
        next(items)
        # The monitor's first value, before any put: the subscription is in place, so none of
        # the puts below can race with it (and be taken for the initial value).
        assert next(items).data["current"].item() == 100.0
        for value in (20.0, 2.0, 99.0):  # below the LOW limit, below LOLO, back to normal
            ioc.put("RingCurrent", value)
        *msgs, _end = list(items)
    finally:
        source.close()
    got = [(m.data["current"].item(), m.metadata["severity"], m.metadata["status"]) for m in msgs]
    # EPICS: severity MINOR 1, MAJOR 2; status LOLO 5, LOW 6.
    assert got == [(20.0, 1, 6), (2.0, 2, 5), (99.0, 0, 0)]
    last = ioc.get("RingCurrent", "time").metadata
    assert (int(last.severity), int(last.status)) == (0, 0)


def test_duration_ends_the_stream(ioc: Ioc) -> None:
    source = _source(pvs=["BL:Motor"], initial=False, duration=0.2)
    try:
        items = list(_ticks_dropped(source.generate()))
    finally:
        source.close()
    assert [type(i) for i in items] == [beampipe.StreamStart, beampipe.EndOfStream]
    assert items[-1].last_id == 0


def test_a_pv_that_does_not_connect_is_named_with_the_environment(ioc: Ioc) -> None:
    source = _source(pvs=["BL:I0", "BL:NoSuchPV"], timeout=0.5)
    try:
        with pytest.raises(PVConnectionError) as info:
            next(_ticks_dropped(source.generate()))
    finally:
        source.close()
    text = str(info.value)
    assert info.value.pvs == ["BL:NoSuchPV"]
    assert text.startswith("beam: PV 'BL:NoSuchPV' did not connect within 0.5 s")
    assert "EPICS_CA_ADDR_LIST='127.0.0.1'" in text
    assert f"EPICS_CA_SERVER_PORT='{ioc.env['EPICS_CA_SERVER_PORT']}'" in text


def test_a_missing_pv_stops_the_run_naming_it(ioc: Ioc, tmp_path: Path) -> None:
    (tmp_path / "pipeline.yaml").write_text(
        "name: missing-pv\n"
        "nodes:\n"
        "  beam: {use: epics_source, params: {pvs: [BL:I0, BL:NoSuchPV], timeout: 0.5}}\n"
        "  control: {use: epics_sink, params: {pv: BL:Quality, field: BL_I0}}\n"
        "connections:\n"
        "  - beam.out -> control.in\n"
    )
    done = run_cli("run", "pipeline.yaml", cwd=tmp_path, timeout=120)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "beam: PV 'BL:NoSuchPV' did not connect within 0.5 s" in out
    assert "EPICS_CA_ADDR_LIST" in out


def test_params_are_checked() -> None:
    p = EpicsSource.Params(pvs=["BL:RingCurrent", "SR-DCCT{1}I"])
    assert p.pvs == {"BL_RingCurrent": "BL:RingCurrent", "SR_DCCT_1_I": "SR-DCCT{1}I"}
    assert pv_key("BL:I0") == "BL_I0"
    assert EpicsSource.Params(pvs="BL:I0").pvs == {"BL_I0": "BL:I0"}
    p = EpicsSource.Params(pvs={"i0": "BL:I0"}, mode="snapshot", trigger="BL:I0")
    assert p.trigger_key == "i0"
    for params, problem in [
        ({"pvs": ["A:B", "A_B"]}, "would both have the data key 'A_B'"),
        ({"pvs": ["A", "A"]}, "PV 'A' is listed twice"),
        ({"pvs": {"a": "A", "b": "A"}}, "PV 'A' is listed twice"),
        ({"pvs": []}, "pvs is empty"),
        ({"pvs": ["A"], "mode": "snapshot"}, "needs a trigger"),
        ({"pvs": ["A"], "trigger": "A"}, "only with mode: snapshot"),
        ({"pvs": ["A"], "mode": "snapshot", "trigger": "B"}, "trigger 'B' is not one of the pvs"),
        ({"pvs": ["A"], "messages": 0}, "greater than 0"),
        ({"pvs": ["A"], "speed": 1}, "Extra inputs are not permitted"),
    ]:
        with pytest.raises(ValidationError, match=problem):
            EpicsSource.Params(**params)


# -- epics_sink --------------------------------------------------------------------------------


def _sink(**params: Any) -> EpicsSink:
    return EpicsSink(EpicsSink.Params(**params), "control")


def test_sink_puts_each_value_and_the_ioc_reads_it_back(ioc: Ioc) -> None:
    before = ioc.history()
    values = np.array([0.5, 1.75, 2.0e6, -3.0])
    points = [
        beampipe.Message(data={"quality": value}, stream="s", id=i)
        for i, value in enumerate(values, 1)
    ]
    points.append(beampipe.Message(metadata={"quality": 7}, stream="s", id=5))  # metadata
    run(_sink(pv="BL:Quality", field="quality"), points)
    assert ioc.history()[len(before) :] == [*values.tolist(), 7.0]
    assert ioc.get("Quality").data.tolist() == [7.0]

    spectrum = beampipe.Message(data={"y": np.arange(4, dtype=np.float32)}, stream="s", id=1)
    run(_sink(pv="BL:Spectrum", field="y", wait=False), [spectrum])
    assert ioc.get("Spectrum").data.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_sink_errors_name_pv_stream_and_message(ioc: Ioc) -> None:
    msg = beampipe.Message(data={"quality": 1.0}, metadata={"scan": 3}, stream="scan_7", id=42)
    sink = _sink(pv="BL:MachineState", field="quality")  # read-only over Channel Access
    try:
        with pytest.raises(
            PutError,
            match=r"control: put to PV 'BL:MachineState' failed "
            r"\(stream 'scan_7', message 42\): no write access",
        ):
            sink.process(msg)
    finally:
        sink.close()

    sink = _sink(pv="BL:Gap", field="quality", timeout=0.5)
    try:
        sink.process(msg.replace(data={"quality": np.float64(7.5)}))
        with pytest.raises(
            PutError,
            match=r"control: put to PV 'BL:Gap' failed \(stream "
            r"'scan_7', message 42\): the IOC did not confirm the put within 0.5 s",
        ):
            sink.process(msg.replace(data={"quality": np.float64(12.0)}))  # beyond 0-10 mm
    finally:
        sink.close()
    assert ioc.get("Gap").data.tolist() == [7.5]

    sink = _sink(pv="BL:NoSuchPV", field="quality", timeout=0.5)
    try:
        with pytest.raises(PVConnectionError) as info:
            sink.process(msg)
    finally:
        sink.close()
    assert isinstance(info.value, beampipe.TransientError)  # the node's retries apply
    assert str(info.value).startswith(
        "control: PV 'BL:NoSuchPV' did not connect within 0.5 s (stream 'scan_7', message 42)"
    )

    sink = _sink(pv="BL:Quality", field="nope")
    try:
        with pytest.raises(MissingField, match="no field 'nope'; data: quality; metadata: scan"):
            sink.process(msg)
    finally:
        sink.close()


def test_failed_puts_go_to_the_dead_letter_file_under_skip(ioc: Ioc, tmp_path: Path) -> None:
    ioc.put("I0", 1234)
    (tmp_path / "pipeline.yaml").write_text(
        "name: skip-puts\n"
        "dead_letter: dead.jsonl\n"
        "nodes:\n"
        "  beam: {use: epics_source, params: {pvs: {i0: BL:I0}, messages: 1}}\n"
        "  control:\n"
        "    use: epics_sink\n"
        "    params: {pv: BL:MachineState, field: i0}\n"
        "    on_error: skip\n"
        "connections:\n"
        "  - beam.out -> control.in\n"
    )
    done = run_cli("run", "pipeline.yaml", cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    (letter,) = rows(tmp_path / "dead.jsonl")
    assert (letter["node"], letter["stream"], letter["id"]) == ("control", "beam", 1)
    assert "put to PV 'BL:MachineState' failed (stream 'beam', message 1)" in letter["error"]
    assert ioc.get("MachineState").data == [b"USER"]


# -- the example pipeline ----------------------------------------------------------------------


def _wait_for(condition: Any, what: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"the pipeline exited ({process.returncode}) {what}:\n{output}")
        assert time.monotonic() < deadline, f"timed out {what}"
        time.sleep(0.05)


def _start_example(folder: Path, *options: str, env: dict[str, str] | None = None):
    return subprocess.Popen(
        [sys.executable, "-m", "beampipe", "run", str(EXAMPLE), "--no-metrics", *options],
        cwd=folder,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_example_feeds_the_quality_back_to_the_ioc(ioc: Ioc, tmp_path: Path) -> None:
    ioc.put("RingCurrent", 100.0)
    ioc.put("I0", 500)
    ioc.put("Motor", 0.0)
    before = len(ioc.history())
    run = _start_example(tmp_path, "--set", "beam.messages=4")
    try:
        # The first snapshot (the values now) reaching the IOC shows the whole chain is live.
        _wait_for(lambda: len(ioc.history()) > before, "before the first figure", run)
        points = [(99.0, 0.5, 1200), (98.0, 1.0, 1500), (97.5, 1.5, 900)]
        for current, motor, i0 in points:
            ioc.put("RingCurrent", current)
            ioc.put("Motor", motor)
            ioc.put("I0", i0)
        output, _ = run.communicate(timeout=120)
    finally:
        _stop(run)
    assert run.returncode == 0, output
    expected = np.array([500, 1200, 1500, 900]) / np.array([100.0, 99.0, 98.0, 97.5])
    np.testing.assert_array_equal(ioc.history()[before:], expected)


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_source_without_end_exits_when_its_launcher_is_killed(ioc: Ioc, tmp_path: Path) -> None:
    ioc.put("RingCurrent", 100.0)
    before = len(ioc.history())
    # The killed launcher cannot remove its run directory: keep it in a short-lived one (short,
    # as the ipc:// socket paths in it must fit in 107 characters).
    rundirs = tempfile.TemporaryDirectory(prefix="bp-")
    run = _start_example(tmp_path, env={"TMPDIR": rundirs.name})
    nodes: list[int] = []
    try:
        _wait_for(lambda: len(ioc.history()) > before, "before the first figure", run)
        nodes = _children(run.pid)
        assert len(nodes) == 3  # beam, quality, control
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in nodes):
            assert time.monotonic() < deadline, "node processes outlived their launcher"
            time.sleep(0.05)
    finally:
        _stop(run)
        for pid in nodes:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        rundirs.cleanup()


# -- last, as it restarts the IOC (its PVs start again from their defaults) --------------------


def test_monitor_and_puts_resume_after_an_ioc_restart(
    ioc: Ioc, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING, logger="beampipe.nodes.epics.source")
    # caproto's CAPROTO_CLIENT_MAX_RETRY_SEARCHES_INTERVAL_SEC (read when caproto is imported):
    # search again for the lost PVs at least every 0.5 s instead of 5 s.
    monkeypatch.setattr(caproto.client.common, "MAX_RETRY_SEARCHES_INTERVAL", 0.5)
    ioc.put("Motor", 1.5)
    source = _source(pvs={"motor": "BL:Motor"}, messages=3)
    sink = _sink(pv="BL:Quality", field="q")
    try:
        items = _ticks_dropped(source.generate())
        next(items)
        assert next(items).data["motor"].item() == 1.5
        sink.process(beampipe.Message(data={"q": 1.0}, stream="s", id=1))
        ioc.stop()
        ioc.start()
        # The monitor resumes with the restarted IOC's value (its default, 0.0), then changes.
        assert next(items).data["motor"].item() == 0.0
        ioc.put("Motor", 2.5)
        rest = list(items)
        sink.process(beampipe.Message(data={"q": 2.0}, stream="s", id=2))
    finally:
        source.close()
        sink.close()
    assert [m.data["motor"].item() for m in rest[:-1]] == [2.5]
    assert rest[-1] == beampipe.EndOfStream("beam", 3)
    assert ioc.history() == [2.0]  # the new IOC's history
    assert "beam: PV 'BL:Motor' disconnected" in caplog.text
    assert "beam: PV 'BL:Motor' reconnected" in caplog.text
