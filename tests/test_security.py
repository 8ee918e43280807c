"""Who may connect (issue 16): every socket of a run admits only the run's own processes, and
no control handler can be made to end a launcher or supervisor."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import NODES, Recorder

from beampipe.config import PipelineError, load_pipeline, parse_pipeline
from beampipe.launch import Launcher
from beampipe.manager.auth import same_token
from beampipe.transport.security import SECRET_ENV, Credentials, CredentialsError

N = 3000

PIPELINE = f"""
name: guarded
nodes:
  source: {{use: flownodes:Counter, params: {{n: {N}, hold_after: 100, hold_until: released}}}}
  work: {{use: flownodes:Tag}}
  sink: {{use: flownodes:Collect, params: {{path: out.jsonl}}}}
connections:
  - source.out -> work.in
  - work.out -> sink.in
"""

ROGUE = textwrap.dedent(
    """
    import json, sys, time
    import msgpack, zmq
    endpoint, kind = sys.argv[1], sys.argv[2]
    ctx = zmq.Context()
    rogue = ctx.socket(zmq.DEALER)
    rogue.setsockopt(zmq.LINGER, 0)
    if kind == "control":  # a routing id of a real node replica
        rogue.setsockopt(zmq.ROUTING_ID, b"work#0")
    rogue.connect(endpoint)
    if kind == "tap":  # a viewer without the secret
        rogue.close()
        rogue = ctx.socket(zmq.SUB)
        rogue.setsockopt(zmq.SUBSCRIBE, b"out" + bytes(1))
        rogue.connect(endpoint)
    elif kind == "hello":  # a forged HELLO naming the real target replica
        hello = {"target": "work.in", "replica": 0, "credit": 64, "bytes": 1 << 26}
        rogue.send_multipart([b"H", msgpack.packb(hello)])
    else:
        rogue.send(msgpack.packb({"t": "done", "sent": {}, "metrics": {}}))
        rogue.send(b"\\xc1 not msgpack")
    received, deadline = 0, time.monotonic() + 3
    while time.monotonic() < deadline:
        if rogue.poll(100):
            rogue.recv_multipart()
            received += 1
    print(json.dumps({"received": received}))
    """
)


def rogue(endpoint: str, kind: str) -> int:
    """Run the intruder in a process of its own, without the run's secret; what it received."""
    env = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
    out = subprocess.run(
        [sys.executable, "-c", ROGUE, endpoint, kind],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout.splitlines()[-1])["received"]


class Intrusion(Recorder):
    """Once the sink has 50 messages, an intruder process talks to ``target``
    (``"output"``: the source's output port, ``"tap"``: its tap, ``"control"``: the
    launcher's control channel),
    then the source goes on."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self.launcher: Launcher | None = None
        self.received: int | None = None
        self.endpoint: str | None = None
        """The endpoint the intruder connected to."""
        self.secret_in: dict[str, bool] = {}
        """Whether the source process has the secret in its argv, its environment."""

    def progress(self, node: str, replica: int, streams: dict[str, int]) -> None:
        sink = self.launcher.metrics.get(("sink", 0))
        if self.received is not None or sink is None or sink.messages_in < 50:
            return
        proc = Path(f"/proc/{self.launcher.replicas[b'source#0'].process.pid}")
        secret = self.launcher.credentials.secret.encode()
        self.secret_in = {
            "argv": secret in (proc / "cmdline").read_bytes(),
            "environ": secret in (proc / "environ").read_bytes(),
        }
        source = self.launcher.replicas[b"source#0"]
        if self.target == "output":  # what `ss -ltn` or the status shows
            self.endpoint = source.endpoints["out"]
            self.received = rogue(self.endpoint, "hello")
        elif self.target == "tap":
            self.received = rogue(source.tap, "tap")
        else:  # in every node's argv
            self.received = rogue(self.launcher.control_endpoint, "control")
        Path("released").touch()


def run_with(folder: Path, intrusion: Intrusion, text: str = PIPELINE):
    shutil.copy(NODES / "flownodes.py", folder)
    (folder / "pipeline.yaml").write_text(text)
    sys.modules.pop("flownodes", None)
    launcher = Launcher(
        load_pipeline(folder / "pipeline.yaml"), intrusion, transport="tcp", rundir=folder / "run"
    )
    intrusion.launcher = launcher
    return launcher.run()


def written(folder: Path) -> list[int]:
    return [json.loads(line)["id"] for line in (folder / "out.jsonl").read_text().splitlines()]


def test_a_forged_hello_without_the_secret_is_refused_and_the_pipeline_completes(folder):
    """S3: a HELLO naming the real target replica, from a process without the run's secret,
    to the source's loopback output port: refused at the handshake, it receives nothing, no
    replica is taken as restarted, every id is written, and the refusal is counted and
    logged."""
    intrusion = Intrusion("output")
    result = run_with(folder, intrusion)
    assert result.exit_code == 0, result.errors
    assert intrusion.received == 0
    assert intrusion.secret_in == {"argv": False, "environ": True}
    assert written(folder) == list(range(1, N + 1))
    source = result.metrics["source"]
    assert source.refused_connections >= 1
    assert source.resent == 0 and source.rejected_frames == 0
    log = (folder / "run" / "logs" / "source.0.log").read_text()
    assert f"refused a connection to {intrusion.endpoint}" in log, log


def test_a_subscriber_without_the_secret_gets_nothing_from_a_tap(folder):
    intrusion = Intrusion("tap")
    result = run_with(folder, intrusion)
    assert result.exit_code == 0, intrusion.failures
    assert intrusion.received == 0
    assert written(folder) == list(range(1, N + 1))
    assert result.metrics["source"].refused_connections >= 1
    log = (folder / "run" / "logs" / "source.0.log").read_text()
    assert "tap: refused a connection" in log


def test_encrypt_must_be_a_boolean():
    with pytest.raises(PipelineError, match=r"<string>:1: .*encrypt"):
        parse_pipeline("encrypt: 'yes'\n" + PIPELINE)


def test_an_unknown_control_sender_is_refused_and_the_pipeline_completes(folder):
    """S2: a process without the secret, with a real replica's routing id, sends a ``done``
    and a frame that is no msgpack to the launcher's control endpoint (in every node's argv):
    refused at the handshake, counted, reported; the run completes."""
    intrusion = Intrusion("control")
    result = run_with(folder, intrusion)
    assert result.exit_code == 0, result.errors
    assert intrusion.received == 0
    assert written(folder) == list(range(1, N + 1))
    assert result.refused >= 1
    assert not any("ignored" in f for f in intrusion.failures)  # nothing it sent was read
    assert any(
        "the launcher's control channel: refused a connection" in f for f in intrusion.failures
    )


def test_a_curve_encrypted_pipeline_runs_end_to_end(folder):
    """``encrypt: true``: every socket CURVE; all ids arrive; an intruder is refused."""
    intrusion = Intrusion("output")
    result = run_with(folder, intrusion, PIPELINE + "encrypt: true\n")
    assert result.exit_code == 0, result.errors
    assert intrusion.received == 0
    assert written(folder) == list(range(1, N + 1))
    assert result.metrics["source"].refused_connections >= 1


@pytest.mark.parametrize("given", [12345, None, ["t"], {"t": 1}, b"token", 1.5])
def test_same_token_takes_any_input(given):
    """S1's cause: ``{"t": "status", "token": 12345}`` made ``same_token`` raise."""
    assert same_token(given, "token") is False
    assert same_token("token", "token") is True


def test_credentials_from_the_environment():
    made = Credentials.generate(encrypt=True)
    assert Credentials.from_env(made.env()) == made
    with pytest.raises(CredentialsError, match="started by a launcher"):
        Credentials.from_env({})
    with pytest.raises(CredentialsError):
        Credentials.from_env({SECRET_ENV: "curve:short"})
