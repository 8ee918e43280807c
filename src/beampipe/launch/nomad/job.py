"""The Nomad job of a pipeline, rendered in Nomad's JSON job format
(https://developer.hashicorp.com/nomad/api-docs/json-jobs): one task group per node, one
``raw_exec`` task running the node's :class:`~beampipe.launch.command.NodeCommand`."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from beampipe.config import Pipeline
from beampipe.launch.command import NodeCommand


def _group(
    pipeline: Pipeline,
    node: str,
    count: int,
    args: list[str],
    python: str,
    env: dict[str, str],
    workdir: Path,
    meta: dict[str, str],
) -> dict[str, Any]:
    spec = pipeline.nodes[node]
    resources: dict[str, Any] = {"Cores": spec.resources.cpus}
    if spec.resources.memory_mb is not None:
        resources["MemoryMB"] = spec.resources.memory_mb
    if spec.resources.gpus:
        resources["Devices"] = [{"Name": "nvidia/gpu", "Count": spec.resources.gpus}]
    return {
        "Name": node,
        "Count": count,
        "RestartPolicy": {"Attempts": 0, "Mode": "fail"},
        "ReschedulePolicy": {"Attempts": 0, "Unlimited": False},
        "Meta": {"beampipe_pipeline": pipeline.name, "beampipe_node": node, **meta},
        "Tasks": [
            {
                "Name": node,
                "Driver": "raw_exec",
                "Config": {"command": python, "args": args, "work_dir": str(workdir)},
                "Env": dict(env),
                "Resources": resources,
                "KillSignal": "SIGKILL",
            }
        ],
    }


def _job(
    job_id: str,
    name: str,
    pipeline: Pipeline,
    groups: list[dict[str, Any]],
    datacenters: Iterable[str],
    namespace: str | None,
) -> dict[str, Any]:
    job: dict[str, Any] = {
        "ID": job_id,
        "Name": name,
        "Type": "batch",
        "Datacenters": list(datacenters),
        "Meta": {"beampipe_pipeline": pipeline.name},
        "TaskGroups": groups,
    }
    if namespace is not None:
        job["Namespace"] = namespace
    return job


def render_job(
    pipeline: Pipeline,
    job_id: str,
    control_endpoint: str,
    python: str,
    env: dict[str, str],
    *,
    datacenters: Iterable[str] = ("dc1",),
    namespace: str | None = None,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """The Nomad job (JSON job format, the value of ``{"Job": ...}`` in ``POST /v1/jobs``) that
    runs every node replica of ``pipeline``.

    ``Type`` is ``batch``: a pipeline ends when its sources are done, and a batch task that
    exits 0 is complete, whereas Nomad starts a service's task again whenever it exits. One
    task group per node, named after it, ``Count`` = its replicas, each with one ``raw_exec``
    task of the same name running ``python`` with the arguments of
    :class:`~beampipe.launch.command.NodeCommand` (replica ``${NOMAD_ALLOC_INDEX}``,
    incarnation 0) in ``workdir`` (default: the current directory),
    environment ``env`` added to the client's. ``Resources`` from the node's ``resources:``:
    ``Cores`` = cpus (whole cores, reserved exclusively), ``MemoryMB`` if memory is given (else
    Nomad's default, 300 MB), ``gpus`` as a ``Devices`` request for ``nvidia/gpu``; Slurm's
    partition and time do not apply. ``RestartPolicy`` and ``ReschedulePolicy`` allow no
    attempt (the launcher restarts what may be restarted); ``KillSignal`` is SIGKILL, since
    the launcher stops allocations only after a node did not stop when asked. ``Meta``:
    ``beampipe_pipeline`` (job and groups) and ``beampipe_node`` (groups).
    """
    workdir = workdir or Path.cwd()
    groups = [
        _group(
            pipeline,
            node,
            spec.replicas,
            NodeCommand(python, control_endpoint, node, "${NOMAD_ALLOC_INDEX}").args(),
            python,
            env,
            workdir,
            {},
        )
        for node, spec in pipeline.nodes.items()
    ]
    return _job(job_id, pipeline.name, pipeline, groups, datacenters, namespace)


def render_replica_job(
    pipeline: Pipeline,
    job_id: str,
    node: str,
    replica: int,
    incarnation: int,
    control_endpoint: str,
    python: str,
    env: dict[str, str],
    *,
    datacenters: Iterable[str] = ("dc1",),
    namespace: str | None = None,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """A job of one allocation running one process of node ``node``: replica ``replica``,
    incarnation ``incarnation`` written out in its arguments; its task group is as in
    :func:`render_job` with ``Count`` 1 and ``Meta`` ``beampipe_replica`` and
    ``beampipe_incarnation`` besides."""
    group = _group(
        pipeline,
        node,
        1,
        NodeCommand(python, control_endpoint, node, replica, incarnation).args(),
        python,
        env,
        workdir or Path.cwd(),
        {"beampipe_replica": str(replica), "beampipe_incarnation": str(incarnation)},
    )
    name = f"{pipeline.name}.{node}.{replica}.{incarnation}"
    return _job(job_id, name, pipeline, [group], datacenters, namespace)
