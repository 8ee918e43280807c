"""The Slurm backend (``beampipe.launch.slurm``) on a real Slurm cluster.

The cluster is the single-host test cluster of ``scripts/slurm-test-cluster.sh`` (Debian's Slurm
22.05, cluster ``beampipe-test``, two slurmds ``node1`` and ``node2`` of 4 CPUs and 4000 MB each,
partition ``debug``), which ``scripts/test.sh`` (the README's test command, run by CI) starts as
root. This module only looks whether it answers: if it does not (Slurm missing, daemons not
running, another cluster answering) every test here is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import zmq
from conftest import EXAMPLE, NODES, Recorder, hdf5_content, rows

from beampipe.config import load_pipeline
from beampipe.launch import Launcher, RunResult
from beampipe.launch.command import NodeCommand
from beampipe.launch.slurm import FINAL_STATES, SlurmError, SlurmPlacement, squeue_jobs

TEST_CLUSTER = "beampipe-test"
"""The ClusterName in the slurm.conf that scripts/slurm-test-cluster.sh writes."""
DEADLINE = 60.0
"""Seconds any wait on the cluster may take before the test fails."""


def _why_no_test_cluster() -> str | None:
    """None if the test cluster answers with both its nodes up, else why not."""
    if shutil.which("sinfo") is None or shutil.which("scontrol") is None:
        return "Slurm's client commands are not installed"
    try:
        config = subprocess.run(
            ["scontrol", "show", "config"], capture_output=True, text=True, timeout=10
        )
        if config.returncode != 0:
            return "slurmctld does not answer"
        name = re.search(r"^ClusterName\s*=\s*(\S+)", config.stdout, re.MULTILINE)
        if name is None or name[1] != TEST_CLUSTER:
            found = name[1] if name else "unnamed"
            return f"the Slurm cluster that answers is {found!r}, not {TEST_CLUSTER!r}"
        nodes = subprocess.run(
            ["sinfo", "--noheader", "--Node", "--format=%N %t"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except subprocess.TimeoutExpired as exc:
        return f"{' '.join(exc.cmd)} did not answer within 10 s"
    states = dict(line.split() for line in nodes.stdout.splitlines() if line.strip())
    down = [
        f"{node} {states.get(node, 'missing')}"
        for node in ("node1", "node2")
        if node not in states or "*" in states[node] or states[node].startswith(("down", "drain"))
    ]
    return f"node(s) not up: {', '.join(down)}" if down else None


@pytest.fixture(scope="module", autouse=True)
def cluster() -> None:
    """Skips the module's tests unless the test cluster answers (it is never started here)."""
    why = _why_no_test_cluster()
    if why is not None:
        pytest.skip(
            f"no Slurm test cluster running ({why}): bash scripts/test.sh starts one (as root)"
        )


def squeue_steps(job_ids: list[int]) -> dict[str, tuple[str, str]]:
    """``{step name: (JOB.STEP, node list)}`` of the numbered steps of these jobs, as
    ``squeue --steps`` lists them."""
    done = subprocess.run(
        [
            "squeue",
            "--steps",
            "--noheader",
            f"--jobs={','.join(map(str, job_ids))}",
            "--format=%i %j %N",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    steps = {}
    for line in done.stdout.splitlines():
        step, name, nodes = line.split()
        if re.fullmatch(r"\d+\.\d+", step):
            steps[name] = (step, nodes)
    return steps


def live_jobs(name: str) -> list[dict]:
    """Jobs called ``name`` that ``squeue --json`` lists in a state other than ended."""
    data = json.loads(subprocess.check_output(["squeue", "--json"], timeout=30))
    return [j for j in data["jobs"] if j["name"] == name and j["job_state"] not in FINAL_STATES]


# -- the example ------------------------------------------------------------------------------


def test_p65_example_deployed_on_slurm_writes_what_the_local_run_writes(tmp_path, monkeypatch):
    """`beampipe deploy --backend slurm` of the P65 example gives the NeXus content of a local
    run, and its job is gone when it has finished."""
    from test_manager import Home

    pipeline = load_pipeline(EXAMPLE / "pipeline.yaml", overrides={"scan.pace": "max"})
    (tmp_path / "local").mkdir()
    monkeypatch.chdir(tmp_path / "local")
    local = Launcher(pipeline, Recorder()).run()
    assert local.exit_code == 0, local.errors

    (tmp_path / "slurm").mkdir()
    home = Home(tmp_path / "home")
    try:
        args = ["--backend", "slurm", "--set", "scan.pace=max"]
        done = home.run("deploy", str(EXAMPLE / "pipeline.yaml"), *args, cwd=tmp_path / "slurm")
        assert done.returncode == 0, done.stderr
        pipeline_id = done.stdout.strip()
        status = home.finished(pipeline_id)
        assert (status["state"], status["exit_code"]) == ("done", 0), status
        assert status["sent"] == local.sent
    finally:
        home.cleanup()

    expected = hdf5_content(tmp_path / "local" / "out" / "xas-p65.nxs")
    got = hdf5_content(tmp_path / "slurm" / "out" / "xas-p65.nxs")
    assert sorted(got) == sorted(expected)
    assert any(k.endswith("/points/mu") for k in got)  # external links were followed
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)

    rundir = home.path / "pipelines" / pipeline_id
    job = int(re.findall(r"slurm-(\d+)\.out", " ".join(p.name for p in rundir.iterdir()))[0])
    script = (rundir / "allocation.sbatch").read_text()
    assert "hetjob" not in script and "#SBATCH --ntasks=4\n" in script  # one group, 4 replicas
    # stop() waited until the job ended: squeue lists it only as ended, or not at all
    assert all(j["job_state"] in FINAL_STATES for j in squeue_jobs(job))
    assert live_jobs("beampipe-xas-p65") == []
    assert squeue_steps([job]) == {}


# -- steps while running, drain -----------------------------------------------------------------

STEPS_PIPELINE = """
name: slurm-steps
nodes:
  sim:
    use: detector_sim
    params: {shape: [4, 4], pool: 2, rate: 200, frames: 1000000}
  tag: {use: flownodes:Tag, replicas: 2}
  collect:
    use: flownodes:Collect
    params: {path: rows.jsonl}
connections:
  - sim -> tag
  - tag -> collect.in
"""


class Watcher(Recorder):
    """Records progress; ``flowing`` is set once the sink reported received messages."""

    def __init__(self) -> None:
        super().__init__()
        self.flowing = threading.Event()

    def progress(self, node: str, replica: int, streams: dict[str, int]) -> None:
        if node == "collect" and sum(streams.values()) > 0:
            self.flowing.set()


def status_then_drain(
    launcher: Launcher, wait: Callable[[], None]
) -> tuple[RunResult, dict[str, Any]]:
    """Run ``launcher``; once ``wait()`` (in another thread) returns, take its status and drain
    it through :meth:`Launcher.watch`, as a supervisor's command socket does. Returns the
    run's result and that status."""
    commands = launcher.ctx.socket(zmq.PAIR)
    commands.bind(f"inproc://test-slurm-{id(launcher)}")
    client = launcher.ctx.socket(zmq.PAIR)
    client.connect(f"inproc://test-slurm-{id(launcher)}")
    status: dict[str, Any] = {}

    def command() -> None:
        commands.recv()
        status.update(launcher.status())
        launcher.drain("beampipe stop")

    def ask() -> None:
        try:
            wait()
        finally:
            client.send(b"status and drain")

    launcher.watch(commands, command)
    thread = threading.Thread(target=ask)
    thread.start()
    try:
        result = launcher.run()
    finally:
        thread.join()
    return result, status


def test_squeue_and_status_show_a_step_per_replica_and_drain_ends_the_job(folder):
    shutil.copy(NODES / "flownodes.py", folder)
    (folder / "pipeline.yaml").write_text(STEPS_PIPELINE)
    sys.modules.pop("flownodes", None)
    pipeline = load_pipeline(folder / "pipeline.yaml")
    placement = SlurmPlacement(poll_interval=0.2)
    watcher = Watcher()
    launcher = Launcher(pipeline, watcher, placement=placement, rundir=folder / "run")
    seen: dict[str, object] = {}

    def steps_listed() -> None:
        """Once data flows, wait until squeue lists four steps and note them."""
        deadline = time.monotonic() + DEADLINE
        if not watcher.flowing.wait(DEADLINE):
            return
        while time.monotonic() < deadline:
            steps = squeue_steps([placement.job_id])
            if len(steps) == 4:
                seen["steps"] = steps
                return
            time.sleep(0.1)

    result, status = status_then_drain(launcher, steps_listed)
    assert watcher.flowing.is_set(), result.errors
    steps = seen["steps"]
    assert sorted(steps) == ["collect.0", "sim.0", "tag.0", "tag.1"]
    job = placement.job_id
    assert status["backend"] == "slurm"
    assert status["placement"] == {
        "job_id": job,
        "job_name": "beampipe-slurm-steps",
        "nodes": [steps["sim.0"][1]],
    }
    where = {f"{r['node']}.{r['replica']}": r["where"] for r in status["replicas"]}
    assert where == {
        name: f"job {job} step {step.split('.')[1]} on {nodes}"
        for name, (step, nodes) in steps.items()
    }
    # drained: every frame sent arrived exactly once, the sink closed its file
    assert result.exit_code == 130
    assert len(result.errors) == 1 and "drained, every file closed" in result.errors[0]
    sent = result.sent["sim"]["out"]
    assert sent > 0
    assert sorted(r["id"] for r in rows(folder / "rows.jsonl")) == list(range(1, sent + 1))
    assert live_jobs("beampipe-slurm-steps") == []
    assert squeue_steps([job]) == {}


# -- resources: the heterogeneous job ------------------------------------------------------------

HET_PIPELINE = """
name: slurm-het
nodes:
  count:
    use: flownodes:Counter
    params: {n: 200}
    resources: {memory: 300M}
  tag:
    use: flownodes:Tag
    replicas: 2
    resources: {cpus: 2, memory: 1G, time: "10:00"}
  collect:
    use: flownodes:Collect
    params: {path: rows.jsonl}
    resources: {memory: 300M}
connections:
  - count -> tag
  - tag -> collect.in
"""


def sbatch_options(script: str) -> list[dict[str, str]]:
    """The ``#SBATCH --option=value`` lines of each het job component of ``script``."""
    parts: list[dict[str, str]] = [{}]
    for line in script.splitlines():
        if line == "#SBATCH hetjob":
            parts.append({})
        elif line.startswith("#SBATCH "):
            key, _, value = line.removeprefix("#SBATCH ").partition("=")
            parts[-1][key] = value
    return parts


class Snapshot(Recorder):
    """At the first progress report (every step running): the job's components as
    ``squeue --json`` lists them, and where each replica runs."""

    def __init__(self, placement: SlurmPlacement) -> None:
        super().__init__()
        self.placement = placement
        self.jobs: list[dict] = []
        self.where: dict[tuple[str, int], str] = {}

    def progress(self, node: str, replica: int, streams: dict[str, int]) -> None:
        if not self.jobs:
            self.jobs = squeue_jobs(self.placement.job_id)
            for n, r in [("count", 0), ("tag", 0), ("tag", 1), ("collect", 0)]:
                self.where[n, r] = self.placement.where(n, r)


def test_two_resources_make_a_het_job_with_one_component_each(folder):
    shutil.copy(NODES / "flownodes.py", folder)
    (folder / "pipeline.yaml").write_text(HET_PIPELINE)
    sys.modules.pop("flownodes", None)
    pipeline = load_pipeline(folder / "pipeline.yaml")
    placement = SlurmPlacement(partition="debug")
    rundir = folder / "run"

    assert sbatch_options(placement.batch_script(pipeline, rundir)) == [
        {
            "--job-name": "beampipe-slurm-het",
            "--output": f"{rundir}/slurm-%j.out",
            "--ntasks": "2",  # count and collect
            "--cpus-per-task": "1",
            "--mem-per-cpu": "300M",
            "--partition": "debug",
        },
        {
            "--ntasks": "2",  # tag's replicas
            "--cpus-per-task": "2",
            "--mem-per-cpu": "512M",  # 1G per task over 2 CPUs
            "--partition": "debug",
            "--time": "10:00",
        },
    ]

    snapshot = Snapshot(placement)
    result = Launcher(pipeline, snapshot, placement=placement, rundir=rundir).run()
    assert result.exit_code == 0, result.errors
    assert sorted(r["id"] for r in rows(folder / "rows.jsonl")) == list(range(1, 201))

    job = placement.job_id
    components = sorted(snapshot.jobs, key=lambda j: j["het_job_offset"])
    assert [j["het_job_id"] for j in components] == [job, job]
    assert [j["job_state"] for j in components] == ["RUNNING", "RUNNING"]
    assert [j["tasks"] for j in components] == [2, 2]
    assert [j["cpus"] for j in components] == [2, 4]
    assert [j["memory_per_cpu"] for j in components] == [300, 512]
    assert [j["partition"] for j in components] == ["debug", "debug"]
    assert components[1]["time_limit"] == 10  # minutes
    nodes = [j["nodes"] for j in components]
    assert sorted(nodes) == ["node1", "node2"]  # a het job's components never share a node
    assert placement.describe()["nodes"] == nodes
    for (node, _), where in snapshot.where.items():
        group = 1 if node == "tag" else 0
        assert re.fullmatch(rf"job {job}\+{group} step \d+ on {nodes[group]}", where), where
    assert live_jobs("beampipe-slurm-het") == []


# -- steps: scaling past the allocation, kill ----------------------------------------------------


def test_more_steps_than_tasks_overlap_and_kill_ends_each_step(folder):
    (folder / "pipeline.yaml").write_text(
        "name: slurm-kill\nnodes:\n  a: {use: flownodes:Counter}\n"
    )
    shutil.copy(NODES / "flownodes.py", folder)
    sys.modules.pop("flownodes", None)
    pipeline = load_pipeline(folder / "pipeline.yaml")
    placement = SlurmPlacement(poll_interval=0.2)
    placement.start(pipeline, folder)
    try:
        sleeper = folder / "sleeper"  # an "interpreter" that sleeps, whatever its arguments
        sleeper.write_text("#!/bin/sh\nexec sleep 300\n")
        sleeper.chmod(0o755)
        steps = [
            placement.spawn(
                NodeCommand(str(sleeper), "tcp://127.0.0.1:1", "a", r, 0, dict(os.environ)),
                folder / f"a.{r}.log",
            )
            for r in range(3)  # the allocation has one task
        ]
        deadline = time.monotonic() + DEADLINE
        while len(squeue_steps([placement.job_id])) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sorted(squeue_steps([placement.job_id])) == ["a.0", "a.1", "a.2"]
        assert all(step.poll() is None for step in steps)
        listed = squeue_steps([placement.job_id])
        where = [placement.where("a", r) for r in range(3)]
        assert where == [
            f"job {placement.job_id} step {step.split('.')[1]} on {nodes}"
            for step, nodes in (listed[f"a.{r}"] for r in range(3))
        ]
        for step in steps:
            step.kill()
        assert [step.wait(DEADLINE) for step in steps] == [-signal.SIGKILL] * 3
        while squeue_steps([placement.job_id]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert squeue_steps([placement.job_id]) == {}
        # an ended step is still named (e.g. in the launcher's message about the process)
        assert placement.step_of("a", 0, fresh=True) is None
        assert [placement.where("a", r) for r in range(3)] == where
    finally:
        placement.stop()
    assert live_jobs("beampipe-slurm-kill") == []


# -- errors ---------------------------------------------------------------------------------------

ONE_NODE = "name: slurm-errors\nnodes:\n  a: {use: flownodes:Counter, resources: {cpus: 4}}\n"


@pytest.fixture
def one_node(folder):
    shutil.copy(NODES / "flownodes.py", folder)
    (folder / "pipeline.yaml").write_text(ONE_NODE)
    sys.modules.pop("flownodes", None)
    return load_pipeline(folder / "pipeline.yaml")


def test_no_sbatch_on_path_is_a_clear_error(one_node, folder, monkeypatch):
    monkeypatch.setenv("PATH", str(folder))
    with pytest.raises(SlurmError, match=r"sbatch not found on PATH.*Slurm client commands"):
        SlurmPlacement().start(one_node, folder)


def test_a_job_sbatch_rejects_names_the_command_and_its_error(one_node, folder):
    with pytest.raises(SlurmError) as err:
        SlurmPlacement(partition="nosuchpartition").start(one_node, folder)
    text = str(err.value)
    assert f"sbatch --parsable {folder}/allocation.sbatch failed" in text
    assert "Invalid partition name specified" in text


@pytest.fixture
def blocker():
    """A job that takes every CPU of the cluster (running when the test starts)."""
    job = subprocess.check_output(
        [
            *("sbatch", "--parsable", "--job-name=blocker", "--ntasks=2", "--cpus-per-task=4"),
            *("--output=/dev/null", "--wrap=exec sleep 300"),
        ],
        text=True,
        timeout=30,
    ).strip()
    try:
        deadline = time.monotonic() + DEADLINE
        while live_jobs("blocker")[0]["job_state"] != "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.1)
        yield job
    finally:
        subprocess.run(["scancel", job], timeout=30, check=True)


def test_a_job_that_never_starts_is_cancelled_with_its_reason(one_node, folder, blocker):
    placement = SlurmPlacement(start_timeout=10, poll_interval=0.2)
    with pytest.raises(SlurmError) as err:
        placement.start(one_node, folder)
    job = placement.job_id
    assert re.search(
        rf"Slurm job {job} \(beampipe-slurm-errors\) did not start within 10 s and was "
        rf"cancelled: {job}: PENDING \(reason Resources\)",
        str(err.value),
    ), err.value
    assert live_jobs("beampipe-slurm-errors") == []


def test_status_and_stop_are_answered_while_the_allocation_is_pending(one_node, folder, blocker):
    """The launcher answers its watched sockets (a supervisor's status and stop) while the
    allocation waits in the queue; a drain then cancels the allocation."""
    placement = SlurmPlacement(start_timeout=DEADLINE, poll_interval=0.2)
    launcher = Launcher(one_node, Recorder(), placement=placement, rundir=folder / "run")
    seen: dict[str, object] = {}

    def pending() -> None:
        """Wait until squeue lists the allocation as pending and the placement has its id
        (sbatch has returned: under load squeue may list the job before)."""
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            jobs = live_jobs("beampipe-slurm-errors")
            if jobs and jobs[0]["job_state"] == "PENDING" and placement.job_id == jobs[0]["job_id"]:
                seen["pending"] = jobs[0]["job_id"]
                return
            time.sleep(0.1)

    result, status = status_then_drain(launcher, pending)
    job = seen["pending"]
    assert status["state"] == "starting" and status["replicas"] == [], status
    assert status["placement"]["job_id"] == job, status
    assert result.exit_code == 130
    assert result.errors == ["interrupted by beampipe stop before the pipeline started"]
    assert live_jobs("beampipe-slurm-errors") == []


def test_a_control_endpoint_the_compute_nodes_cannot_reach_is_a_clear_error(
    one_node, folder, monkeypatch
):
    monkeypatch.setenv("BEAMPIPE_HOST", "launcher.invalid")  # RFC 2606: never resolves
    placement = SlurmPlacement(poll_interval=0.2)
    placement.start(one_node, folder)
    try:
        with pytest.raises(SlurmError) as err:
            placement.control_endpoint("tcp://0.0.0.0:5555")
    finally:
        placement.stop()
    text = str(err.value)
    assert text.startswith(
        f"the compute nodes {placement.nodes[0]} of Slurm job {placement.job_id} cannot reach "
        "the launcher at "
        "tcp://launcher.invalid:5555 (set BEAMPIPE_HOST"
    ), text
    assert "socket.gaierror" in text


def test_deployed_with_backend_slurm_status_shows_steps_and_stop_leaves_no_job(tmp_path):
    """`beampipe deploy --backend slurm` through the manager: status names a Slurm job step per
    replica, `beampipe stop` drains (every frame once in the NeXus file) and ends the job."""
    from test_manager import FRAMES, RELAY, Home, check_every_frame_once, received, wait_for

    home = Home(tmp_path / "home")
    (tmp_path / "relay.py").write_text(RELAY)
    pipeline = tmp_path / "frames.yaml"
    pipeline.write_text(FRAMES.replace("name: frames", "name: slurm-frames"))
    try:
        done = home.run("deploy", str(pipeline), "--backend", "slurm", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        pipeline_id = done.stdout.strip()
        assert f"as {pipeline_id} (backend slurm)" in done.stderr
        wait_for(lambda: received(home, pipeline_id) > 20, "frames reach the writer", 120)
        status = home.status(pipeline_id)
        assert status["backend"] == "slurm", status
        job = live_jobs("beampipe-slurm-frames")
        assert len(job) == 1, job
        steps = squeue_steps([job[0]["job_id"]])
        for replica in status["replicas"]:
            step, nodes = steps[f"{replica['node']}.{replica['replica']}"]
            assert replica["where"].startswith(f"job {step.split('.')[0]} step "), replica
            assert nodes in replica["where"], replica
        shown = home.run("status", pipeline_id, cwd=tmp_path)
        assert shown.returncode == 0 and "step" in shown.stdout, shown.stderr
        stopped = home.run("stop", pipeline_id, cwd=tmp_path)
        assert stopped.returncode == 0, stopped.stderr
        check_every_frame_once(home, pipeline_id, tmp_path)
        wait_for(lambda: not live_jobs("beampipe-slurm-frames"), "the job ends", 60)
    finally:
        home.cleanup()
