"""Start-up: how a node process joins its pipeline and builds the parts that run it.

With the launcher (docs/architecture.md, "Launcher"): the node says ``hello`` and gets
``setup``, the pipeline (:meth:`Wiring.hello`); it builds its worker; it binds its output ports
and reports them, ``bound`` (:meth:`Wiring.bind`; the launcher's ``start_timeout`` runs until
then, docs/reliability.md, "Start-up"); it gets ``connect`` and connects its input pipes
(:meth:`Wiring.connect`). :func:`build` does the steps after the worker exists, and builds the
parts that need it; a restarted stateful worker then restores its last snapshot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from beampipe.config import NodeSpec, Pipeline
from beampipe.runtime.control import Setup
from beampipe.runtime.durability import Durability
from beampipe.runtime.emitter import Emitter
from beampipe.runtime.faults import Faults, faults_for
from beampipe.runtime.intake import Intake
from beampipe.runtime.policy import ErrorPolicy
from beampipe.runtime.progress import Progress
from beampipe.runtime.streams import StreamBook, StreamState
from beampipe.runtime.wiring import Wiring
from beampipe.worker import Source, Worker
from beampipe.worker.base import Node


@dataclass(frozen=True)
class Parts:
    """The parts of a node replica that need its worker (see :mod:`beampipe.runtime.node`)."""

    spec: NodeSpec
    faults: Faults
    policy: ErrorPolicy
    emitter: Emitter
    book: StreamBook
    durable: Durability


def build(
    wiring: Wiring,
    pipeline: Pipeline,
    setup: Setup,
    worker: Node,
    incarnation: int,
    streams: dict[str, StreamState],
    intake: Intake,
    progress: Progress,
    wait: Callable[[int], object],
    ended: Callable[[str, StreamState], None],
) -> Parts:
    """Bind the node's outputs, connect its inputs and build its parts around ``worker``.

    Args:
        setup: the launcher's :class:`~beampipe.runtime.control.Setup`.
        incarnation: how often this replica was restarted before this process.
        streams, intake, progress: the parts made before the worker: where the open streams
            are kept, the reorder buffers and events (set up here), the progress reports.
        wait: services the node's sockets, not its inputs, for at most that many ms.
        ended: told when a stream ended at the node.
    """
    node, replica = wiring.node, wiring.replica
    wiring.bind(pipeline, setup)
    wiring.connect()
    spec = pipeline.nodes[node]
    policy = ErrorPolicy(wiring, spec, pipeline.dead_letter, worker, progress, wait)
    worker.replica, worker.restarts = replica, incarnation
    worker._drop, worker._stream_warnings = policy.dropped, {}
    progress.info = worker.info
    broadcast = any(c.routing == "broadcast" for c in pipeline.inputs_of(node))
    faults = faults_for(node, replica, incarnation)
    emitter = Emitter(
        wiring, worker.outputs, spec.check_finite, broadcast, faults, streams, progress, wait
    )
    is_worker = isinstance(worker, Worker)
    batch = (worker.max_batch, worker.max_wait) if is_worker else (1, 0.0)
    intake.set_up(spec, wiring.inputs, is_worker and worker.events, batch)
    book = StreamBook(
        wiring, streams, worker, emitter, intake, progress.notes, ended, policy.stream_end
    )
    sink = not wiring.outputs and is_worker
    snapshots = None
    if is_worker and worker.stateful and setup.state_dir:
        snapshots = Path(setup.state_dir) / f"{node}.{replica}.pickle"
    if isinstance(worker, Source) and setup.state_dir:
        worker.state_file = Path(setup.state_dir) / f"{node}.{replica}.source"
    durable = Durability(worker, book, sink, snapshots, wiring.window_bytes, progress, wait)
    if incarnation:
        durable.restore()
    return Parts(spec, faults, policy, emitter, book, durable)
