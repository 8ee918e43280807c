"""The Nomad backend: node processes as allocations of a Nomad batch job.

:class:`NomadPlacement` places a pipeline's node processes on a Nomad cluster through the Nomad
HTTP API (https://developer.hashicorp.com/nomad/api-docs, with python-nomad): one job per
pipeline, rendered by :func:`render_job` in the JSON job format
(https://developer.hashicorp.com/nomad/api-docs/json-jobs): ``Type: batch``, one task group per
node with ``Count`` = its replicas, one ``raw_exec`` task running
``python -m beampipe.runtime --control EP --node NODE --replica ${NOMAD_ALLOC_INDEX}
--incarnation 0``. The launcher (:class:`beampipe.launch.Launcher`) keeps deciding about
restarts: the job's restart and reschedule policies allow none.

A process the registered job does not cover (a restart, incarnation > 0, or a replica beyond the
group's ``Count``) is placed as a job of its own, ``JOB.NODE.REPLICA.INCARNATION``, with one
allocation. The pipeline's job is never changed after its registration, because Nomad runs the
finished and failed allocations of a batch job again when the job changes (a new version, e.g.
by ``/v1/job/:id/scale``; ``filterOldTerminalAllocs`` in Nomad's scheduler): a replica that had
died would come back as a second process next to the launcher's restart of it.

The tasks run in the launcher's working directory (``raw_exec``'s ``work_dir``), so relative
output paths mean what they mean for ``beampipe run``; the Nomad clients must see the same file
systems as the launcher (as on a cluster with shared storage) and have the same Python
environment. Nodes bind ``tcp://0.0.0.0:*`` and advertise their host's name.
"""

from beampipe.launch.nomad.allocation import DEFAULT_ADDRESS, NomadAllocation, NomadError
from beampipe.launch.nomad.job import render_job, render_replica_job
from beampipe.launch.nomad.placement import NomadPlacement

__all__ = [
    "DEFAULT_ADDRESS",
    "NomadAllocation",
    "NomadError",
    "NomadPlacement",
    "render_job",
    "render_replica_job",
]
