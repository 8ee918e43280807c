"""The manager, its supervisors and the CLI commands around them, as a user runs them: real
``beampipe manager``, supervisor and node processes, a state home (``BEAMPIPE_HOME``) in a
temporary folder. Every wait polls with a deadline."""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import httpx
import msgpack
import numpy as np
import pytest
import zmq
from conftest import EXAMPLE, beampipe, hdf5_content
from prometheus_client.parser import text_string_to_metric_families

from beampipe.nodes.sim.detector import DetectorSim
from beampipe.transport.security import Credentials

DEADLINE = 60.0

RELAY = '''\
import beampipe


class Relay(beampipe.Worker):
    """Passes every frame on; says in its log which streams it saw."""

    def on_stream_start(self, stream, metadata):
        print(f"relay {self.replica}: stream {stream} started", flush=True)

    def process(self, msg):
        return beampipe.Message(data=dict(msg.data), metadata=dict(msg.metadata))
'''

CAMERA = {"shape": [16, 16], "frames": 1_000_000, "rate": 200, "pool": 3, "seed": 7}
"""A detector that would send frames for over an hour: it runs until it is stopped."""

FRAMES = f"""\
name: frames
nodes:
  cam:
    use: detector_sim
    params: {json.dumps(CAMERA)}
  relay:
    use: relay:Relay
  nexus:
    use: nexus_writer
    params: {{path: out/frames.nxs}}
connections:
  - cam.out -> relay.in
  - relay.out -> nexus.in
"""


def wait_for(check: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """Poll ``check`` until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.1)


def gone(pid: int, marker: Path | None = None) -> bool:
    """Whether process ``pid`` has ended (a zombie has), or no longer has ``marker`` on its
    command line (its pid was reused)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    except OSError:
        return True
    return state == "Z" or (marker is not None and str(marker) not in cmdline)


class Home:
    """A state home in a temporary folder, and the ``beampipe`` command run with it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def run(self, *args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
        return beampipe(*args, cwd=cwd, env={"BEAMPIPE_HOME": str(self.path)}, timeout=timeout)

    def status(self, pipeline_id: str) -> dict[str, Any]:
        """The pipeline's status from the manager's API, with the token (as `beampipe status
        --json` prints it, without starting a process per look)."""
        reply = httpx.get(
            f"{self.manager_info()['url']}/pipelines/{pipeline_id}",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        return reply.json()

    def finished(self, pipeline_id: str) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            status = self.status(pipeline_id)
            return status if status["state"] in ("done", "failed", "stopped", "lost") else None

        return wait_for(final, f"pipeline {pipeline_id} finishes")

    def manager_info(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.path / "manager.json").read_text())
        except FileNotFoundError:
            return None

    @property
    def token(self) -> str:
        return (self.path / "token").read_text().strip()

    def cleanup(self) -> None:
        """Stop what a test left running: supervisors (drain, then at once), the manager; any
        of them still running after :data:`DEADLINE` seconds is killed, and the test fails."""
        running = []
        for info in self.path.glob("pipelines/*/supervisor.json"):
            pid = json.loads(info.read_text())["pid"]
            if not (info.parent / "result.json").exists() and not gone(pid, info.parent):
                os.kill(pid, signal.SIGTERM)
                os.kill(pid, signal.SIGTERM)
                running.append(pid)
        manager = self.manager_info()
        if manager is not None and not gone(manager["pid"]):
            os.kill(manager["pid"], signal.SIGTERM)
            running.append(manager["pid"])
        deadline = time.monotonic() + DEADLINE
        while not all(gone(pid) for pid in running) and time.monotonic() < deadline:
            time.sleep(0.1)
        stuck = [pid for pid in running if not gone(pid)]
        for pid in stuck:
            os.kill(pid, signal.SIGKILL)
        assert stuck == [], f"processes {stuck} did not end within {DEADLINE} s: killed"


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    h = Home(tmp_path / "home")
    yield h
    h.cleanup()


class Manager:
    """``beampipe manager ARGS`` started by the test (so that it can be killed and waited for)."""

    def __init__(self, home: Home, *args: str) -> None:
        self.home = home
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "beampipe", "manager", *args],
            env={**os.environ, "BEAMPIPE_HOME": str(home.path)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

        def ready() -> dict[str, Any] | None:
            assert self.proc.poll() is None, self.proc.stderr.read()
            info = home.manager_info()
            return info if info is not None and info["pid"] == self.proc.pid else None

        try:
            self.url = wait_for(ready, "the manager writes manager.json")["url"]
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Terminate the manager; kill it if it has not ended within 30 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
        self.proc.stderr.close()


@pytest.fixture
def manager(home: Home) -> Iterator[Manager]:
    m = Manager(home)
    yield m
    m.stop()


@pytest.fixture
def frames_pipeline(tmp_path: Path) -> Path:
    """The long-running detector -> relay -> NeXus pipeline, next to its ``relay`` module."""
    (tmp_path / "relay.py").write_text(RELAY)
    path = tmp_path / "frames.yaml"
    path.write_text(FRAMES)
    return path


def deploy(home: Home, pipeline: Path, *args: str) -> str:
    done = home.run("deploy", str(pipeline), *args, cwd=pipeline.parent)
    assert done.returncode == 0, done.stderr
    pipeline_id = done.stdout.strip()
    assert f"as {pipeline_id} (backend local)" in done.stderr
    return pipeline_id


def replicas(status: dict[str, Any], node: str) -> list[dict[str, Any]]:
    return [r for r in status["replicas"] if r["node"] == node]


def received(home: Home, pipeline_id: str) -> int:
    """Messages the NeXus writer has received so far."""
    return sum(r["messages_in"] for r in replicas(home.status(pipeline_id), "nexus"))


def check_every_frame_once(home: Home, pipeline_id: str, cwd: Path) -> int:
    """After a drain: the NeXus file holds each frame the camera sent exactly once, with the
    content detector_sim gives it; the number of frames."""
    status = home.status(pipeline_id)
    assert (status["state"], status["exit_code"]) == ("stopped", 130), status
    assert status["errors"] == ["interrupted by beampipe stop: drained, every file closed"]
    sent = status["sent"]["cam"]["out"]
    pool = DetectorSim(DetectorSim.Params(**CAMERA)).pooled_frames()
    with h5py.File(cwd / "out" / "frames.nxs", "r") as f:
        (entry,) = f  # the one stream, ended by the drain
        ids, images = f[entry]["in"]["id"][()], f[entry]["in"]["image"][()]
    assert sent > 0
    assert sorted(ids) == list(range(1, sent + 1))
    for i, image in zip(ids, images, strict=True):
        np.testing.assert_array_equal(image, pool[(i - 1) % len(pool)])
    return sent


def _same(a: Any, b: Any) -> bool:
    """Whether two values are equal as numpy compares them (NaN equals NaN)."""
    try:
        np.testing.assert_array_equal(a, b)
    except AssertionError:
        return False
    return True


def test_the_example_deployed_through_the_cli_writes_what_run_writes(home, tmp_path):
    ran, deployed = tmp_path / "ran", tmp_path / "deployed"
    ran.mkdir()
    deployed.mkdir()
    pipeline = str(EXAMPLE / "pipeline.yaml")
    run = beampipe("run", pipeline, "--set", "scan.pace=max", cwd=ran)
    assert run.returncode == 0, run.stderr

    assert home.manager_info() is None  # deploy starts the manager
    done = home.run("deploy", pipeline, "--set", "scan.pace=max", cwd=deployed)
    assert done.returncode == 0, done.stderr
    pipeline_id = done.stdout.strip()
    assert home.manager_info() is not None
    assert home.path.stat().st_mode & 0o777 == 0o700  # made by deploy: its owner's only

    status = home.finished(pipeline_id)
    assert (status["state"], status["exit_code"], status.get("errors")) == ("done", 0, []), status
    assert status["name"] == "xas-p65" and status["backend"] == "local"
    nodes = ["scan", "mu", "normalize", "nexus"]
    assert [(r["node"], r["state"]) for r in status["replicas"]] == [(n, "done") for n in nodes]
    points = sum(len(np.loadtxt(p)) for p in (EXAMPLE / "data").glob("20K_GOE_Fe_K_240.*.xdi"))
    assert status["sent"]["scan"] == {"out": points}

    expected = hdf5_content(ran / "out" / "xas-p65.nxs")  # without when it was written
    got = hdf5_content(deployed / "out" / "xas-p65.nxs")
    assert sorted(got) == sorted(expected)
    differ = [k for k, v in expected.items() if not _same(got[k], v)]
    assert differ == []

    table = home.run("status", pipeline_id, cwd=deployed)
    assert table.returncode == 0, table.stderr
    assert f"pipeline {pipeline_id} (xas-p65): done, backend local" in table.stdout
    for node in nodes:
        assert any(line.split()[:3] == [node, "0", "done"] for line in table.stdout.splitlines())
    as_json = home.run("status", pipeline_id, "--json", cwd=deployed)
    assert json.loads(as_json.stdout) == status  # finished: nothing changes any more
    listed = home.run("list", cwd=deployed)
    rows = [line.split()[:4] for line in listed.stdout.splitlines()]
    assert [pipeline_id, "xas-p65", "local", "done"] in rows
    logs = home.run("logs", pipeline_id, "normalize", cwd=deployed)
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == Path(status["replicas"][2]["log"]).read_text()


def test_a_manager_killed_and_restarted_finds_the_pipeline_and_stop_drains_it(
    home, manager, frames_pipeline
):
    cwd = frames_pipeline.parent
    pipeline_id = deploy(home, frames_pipeline)
    wait_for(lambda: received(home, pipeline_id) > 0, "frames reach the NeXus writer")
    before = home.status(pipeline_id)
    assert before["state"] == "running" and before["supervisor"]["answering"]

    started = "relay 0: stream series_00001 started\n"
    logs = home.run("logs", pipeline_id, "relay", cwd=cwd)
    assert (logs.returncode, logs.stdout) == (0, started), logs.stderr

    manager.proc.kill()
    manager.proc.wait(30)
    done = home.run("status", pipeline_id, cwd=cwd)
    assert done.returncode == 1
    assert f"error: no manager is running for {home.path}" in " ".join(done.stderr.split())

    restarted = Manager(home)
    try:
        n = received(home, pipeline_id)
        wait_for(lambda: received(home, pipeline_id) > n, "frames still arrive")
        after = home.status(pipeline_id)
        assert after["state"] == "running" and after["supervisor"]["answering"]
        # The same processes: nothing was restarted.
        assert [r["pid"] for r in after["replicas"]] == [r["pid"] for r in before["replicas"]]
        assert all(r["restarts"] == 0 for r in after["replicas"])

        follow = subprocess.Popen(  # ends when the pipeline has stopped
            [sys.executable, "-m", "beampipe", "logs", pipeline_id, "relay", "--follow"],
            env={**os.environ, "BEAMPIPE_HOME": str(home.path)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert select.select([follow.stdout], [], [], DEADLINE)[0], "logs --follow prints"
            assert follow.stdout.readline() == started

            stopped = home.run("stop", pipeline_id, cwd=cwd)
            assert stopped.returncode == 0, stopped.stderr
            assert f"pipeline {pipeline_id}: stopped" in stopped.stderr
            check_every_frame_once(home, pipeline_id, cwd)
            out, err = follow.communicate(timeout=DEADLINE)
            assert (follow.returncode, out) == (0, ""), err
        finally:
            if follow.poll() is None:
                follow.kill()
                follow.communicate()
        rows = [line.split()[:4] for line in home.run("list", cwd=cwd).stdout.splitlines()]
        assert [pipeline_id, "frames", "local", "stopped"] in rows
    finally:
        restarted.stop()


def test_state_changing_requests_without_the_right_token_change_nothing(
    home, manager, frames_pipeline
):
    cwd = frames_pipeline.parent
    pipeline_id = deploy(home, frames_pipeline)
    wait_for(lambda: received(home, pipeline_id) > 0, "frames reach the NeXus writer")
    url = f"{manager.url}/pipelines"
    deployment = {
        "file": "frames.yaml",
        "text": FRAMES,
        "base_dir": str(cwd),
        "workdir": str(cwd),
    }
    requests = [
        ("POST", f"{url}/{pipeline_id}/scale", {"node": "relay", "replicas": 2}),
        ("POST", f"{url}/{pipeline_id}/stop", None),
        ("POST", url, deployment),
    ]
    for method, where, body in requests:
        missing = httpx.request(method, where, json=body)
        assert missing.status_code == 401, missing.text
        assert missing.headers["www-authenticate"] == "Bearer"
        assert "needs the manager's token" in missing.json()["message"]
        wrong = httpx.request(
            method, where, json=body, headers={"Authorization": f"Bearer {home.token}x"}
        )
        assert wrong.status_code == 403, wrong.text
        assert wrong.json()["message"].startswith("wrong token")

    # Nothing changed: one pipeline, still running, one relay replica, frames still arriving.
    assert [p["id"] for p in httpx.get(url).json()] == [pipeline_id]
    n = received(home, pipeline_id)
    wait_for(lambda: received(home, pipeline_id) > n, "frames still arrive")
    status = home.status(pipeline_id)
    assert status["state"] == "running"
    assert [r["replica"] for r in replicas(status, "relay")] == [0]

    # With the token (the CLI reads it): scaled, and after a drain every frame is there once.
    scaled = home.run("scale", pipeline_id, "relay", "2", cwd=cwd)
    assert scaled.returncode == 0, scaled.stderr

    def relays() -> list[tuple[int, str]]:
        return [(r["replica"], r["state"]) for r in replicas(home.status(pipeline_id), "relay")]

    wait_for(lambda: relays() == [(0, "running"), (1, "running")], "the second relay runs")
    n = received(home, pipeline_id)
    wait_for(lambda: received(home, pipeline_id) > n + 20, "frames pass the two relays")
    stopped = home.run("stop", pipeline_id, cwd=cwd)
    assert stopped.returncode == 0, stopped.stderr
    check_every_frame_once(home, pipeline_id, cwd)


def test_deploy_reports_the_files_problems_as_validate_does(home, manager, tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            name: broken
            nodes:
              cam: {use: detector_sim, params: {frames: many}}
              nexus: {use: nexus_writer, params: {path: out/x.nxs}}
            connections:
              - cam.out -> nexus.inn
            """
        )
    )
    validated = home.run("validate", "broken.yaml", cwd=tmp_path)
    deployed = home.run("deploy", "broken.yaml", cwd=tmp_path)
    assert validated.returncode == deployed.returncode == 2
    assert "broken.yaml:3: node 'cam': param 'frames'" in validated.stderr
    assert deployed.stderr == validated.stderr
    assert deployed.stdout == ""
    assert httpx.get(f"{manager.url}/pipelines").json() == []


def test_clear_errors_for_unknown_ids_nodes_and_impossible_scaling(home, manager, frames_pipeline):
    cwd = frames_pipeline.parent
    unknown = home.run("status", "0badc0de", cwd=cwd)
    assert unknown.returncode == 1
    assert "error: no pipeline '0badc0de' (`beampipe list` shows them)" in unknown.stderr
    pipeline_id = deploy(home, frames_pipeline)
    logs = home.run("logs", pipeline_id, "camera", cwd=cwd)
    assert logs.returncode == 1
    assert "no node 'camera' (nodes: cam, relay, nexus)" in logs.stderr
    source = home.run("scale", pipeline_id, "cam", "2", cwd=cwd)
    assert source.returncode == 2
    assert "error: node 'cam' is a source: its replicas are fixed at start" in source.stderr
    stopped = home.run("stop", pipeline_id, cwd=cwd)
    assert stopped.returncode == 0, stopped.stderr
    again = home.run("stop", pipeline_id, cwd=cwd)
    assert again.returncode == 1
    assert f"error: pipeline {pipeline_id} has finished (stopped)" in again.stderr


def test_protect_reads_needs_the_token_for_reading_too(home):
    m = Manager(home, "--protect-reads")
    try:
        assert httpx.get(f"{m.url}/health").status_code == 200
        assert httpx.get(f"{m.url}/pipelines").status_code == 401
        bad = {"Authorization": "Bearer nope"}
        assert httpx.get(f"{m.url}/pipelines", headers=bad).status_code == 403
        good = {"Authorization": f"Bearer {home.token}"}
        assert httpx.get(f"{m.url}/pipelines", headers=good).json() == []
        listed = home.run("list", cwd=home.path)  # the CLI sends the token
        assert listed.returncode == 0, listed.stderr
        assert os.stat(home.path / "token").st_mode & 0o777 == 0o600
        second = home.run("manager", cwd=home.path)
        assert second.returncode == 1
        assert f"a manager already serves {home.path} (pid {m.proc.pid}" in second.stderr
    finally:
        m.stop()
    assert home.manager_info() is None  # removed at exit


def test_the_api_is_documented_with_openapi(home, manager):
    spec = httpx.get(f"{manager.url}/openapi.json").json()
    paths = {
        (method.upper(), path) for path, methods in spec["paths"].items() for method in methods
    }
    assert paths >= {
        ("POST", "/pipelines"),
        ("GET", "/pipelines"),
        ("GET", "/pipelines/{pipeline_id}"),
        ("GET", "/pipelines/{pipeline_id}/logs/{node}"),
        ("POST", "/pipelines/{pipeline_id}/scale"),
        ("POST", "/pipelines/{pipeline_id}/stop"),
    }
    assert spec["components"]["securitySchemes"]["token"]["scheme"] == "bearer"
    assert httpx.get(f"{manager.url}/docs").status_code == 200


def test_a_pipeline_deployed_with_ui_serves_the_viewer_until_it_is_stopped(
    home, manager, frames_pipeline
):
    cwd = frames_pipeline.parent
    deployed = home.run(
        "deploy", str(frames_pipeline), "--ui", "--ui-allowed-host", "Beamline.example.org", cwd=cwd
    )
    assert deployed.returncode == 0, deployed.stderr
    pipeline_id = deployed.stdout.strip()
    status = home.status(pipeline_id)
    url = status["viewer"]
    assert url is not None and url.startswith("http://127.0.0.1:"), status
    assert f"viewer: {url}\n" in deployed.stderr
    assert [p["viewer"] for p in httpx.get(f"{manager.url}/pipelines").json()] == [url]
    rundir = Path(status["dir"])
    supervisor = json.loads((rundir / "supervisor.json").read_text())
    assert supervisor["viewer"] == url
    shown = home.run("status", pipeline_id, cwd=cwd)
    assert f"viewer: {url}\n" in shown.stdout, shown.stderr

    def at_the_writer() -> int:
        nodes = httpx.get(f"{url}api/status", timeout=10).json()["nodes"]
        assert sorted(nodes) == ["cam", "nexus", "relay"]
        return nodes["nexus"]["messages"]

    wait_for(lambda: at_the_writer() > 0, "the viewer counts frames at the NeXus writer")
    for host, answer in (("beamline.example.org", 200), ("evil.example", 400)):
        reply = httpx.get(f"{url}api/pipeline", headers={"Host": host}, timeout=10)
        assert reply.status_code == answer, host
    metrics = httpx.get(f"{url}metrics", timeout=10)
    assert metrics.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    up = {
        s.labels["node"]: s.value
        for s in families["beampipe_replica_up"].samples
        if s.labels["pipeline"] == "frames"
    }
    assert up == {"cam": 1, "relay": 1, "nexus": 1}
    (nexus_in,) = [
        s.value
        for s in families["beampipe_messages_received"].samples
        if s.name == "beampipe_messages_received_total" and s.labels["node"] == "nexus"
    ]
    assert nexus_in > 0

    stopped = home.run("stop", pipeline_id, cwd=cwd)
    assert stopped.returncode == 0, stopped.stderr
    check_every_frame_once(home, pipeline_id, cwd)
    # The supervisor stops its viewer before it writes the result that makes the state final.
    with pytest.raises(httpx.ConnectError, match="refused"):
        httpx.get(f"{url}api/status", timeout=10)
    assert home.status(pipeline_id)["viewer"] is None
    wait_for(lambda: gone(supervisor["pid"], rundir), "the supervisor exits")


def test_deploy_ui_on_a_taken_port_fails_with_the_reason(home, manager, frames_pipeline):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        deployed = home.run(
            "deploy", str(frames_pipeline), "--ui", "--ui-port", port, cwd=frames_pipeline.parent
        )
    assert deployed.returncode == 1
    pipeline_id = deployed.stdout.strip()
    assert f"error: --ui: cannot listen on 127.0.0.1 port {port}: " in deployed.stderr
    status = home.status(pipeline_id)
    assert (status["state"], status["viewer"], status["replicas"]) == ("failed", None, [])


def test_deploy_ui_without_the_viewers_packages_fails_as_run_ui_does(home, frames_pipeline):
    cwd = frames_pipeline.parent
    blocked = cwd / "blocked" / "h5grove"  # shadows the installed package: as if it were missing
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text('raise ImportError("no h5grove here")\n')
    env = {"BEAMPIPE_HOME": str(home.path), "PYTHONPATH": str(blocked.parent)}
    ran = beampipe("run", str(frames_pipeline), "--ui", cwd=cwd, env=env)
    deployed = beampipe("deploy", str(frames_pipeline), "--ui", cwd=cwd, env=env)
    missing = "--ui needs the viewer's packages: pip install 'beampipe[ui]' (no h5grove here)"
    message = f"error: {missing}"
    assert (ran.returncode, ran.stderr.strip()) == (2, message)
    assert (deployed.returncode, deployed.stderr.strip(), deployed.stdout) == (2, message, "")
    assert httpx.get(f"{home.manager_info()['url']}/pipelines").json() == []


# -- who may connect (issue 16, S1 and S4) ------------------------------------------------------


def test_requests_for_another_host_name_are_refused_and_configured_ones_answered(home):
    m = Manager(home, "--allowed-host", "beamline.example.org")
    try:
        port = m.url.rsplit(":", 1)[1]
        token = {"Authorization": f"Bearer {home.token}"}
        rebound = {"Host": f"evil.example:{port}"}  # a site whose DNS name points here
        foreign = httpx.get(f"{m.url}/health", headers=rebound)
        assert (foreign.status_code, foreign.text) == (400, "Invalid host header")
        deploy = httpx.post(f"{m.url}/pipelines", headers={**rebound, **token}, json={})
        assert deploy.status_code == 400  # refused before the token or the body are looked at
        for host in ("localhost", "127.0.0.1", "[::1]", "beamline.example.org"):
            reply = httpx.get(f"{m.url}/pipelines", headers={"Host": f"{host}:{port}"})
            assert (reply.status_code, reply.json()) == (200, [])
        m.proc.terminate()
        _, err = m.proc.communicate(timeout=30)
    finally:
        m.stop()
    refused = f"manager: refused a request for /health with Host 'evil.example:{port}' from 127.0"
    assert refused in err
    assert err.count("manager: refused a request") == 2


def _post(url: str, token: str, total: int, chunked: bool) -> tuple[int, int]:
    """POST /pipelines with a body of ``total`` bytes, declared by Content-Length (none of it
    sent) or streamed in 1 MiB chunks until the manager answers; (HTTP status, bytes sent)."""
    host, port = url.split("//")[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
        sock.sendall(
            f"POST /pipelines HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"{length}\r\n\r\n".encode()
        )
        chunk, sent = b'{"text": "' + b"x" * ((1 << 20) - 10), 0
        while chunked and sent < total and not select.select([sock], [], [], 0)[0]:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
        reply = http.client.HTTPResponse(sock)
        reply.begin()
        reply.read()
        return reply.status, sent


def _peak_rss(pid: int) -> int:
    """The peak resident memory of process ``pid`` so far (bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def test_a_200_mb_body_is_refused_with_413_without_being_read(home, manager):
    total = 200 << 20
    before = _peak_rss(manager.proc.pid)
    assert _post(manager.url, home.token, total, chunked=False) == (413, 0)
    status, sent = _post(manager.url, home.token, total, chunked=True)
    grown = _peak_rss(manager.proc.pid) - before
    assert status == 413
    assert sent < 32 << 20, f"the manager read {sent >> 20} MB before refusing"
    assert grown < 32 << 20, f"the manager's peak memory grew by {grown >> 20} MB"
    assert httpx.get(f"{manager.url}/pipelines").json() == []


SECRETS = ("dir", "endpoint", "log")


def _shown(reply: httpx.Response, rundir: str, endpoint: str) -> set[str]:
    """Which of the run directory, the supervisor's endpoint and the log paths ``reply``
    shows."""
    text = reply.text
    return {k for k, v in zip(SECRETS, (rundir, endpoint, f"{rundir}/"), strict=True) if v in text}


def test_the_run_directory_and_supervisor_endpoint_are_shown_only_with_the_token(
    home, frames_pipeline
):
    cwd = frames_pipeline.parent
    m = Manager(home, "--protect-reads")
    try:
        pipeline_id = deploy(home, frames_pipeline)
        status = home.status(pipeline_id)  # with the token
        rundir, endpoint = status["dir"], status["supervisor"]["endpoint"]
        assert endpoint.startswith("tcp://") and Path(rundir).is_dir()
        assert all(r["log"].startswith(rundir) for r in status["replicas"])
        url = f"{m.url}/pipelines/{pipeline_id}"
        token = {"Authorization": f"Bearer {home.token}"}
        assert _shown(httpx.get(url, headers=token), rundir, endpoint) == set(SECRETS)
        refused = httpx.get(url)
        assert refused.status_code == 401
        assert _shown(refused, rundir, endpoint) == set()
    finally:
        m.stop()
    m = Manager(home)  # reads open: a reader without the token sees the rest
    try:
        url = f"{m.url}/pipelines/{pipeline_id}"
        public = httpx.get(url)
        assert public.status_code == 200
        assert _shown(public, rundir, endpoint) == set()
        assert "dir" not in public.json() and "endpoint" not in public.json()["supervisor"]
        assert public.json()["supervisor"]["answering"]
        assert _shown(httpx.get(url, headers=token), rundir, endpoint) == set(SECRETS)
        shown = home.run("status", pipeline_id, cwd=cwd)  # the CLI sends the token
        assert shown.returncode == 0 and "relay" in shown.stdout, shown.stderr
        stopped = home.run("stop", pipeline_id, cwd=cwd)
        assert stopped.returncode == 0, stopped.stderr
    finally:
        m.stop()


def test_malformed_supervisor_requests_are_refused_and_the_pipeline_completes(
    home, manager, frames_pipeline
):
    """S1: the supervisor's endpoint is shown by ``GET /pipelines/{id}``. A client without the
    manager's token is refused at the handshake and gets no answer; one with it gets an error
    for a ``status`` whose token is a number, for a frame that is no msgpack and for a map with
    a list as a key; the pipeline goes on and, drained, has every frame once; the supervisor's
    logs name and count the refusals."""
    cwd = frames_pipeline.parent
    pipeline_id = deploy(home, frames_pipeline)
    wait_for(lambda: received(home, pipeline_id) > 0, "frames reach the NeXus writer")
    endpoint = home.status(pipeline_id)["supervisor"]["endpoint"]
    ctx = zmq.Context()
    try:
        outsider = ctx.socket(zmq.DEALER)
        outsider.setsockopt(zmq.LINGER, 0)
        outsider.connect(endpoint)
        outsider.send_multipart([b"", msgpack.packb({"t": "status", "token": 12345})])
        outsider.send_multipart([b"", b"{not json"])
        assert not outsider.poll(2000)  # refused: no answer
        insider = ctx.socket(zmq.REQ)
        insider.setsockopt(zmq.LINGER, 0)
        Credentials(home.token).client(insider)
        insider.connect(endpoint)
        for body, status in (
            (msgpack.packb({"t": "status", "token": 12345}), 403),
            (b"{not json", 400),
            (b"\x81\x91\x01\x01", 400),  # {[1]: 1}: an unhashable key
        ):
            insider.send(body)
            assert insider.poll(10000), "the supervisor answers"
            answer = msgpack.unpackb(insider.recv(), raw=False)
            assert (answer["ok"], answer["status"]) == (False, status), answer
    finally:
        ctx.destroy(linger=0)
    n = received(home, pipeline_id)
    wait_for(lambda: received(home, pipeline_id) > n, "frames still arrive")
    stopped = home.run("stop", pipeline_id, cwd=cwd)
    assert stopped.returncode == 0, stopped.stderr
    check_every_frame_once(home, pipeline_id, cwd)
    rundir = Path(home.status(pipeline_id)["dir"])
    log = (rundir / "supervisor.log").read_text()
    assert "the supervisor's command socket: refused a connection" in log
    assert "refused a request (403): missing or wrong token" in log
    assert "malformed or unauthorised requests" in log
    assert "refused a request (400): not a msgpack request" in (rundir / "events.log").read_text()
