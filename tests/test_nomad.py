"""The Nomad backend (beampipe.launch.nomad) against a FAKE of the documented Nomad HTTP API
(tests/fakes/nomad_fake.py), not a Nomad agent: none can be installed on these machines. The
fake runs the jobs' raw_exec tasks as local processes, so the pipelines really run."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import nomad
import numpy as np
import pytest
import zmq
from conftest import EXAMPLE, NODES, PROCESSING_TIME, Recorder, rows, run_pipeline
from nomad.api.exceptions import URLNotFoundNomadException

from beampipe.config import load_pipeline, parse_pipeline
from beampipe.launch import Launcher
from beampipe.launch.command import NodeCommand
from beampipe.launch.nomad import (
    NomadPlacement,
    render_job,
    render_replica_job,
)
from beampipe.transport.security import Credentials, Gate

sys.path.insert(0, str(Path(__file__).parent / "fakes"))
from nomad_fake import NomadFake

P65_NODES = ["scan", "mu", "normalize", "nexus"]
ROOT_TIMES = {"file_time", "file_update_time"}
"""Root attributes of a NeXus file that say when it was written."""


def node_args(control: str, node: str, replica: int | str, incarnation: int) -> list[str]:
    """The arguments of a node process after the interpreter."""
    return NodeCommand(sys.executable, control, node, replica, incarnation).args()


@pytest.fixture
def fake(tmp_path: Path):
    with NomadFake(tmp_path / "nomad-data") as server:
        yield server


def api(fake: NomadFake, **kwargs: Any) -> nomad.Nomad:
    return nomad.Nomad(address=fake.address, **kwargs)


# -- the rendered job -------------------------------------------------------------------------


def test_job_rendered_for_the_p65_example_field_by_field():
    pipeline = load_pipeline(EXAMPLE / "pipeline.yaml")
    env = {"PYTHONPATH": f"{EXAMPLE}:/opt/lib"}
    job = render_job(
        pipeline,
        "beampipe-xas-p65-1",
        "tcp://launcher.example:5555",
        "/opt/venv/bin/python",
        env,
        workdir=Path("/data/run"),
    )
    assert list(job) == ["ID", "Name", "Type", "Datacenters", "Meta", "TaskGroups"]
    assert job["ID"] == "beampipe-xas-p65-1"
    assert job["Name"] == "xas-p65"
    assert job["Type"] == "batch"
    assert job["Datacenters"] == ["dc1"]
    assert job["Meta"] == {"beampipe_pipeline": "xas-p65"}
    assert [g["Name"] for g in job["TaskGroups"]] == P65_NODES
    for group, node in zip(job["TaskGroups"], P65_NODES, strict=True):
        assert group == {
            "Name": node,
            "Count": 1,
            "RestartPolicy": {"Attempts": 0, "Mode": "fail"},
            "ReschedulePolicy": {"Attempts": 0, "Unlimited": False},
            "Meta": {"beampipe_pipeline": "xas-p65", "beampipe_node": node},
            "Tasks": [
                {
                    "Name": node,
                    "Driver": "raw_exec",
                    "Config": {
                        "command": "/opt/venv/bin/python",
                        "args": [
                            "-m",
                            "beampipe.runtime",
                            "--control",
                            "tcp://launcher.example:5555",
                            "--node",
                            node,
                            "--replica",
                            "${NOMAD_ALLOC_INDEX}",
                            "--incarnation",
                            "0",
                        ],
                        "work_dir": "/data/run",
                    },
                    "Env": {"PYTHONPATH": f"{EXAMPLE}:/opt/lib"},
                    "Resources": {"Cores": 1},
                    "KillSignal": "SIGKILL",
                }
            ],
        }
    json.dumps(job)  # the JSON job format: plain JSON


def test_replicas_resources_datacenters_and_namespace_reach_the_job():
    text = re.sub(
        r"^  mu: .*$",
        "  mu:\n    replicas: 3\n    resources: {cpus: 2, memory: 4G, gpus: 1}",
        (EXAMPLE / "pipeline.yaml").read_text(),
        flags=re.MULTILINE,
    )
    pipeline = parse_pipeline(text, base_dir=EXAMPLE)
    assert pipeline.nodes["mu"].replicas == 3
    job = render_job(
        pipeline, "j", "tcp://h:1", "/py", {}, datacenters=["dc2", "dc3"], namespace="beamline"
    )
    groups = {g["Name"]: g for g in job["TaskGroups"]}
    assert job["Datacenters"] == ["dc2", "dc3"] and job["Namespace"] == "beamline"
    assert groups["mu"]["Count"] == 3 and groups["scan"]["Count"] == 1
    assert groups["mu"]["Tasks"][0]["Resources"] == {
        "Cores": 2,
        "MemoryMB": 4096,
        "Devices": [{"Name": "nvidia/gpu", "Count": 1}],
    }
    assert groups["nexus"]["Tasks"][0]["Resources"] == {"Cores": 1}
    single = render_replica_job(pipeline, "j.mu.2.1", "mu", 2, 1, "tcp://h:1", "/py", {})
    (group,) = single["TaskGroups"]
    assert single["Name"] == "xas-p65.mu.2.1" and group["Count"] == 1
    assert group["Tasks"][0]["Config"]["args"] == node_args("tcp://h:1", "mu", 2, 1)
    assert group["Meta"]["beampipe_replica"] == "2"
    assert group["Meta"]["beampipe_incarnation"] == "1"
    assert group["Tasks"][0]["Resources"] == groups["mu"]["Tasks"][0]["Resources"]


# -- the P65 example through the fake API -----------------------------------------------------


class Watcher(Recorder):
    """Records, at the first stream end (every node still running), the allocations as the
    Nomad API lists them and where the placement says each node runs."""

    def __init__(self, fake: NomadFake, placement: NomadPlacement) -> None:
        super().__init__()
        self.fake = fake
        self.placement = placement
        self.allocations: list[dict[str, Any]] | None = None
        self.where: dict[str, str] = {}

    def stream_end(self, node: str, replica: int, report: dict) -> None:
        super().stream_end(node, replica, report)
        if self.allocations is None:
            self.allocations = api(self.fake).job.get_allocations(self.placement.job_id)
            self.where = {n: self.placement.where(n, 0) for n in P65_NODES}


@pytest.fixture(scope="module")
def p65(tmp_path_factory):
    """The P65 example at full speed, run locally and through the fake Nomad API."""
    pipeline = load_pipeline(EXAMPLE / "pipeline.yaml", overrides={"scan.pace": "max"})
    local_dir = tmp_path_factory.mktemp("local")
    nomad_dir = tmp_path_factory.mktemp("nomad")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(local_dir)
        local = Launcher(pipeline, Recorder()).run()
    with NomadFake(nomad_dir / "nomad-data") as fake, pytest.MonkeyPatch.context() as mp:
        mp.chdir(nomad_dir)
        placement = NomadPlacement(fake.address)
        watcher = Watcher(fake, placement)
        rundir = nomad_dir / "run"
        result = Launcher(pipeline, watcher, placement=placement, rundir=rundir).run()
        jobs_after = api(fake).jobs.get_jobs()
        idle = fake.wait_idle(0)
        tasks = fake.tasks()
    return {
        "local": (local, local_dir / "out" / "xas-p65.nxs"),
        "nomad": (result, nomad_dir / "out" / "xas-p65.nxs"),
        "placement": placement,
        "watcher": watcher,
        "jobs_after": jobs_after,
        "idle": idle,
        "tasks": tasks,
        "rundir": rundir,
        "address": fake.address,
    }


def _content(path: Path) -> dict[str, tuple[Any, dict[str, str]]]:
    """Every object of an HDF5 file: path -> (dataset value or None, attributes as text),
    without the root attributes saying when the file was written and the NXxasproc processing
    dates."""
    out = {}
    with h5py.File(path, "r") as f:
        out["/"] = (None, {k: str(v) for k, v in f.attrs.items() if k not in ROOT_TIMES})

        def visit(name: str, obj: Any) -> None:
            if name.endswith(PROCESSING_TIME):
                return
            value = obj[()] if isinstance(obj, h5py.Dataset) else None
            out[name] = (value, {k: str(v) for k, v in obj.attrs.items()})

        f.visititems(visit)
    return out


def test_p65_through_nomad_writes_the_same_nexus_content_as_a_local_run(p65):
    local, local_path = p65["local"]
    result, nomad_path = p65["nomad"]
    assert local.exit_code == 0, local.errors
    assert result.exit_code == 0, result.errors
    expected, got = _content(local_path), _content(nomad_path)
    assert sorted(got) == sorted(expected)
    assert sum(v is not None for v, _ in got.values()) > 300  # datasets
    for name, (value, attrs) in expected.items():
        assert attrs == got[name][1], name
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(got[name][0], value, err_msg=name)
        else:
            assert got[name][0] == value, name
    scan = sorted((EXAMPLE / "data").glob("20K_GOE_Fe_K_240.*.xdi"))[0]
    columns = np.loadtxt(scan)
    with h5py.File(nomad_path, "r") as f:
        (entry,) = (f[n] for n in f if f[n]["entry_identifier"][()].decode() == scan.stem)
        mu = np.log(columns[:, 10] / columns[:, 11])
        np.testing.assert_array_equal(entry["points/mu"][()], mu)


def test_allocations_are_listed_while_running_and_the_job_is_purged_after(p65):
    placement, watcher = p65["placement"], p65["watcher"]
    job_id = placement.job_id
    assert job_id.startswith("beampipe-xas-p65-")
    allocations = watcher.allocations
    assert allocations is not None
    assert sorted(a["Name"] for a in allocations) == sorted(f"xas-p65.{n}[0]" for n in P65_NODES)
    assert {a["ClientStatus"] for a in allocations} == {"running"}
    assert {a["JobID"] for a in allocations} == {job_id}
    by_group = {a["TaskGroup"]: a for a in allocations}
    for node in P65_NODES:
        assert watcher.where[node] == f"alloc {by_group[node]['ID'][:8]} on fake-client-1"
    assert placement.describe() == {"job_id": job_id, "address": p65["address"]}
    # After the run: no job, no process, and each task ran the launcher's command, once.
    assert p65["jobs_after"] == []
    assert p65["idle"]
    tasks = p65["tasks"]
    assert sorted(t.group for t in tasks) == sorted(P65_NODES)
    for t in tasks:
        assert t.returncode == 0
        assert t.job_id == job_id and t.index == 0
        control = t.argv[4]
        assert t.argv == [sys.executable, *node_args(control, t.group, 0, 0)]
        assert control.startswith("tcp://") and "0.0.0.0" not in control
        assert t.env["NOMAD_ALLOC_INDEX"] == "0"
        assert t.env["NOMAD_META_beampipe_node"] == t.group
        assert t.env["PYTHONPATH"].split(":")[0] == str(EXAMPLE)
        assert t.cwd == str(p65["rundir"].parent)


def test_each_node_log_is_fetched_from_nomad_when_its_allocation_ends(p65):
    logs = p65["rundir"] / "logs"
    assert sorted(p.name for p in logs.iterdir()) == sorted(f"{n}.0.log" for n in P65_NODES)
    for node in P65_NODES:
        last = (logs / f"{node}.0.log").read_text().splitlines()[-1]
        assert last.startswith("[nomad] allocation ")
        assert f"(xas-p65.{node}[0]) on fake-client-1: complete;" in last
        assert last.endswith("Terminated (Exit Code: 0)")


# -- failures, restarts, API errors -----------------------------------------------------------

CRASHER = """
import os, sys
import beampipe


class Crash(beampipe.Worker):
    def process(self, msg):
        print("crash: on stdout", flush=True)
        print("crash: on stderr", file=sys.stderr, flush=True)
        os._exit(3)
"""

SMALL = """
name: small
nodes:
  source:
    use: flownodes:Counter
    params: {{n: {n}}}
  work:
    use: {work}
{extra}
  sink:
    use: flownodes:Collect
    params: {{path: out.jsonl}}
connections:
  - source.out -> work.in
  - work.out -> sink.in
"""


def small(n: int = 50, work: str = "flownodes:Tag", extra: str = "") -> str:
    return SMALL.format(n=n, work=work, extra=extra)


def test_a_crashed_node_fails_the_run_with_its_output_fetched_from_nomad(fake, folder):
    (folder / "crasher.py").write_text(CRASHER)
    placement = NomadPlacement(fake.address)
    result, _ = run_pipeline(
        folder, small(work="crasher:Crash"), placement=placement, rundir=folder / "run"
    )
    assert result.exit_code == 1
    (failure,) = result.errors
    assert "node 'work'" in failure and "exited (3) before finishing" in failure
    assert "crash: on stdout\ncrash: on stderr\n[nomad] allocation " in failure
    assert "(small.work[0]) on fake-client-1: failed; task events:" in failure
    assert "Terminated (Exit Code: 3)" in failure
    assert (folder / "run" / "logs" / "work.0.log").read_text().startswith("crash: on stdout\n")
    assert api(fake).jobs.get_jobs() == [] and fake.wait_idle(10)


def test_a_killed_replica_is_restarted_as_a_job_of_its_own(fake, folder, monkeypatch):
    faults = [{"node": "work", "replica": 1, "fault": "kill", "after": 50}]
    monkeypatch.setenv("BEAMPIPE_FAULTS", json.dumps(faults))
    extra = "    replicas: 2\n    restart: on-failure\n    restart_delay: 0.1"
    placement = NomadPlacement(fake.address)
    result, recorder = run_pipeline(
        folder, small(n=600, extra=extra), placement=placement, rundir=folder / "run"
    )
    assert result.exit_code == 0, result.errors
    rows = [json.loads(line) for line in (folder / "out.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == list(range(1, 601))  # each once
    assert result.metrics["work"].restarts == 1
    (failure,) = recorder.failures
    assert "node 'work' replica 1" in failure and "SIGKILL" in failure
    restart_job = f"{placement.job_id}.work.1.1"
    tasks = {(t.job_id, t.group, t.index): t for t in fake.tasks()}
    assert sorted(tasks) == sorted(
        [
            (placement.job_id, "source", 0),
            (placement.job_id, "work", 0),
            (placement.job_id, "work", 1),
            (placement.job_id, "sink", 0),
            (restart_job, "work", 0),
        ]
    )
    assert tasks[placement.job_id, "work", 1].returncode == -9
    restarted = tasks[restart_job, "work", 0]
    assert restarted.argv[1:] == node_args(restarted.argv[4], "work", 1, 1)
    assert restarted.returncode == 0
    assert placement.describe()["jobs"] == [placement.job_id, restart_job]
    last = (folder / "run" / "logs" / "work.1.1.log").read_text().splitlines()[-1]
    assert "(small.work.1.1.work[0]) on fake-client-1: complete;" in last
    assert api(fake).jobs.get_jobs() == [] and fake.wait_idle(10)


def test_a_node_nomad_cannot_place_fails_the_run_with_nomads_reasons(fake, folder):
    extra = "    resources: {gpus: 1}"
    result, _ = run_pipeline(folder, small(extra=extra), placement=NomadPlacement(fake.address))
    assert result.exit_code == 1
    (failure,) = result.errors
    assert "node 'work'" in failure and "exited (1) before finishing" in failure
    assert "Nomad could not place beampipe-small-" in failure
    assert ".work[0]: 1 node(s) filtered out: missing devices" in failure
    assert api(fake).jobs.get_jobs() == [] and fake.wait_idle(10)


def test_no_client_in_the_datacenters_is_named(fake, folder):
    placement = NomadPlacement(fake.address, datacenters=["dc9"])
    result, _ = run_pipeline(folder, small(), placement=placement)
    assert result.exit_code == 1
    assert "no ready client node in datacenters dc9" in result.errors[0]


def test_api_errors_name_endpoint_status_and_nomads_message(tmp_path, folder, monkeypatch):
    """A backend that cannot place the pipeline fails the run with the API's error (the
    launcher turns the NomadError into a failed result)."""
    with NomadFake(tmp_path / "acl", token="s3cret") as fake:
        placement = NomadPlacement(fake.address, token="wrong")
        result, _ = run_pipeline(folder, small(), placement=placement)
        assert result.exit_code == 1
        assert result.errors == [
            f"backend 'nomad': NomadError: Nomad API POST /v1/jobs at {fake.address} failed "
            "with HTTP 403: ACL token not found"
        ]
        monkeypatch.setenv("NOMAD_TOKEN", "s3cret")  # the default token
        result, _ = run_pipeline(folder, small(), placement=NomadPlacement(fake.address))
        assert result.exit_code == 0, result.errors
        address = fake.address
    result, _ = run_pipeline(folder, small(), placement=NomadPlacement(address))
    assert result.exit_code == 1
    assert re.search(r"POST /v1/jobs: cannot reach Nomad at http://127", result.errors[0])


SCALED = """\
name: scaled
nodes:
  src: {use: flownodes:Counter, params: {n: 1500, streams: 3}}
  work: {use: flownodes:Tag, params: {delay: 0.001}}
  sink: {use: flownodes:Collect, params: {path: out.jsonl}}
connections:
  - src -> work
  - work.out -> sink.in
"""


class Scaler(Recorder):
    """Scales ``work`` from 1 to 3 replicas once the sink has 500 messages, and back to 1
    once both new replicas processed messages (decided on the progress reports)."""

    def __init__(self) -> None:
        super().__init__()
        self.launcher: Launcher | None = None
        self.steps: list[int] = []

    def progress(self, node: str, replica: int, streams: dict[str, int]) -> None:
        assert self.launcher is not None
        metrics = self.launcher.metrics
        sink = metrics.get(("sink", 0))
        if not self.steps and sink is not None and sink.messages_in >= 500:
            self.launcher.scale("work", 3)
            self.steps.append(3)
        elif self.steps == [3] and all(
            (m := metrics.get(("work", r))) is not None and m.messages_in > 20 for r in (1, 2)
        ):
            self.launcher.scale("work", 1)
            self.steps.append(1)


def test_replicas_added_while_running_are_placed_as_jobs_of_their_own(fake, folder):
    shutil.copy(NODES / "flownodes.py", folder)
    (folder / "pipeline.yaml").write_text(SCALED)
    observer = Scaler()
    placement = NomadPlacement(fake.address)
    launcher = Launcher(
        load_pipeline(folder / "pipeline.yaml"), observer, window=4, placement=placement
    )
    observer.launcher = launcher
    result = launcher.run()
    assert result.exit_code == 0, result.errors
    assert observer.steps == [3, 1], "the run ended before both scalings happened"
    got = [(r["stream"], r["id"]) for r in rows(folder / "out.jsonl")]
    assert sorted(got) == sorted((f"s{s}", i) for s in range(3) for i in range(1, 1501))
    added = [f"{placement.job_id}.work.{r}.0" for r in (1, 2)]
    assert placement.describe()["jobs"] == [placement.job_id, *added]
    tasks = {t.job_id: t for t in fake.tasks() if t.group == "work"}
    assert sorted(tasks) == sorted([placement.job_id, *added])
    for r, job_id in enumerate(added, start=1):
        assert tasks[job_id].argv[1:] == node_args(tasks[job_id].argv[4], "work", r, 0)
    assert {t.returncode for t in fake.tasks()} == {0}
    assert api(fake).jobs.get_jobs() == [] and fake.wait_idle(10)


# -- the placement on its own: kill, wait, scaling beyond the job -----------------------------


def test_kill_stops_the_allocation_and_replicas_beyond_the_count_get_their_own_job(
    fake, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    pipeline = load_pipeline(EXAMPLE / "pipeline.yaml")
    placement = NomadPlacement(fake.address, job_id="bp-test")
    placement.start(pipeline, tmp_path)
    # A control socket that never sends the setup: the node processes say hello and wait.
    ctx = zmq.Context()
    credentials = Credentials.generate()  # as a launcher's: the nodes must present them
    gate = Gate(ctx, credentials)
    control = ctx.socket(zmq.ROUTER)
    gate.serve(control, "control")
    control.bind("tcp://127.0.0.1:*")
    endpoint = control.getsockopt_string(zmq.LAST_ENDPOINT)
    # The interpreter writes import times to stderr.
    env = {"PYTHONPROFILEIMPORTTIME": "1", **credentials.env()}

    def spawn(replica: int) -> Any:
        command = NodeCommand(sys.executable, endpoint, "mu", replica, 0, env)
        return placement.spawn(command, tmp_path / f"mu.{replica}.log")

    def hello_from(identities: set[bytes]) -> None:
        while identities:
            assert control.poll(60_000), f"no hello from {identities}"
            identities.discard(control.recv_multipart()[0])

    try:
        first, second = spawn(0), spawn(1)
        assert (first.job_id, first.index) == ("bp-test", 0)
        assert (second.job_id, second.index) == ("bp-test.mu.1.0", 0)
        hello_from({b"mu#0", b"mu#1"})
        assert first.poll() is None and first.pid is None
        with pytest.raises(subprocess.TimeoutExpired):
            first.wait(0.05)
        elsewhere = NodeCommand(sys.executable, "tcp://127.0.0.1:1", "mu", 2, 0, env)
        with pytest.raises(ValueError, match="differ from those of job bp-test"):
            placement.spawn(elsewhere, tmp_path / "x.log")
        assert placement.where("mu", 1) == f"alloc {second.alloc_id[:8]} on fake-client-1"
        running = placement.read_log("mu", 0).read_text()
        assert "import time:" in running and "beampipe.runtime" in running
        assert "[nomad]" not in running
        first.kill()
        assert first.wait(10) == -9
        alloc = api(fake).allocation.get_allocation(first.alloc_id)
        assert alloc["DesiredStatus"] == "stop" and alloc["ClientStatus"] == "complete"
        assert alloc["DesiredDescription"] == "alloc was stopped by user"
        ended = (tmp_path / "mu.0.log").read_text()
        assert ended.startswith(running)
        assert ended.splitlines()[-1].startswith(f"[nomad] allocation {first.alloc_id[:8]} ")
        assert "Terminated (Exit Code: 137, Signal: 9)" in ended
        assert second.poll() is None  # the other process is not touched
        second.kill()
        assert second.wait(10) == -9
        again = spawn(1)  # a replica number that comes back gets a job of its own again
        assert again.job_id == "bp-test.mu.1.0-2"
        placement.stop()
    finally:
        gate.close()
        ctx.destroy(linger=0)
    for job_id in ("bp-test", "bp-test.mu.1.0", "bp-test.mu.1.0-2"):
        with pytest.raises(URLNotFoundNomadException):
            api(fake).job.get_job(job_id)
    # The registration started every group of the job; the deregistration ended them.
    assert fake.wait_idle(10)
    started = {(t.job_id, t.group, t.argv[t.argv.index("--replica") + 1]) for t in fake.tasks()}
    assert started == {("bp-test", n, "0") for n in P65_NODES} | {
        ("bp-test.mu.1.0", "mu", "1"),
        ("bp-test.mu.1.0-2", "mu", "1"),
    }
    assert {t.returncode for t in fake.tasks()} == {-9}
    assert all(t.env["PYTHONPROFILEIMPORTTIME"] == "1" for t in fake.tasks())


def test_fake_reruns_finished_batch_allocations_when_the_job_changes_as_nomad_does(fake):
    """Why the placement never changes a registered job (see beampipe.launch.nomad): a
    scale makes a new job version, and terminal allocations of older versions of a batch job
    no longer count, so Nomad runs index 0 again."""
    client = api(fake)
    group = {
        "Name": "g",
        "Count": 1,
        "Tasks": [{"Name": "t", "Driver": "raw_exec", "Config": {"command": "/bin/true"}}],
    }
    job = {"ID": "rerun", "Type": "batch", "Datacenters": ["dc1"], "TaskGroups": [group]}
    client.jobs.register_job({"Job": job})
    assert fake.wait_idle(10)
    (done,) = client.job.get_allocations("rerun")
    assert done["ClientStatus"] == "complete"
    client.job.request("rerun", "scale", json={"Count": 2, "Target": {"Group": "g"}}, method="post")
    names = sorted(a["Name"] for a in client.job.get_allocations("rerun"))
    assert names == ["rerun.g[0]", "rerun.g[0]", "rerun.g[1]"]
    client.job.deregister_job("rerun", purge=True)
    assert fake.wait_idle(10)


def test_deployed_with_backend_nomad_status_shows_allocations_and_stop_purges_the_job(
    fake, tmp_path
):
    """`beampipe deploy --backend nomad` through the manager against the fake Nomad API:
    status names an allocation per replica, `beampipe stop` drains (every frame once) and the
    job is gone."""
    from test_manager import FRAMES, RELAY, Home, check_every_frame_once, received, wait_for

    home = Home(tmp_path / "home")
    (tmp_path / "relay.py").write_text(RELAY)
    pipeline = tmp_path / "frames.yaml"
    pipeline.write_text(FRAMES)
    try:
        args = ["--backend", "nomad", "--backend-option", f"address={fake.address}"]
        done = home.run("deploy", str(pipeline), *args, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        pipeline_id = done.stdout.strip()
        wait_for(lambda: received(home, pipeline_id) > 20, "frames reach the writer", 120)
        status = home.status(pipeline_id)
        assert status["backend"] == "nomad", status
        job_id = status["placement"]["job_id"]
        allocations = {a["ID"][:8] for a in api(fake).job.get_allocations(job_id)}
        for replica in status["replicas"]:
            assert replica["where"].split()[1] in allocations, replica
        stopped = home.run("stop", pipeline_id, cwd=tmp_path)
        assert stopped.returncode == 0, stopped.stderr
        check_every_frame_once(home, pipeline_id, tmp_path)
        jobs = [j["ID"] for j in api(fake).jobs.get_jobs()]
        assert job_id not in jobs
    finally:
        home.cleanup()
