"""The Slurm backend: a pipeline's node processes as job steps of one Slurm allocation.

:class:`SlurmPlacement` submits one batch job per pipeline (``sbatch``) that only holds the
allocation: nodes with equal ``resources:`` form one group, and each group is one component of
a heterogeneous job (a plain job if there is one group) with one task per replica. Each node
replica then runs as a job step of its component (``srun --jobid=J --het-group=G --overlap``);
jobs and steps are tracked with ``squeue``, and ``scancel`` releases the allocation. Only the
Slurm command-line tools are used (``sbatch``, ``srun``, ``squeue``, ``scancel``), and their JSON
output where Slurm 22.05 has one. See ``docs/slurm.md``.
"""

from beampipe.launch.slurm.commands import FINAL_STATES, SlurmError, squeue_jobs
from beampipe.launch.slurm.placement import SlurmPlacement
from beampipe.launch.slurm.step import SlurmStep

__all__ = ["FINAL_STATES", "SlurmError", "SlurmPlacement", "SlurmStep", "squeue_jobs"]
