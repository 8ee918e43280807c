"""Shared fixtures: running the ``beampipe`` command as a user would; and the session-end check
that no test left a process behind.

The leak check: at the start of the session ``BEAMPIPE_TEST_SESSION`` is set to a fresh id in
this process's environment, and ``BEAMPIPE_TEST_STARTED_BY`` to each test's id while it runs, so
every process a test starts inherits them (through ``subprocess``, detached supervisors in a
session of their own, Slurm job steps and Nomad allocations alike). At the end of the session,
after every fixture's teardown, any process other than pytest itself whose ``/proc/PID/environ``
holds this session's id and which is not a zombie is a leak: after up to
:data:`LEAK_GRACE` seconds for processes that are exiting, the ones left are killed (SIGKILL),
listed with their pid, command line and the test that was running when they were started, and
the session fails (exit status 1) even if every test passed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import h5py
import pytest

from beampipe.nodes.pacing import Pacer

REPO = Path(__file__).resolve().parents[1]
CONFIGS = Path(__file__).parent / "configs"
EXAMPLE = REPO / "examples" / "xas-p65"


def beampipe(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300):
    """Run ``python -m beampipe ARGS`` and return the completed process (text output)."""
    return subprocess.run(
        [sys.executable, "-m", "beampipe", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def nxcheck(path: Path, *args: str) -> tuple[int, str]:
    """Run nexusformat's ``nxcheck``; (total number of errors, output without colours)."""
    exe = Path(sys.executable).with_name("nxcheck")
    command = [str(exe)] if exe.exists() else [shutil.which("nxcheck") or "nxcheck"]
    done = subprocess.run([*command, *args, str(path)], capture_output=True, text=True, timeout=300)
    text = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)
    m = re.search(r"Total number of errors: (\d+)", text)
    assert m, f"no error count in nxcheck output:\n{text}"
    return int(m[1]), text


@pytest.fixture
def testnodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``bp_testnodes`` (see tests/configs) importable from a temporary directory."""
    shutil.copy(CONFIGS / "bp_testnodes.py", tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("bp_testnodes", None)
    yield
    sys.modules.pop("bp_testnodes", None)


NODES = Path(__file__).parent / "nodes"


class Recorder:
    """A launcher observer that keeps what it is told."""

    def __init__(self) -> None:
        self.stream_ends: list[tuple[str, int, dict]] = []
        self.failures: list[str] = []

    def progress(self, node: str, replica: int, streams: dict[str, int]) -> None:
        pass

    def stream_end(self, node: str, replica: int, report: dict) -> None:
        self.stream_ends.append((node, replica, report))

    def failure(self, text: str) -> None:
        self.failures.append(text)


def run_pipeline(folder: Path, text: str, **launcher: object):
    """Write ``text`` as ``folder/pipeline.yaml`` next to a copy of ``tests/nodes/flownodes.py``
    and run it with the local launcher; ``(RunResult, Recorder)``. The caller puts ``folder``
    on ``sys.path`` (``monkeypatch.syspath_prepend``) so the pipeline validates in-process."""
    from beampipe.config import load_pipeline
    from beampipe.launch import Launcher

    shutil.copy(NODES / "flownodes.py", folder)
    path = folder / "pipeline.yaml"
    path.write_text(text)
    sys.modules.pop("flownodes", None)
    recorder = Recorder()
    result = Launcher(load_pipeline(path), recorder, **launcher).run()
    return result, recorder


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` as the working directory and on ``sys.path``, for :func:`run_pipeline`."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


class FakeClock:
    """A monotonic clock that moves only when slept on or advanced by the test (``now += s``),
    for the pacing of sources: ``node.pacer = fake.pacer()``; ``sleeps`` lists every sleep."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def pacer(self) -> Pacer:
        """A :class:`~beampipe.nodes.pacing.Pacer` on this clock."""
        return Pacer(self.clock, self.sleep)


def rows(path: Path) -> list[dict]:
    """The objects of a JSON-lines file (what ``flownodes.Collect`` and the dead-letter file
    hold)."""
    return [json.loads(line) for line in path.read_text().splitlines()]


WRITE_TIMES = ("@file_time", "@file_update_time")
"""Root attributes of a NeXus file that say when it was written (NXroot)."""
PROCESSING_TIME = "/XAS_data_reduction/date"
"""The end of the NXxasproc field saying when a spectrum was processed."""


def hdf5_content(path: Path) -> dict[str, object]:
    """Every dataset's value and every attribute of the file, external links followed, by
    path (``path@attr`` for attributes), except the :data:`WRITE_TIMES` and the NXxasproc
    processing dates (:data:`PROCESSING_TIME`): what two runs that wrote the same results have
    in common."""
    out: dict[str, object] = {}

    def walk(group: h5py.Group, prefix: str) -> None:
        for key, value in group.attrs.items():
            out[f"{prefix}@{key}"] = value
        for name in group:
            item = group[name]
            if isinstance(item, h5py.Group):
                walk(item, f"{prefix}/{name}")
            else:
                out[f"{prefix}/{name}"] = item[()]
                for key, value in item.attrs.items():
                    out[f"{prefix}/{name}@{key}"] = value

    with h5py.File(path, "r") as f:
        walk(f, "")
    for key in WRITE_TIMES:
        out.pop(key, None)
    for key in [k for k in out if k.endswith(PROCESSING_TIME)]:
        del out[key]
    return out


# -- no process left behind ------------------------------------------------------------------

SESSION_VAR = "BEAMPIPE_TEST_SESSION"
"""Set to this session's id in the environment that every process a test starts inherits."""
TEST_VAR = "BEAMPIPE_TEST_STARTED_BY"
"""The id of the test running (setup, call or teardown) when a process was started."""
LEAK_GRACE = 3.0
"""Seconds the processes still alive at the session's end have to exit on their own."""
LEAKS = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    os.environ[SESSION_VAR] = uuid.uuid4().hex
    config.stash[LEAKS] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    os.environ[TEST_VAR] = item.nodeid
    return (yield)


def _stat_state(pid: int) -> str | None:
    """The state letter of process ``pid`` (``Z``: a zombie), None if it has gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _left_behind(session_id: str) -> dict[int, str]:
    """``{pid: description}`` of the live processes, other than this one, that inherited this
    session's id: command line and the test that started them."""
    marker = f"{SESSION_VAR}={session_id}".encode()
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if marker not in environ or _stat_state(pid) in (None, "Z"):
            continue
        started_by = next(
            (
                v.split(b"=", 1)[1].decode(errors="replace")
                for v in environ
                if v.startswith(f"{TEST_VAR}=".encode())
            ),
            "before the first test",
        )
        command = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
        found[pid] = f"pid {pid}: {command}  (started during {started_by})"
    return found


@pytest.hookimpl(trylast=True)  # after the session's fixtures are torn down
def pytest_sessionfinish(session: pytest.Session) -> None:
    session_id = os.environ.get(SESSION_VAR)
    if session_id is None or not Path("/proc/self/environ").exists():
        return
    deadline = time.monotonic() + LEAK_GRACE
    while (left := _left_behind(session_id)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not left:
        return
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    session.config.stash[LEAKS] = list(left.values())
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.stats.setdefault("leaked", []).extend(left)


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    leaks = config.stash.get(LEAKS, [])
    if leaks:
        terminalreporter.write_sep("=", "processes the tests left behind (now killed)", red=True)
        for line in leaks:
            terminalreporter.write_line(line)
        terminalreporter.write_line(
            f"The session fails: {len(leaks)} process(es) started by the tests were still alive "
            "after every test and fixture had finished (tests/conftest.py, leak check).",
            red=True,
        )
