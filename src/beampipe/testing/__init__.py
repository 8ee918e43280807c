"""Testing a node: drive a worker, a source or a reducer in-process, by the runtime's own rules.

::

    from beampipe import EndOfStream, Message, StreamStart
    from beampipe.testing import run

    results = run(Transmission, [StreamStart("s", {}), Message(data=..., stream="s", id=1),
                                 EndOfStream("s", 1)], params={"i0": "I0"})
    (mu,) = results.messages()      # what went out on the first output port
    assert (mu.stream, mu.id) == ("s", 1)

No sockets and no processes, but the node process's own parts do the work
(:mod:`beampipe.runtime`): the stream book calls ``on_stream_start`` at a stream's first marker or
message and ``on_stream_end`` at its end, and forwards the markers; the emitter fills in what a
result leaves empty (stream, id, timestamps), sends it on its port (a mapping ``{port: ...}``
names the port), opens and ends the streams of the worker's own, counts non-finite values; a
worker with ``events = True`` gets the events the runtime's event builder forms, of the input
ports that are connected (for :func:`run`, those its messages come in on); a source's
``generate`` is run by the source loop (bursts, ``None`` while it waits, gaps in its ids). What
is left to the pipeline: other processes, flow control, acknowledgements, replicas and ordered
ports, snapshots of stateful workers, retries and ``on_error: skip`` (an exception in a hook or
in ``process`` propagates here, as the worker raised it; a result that cannot be sent raises a
:class:`beampipe.ResultError`), event timeouts (an incomplete event
goes on when its stream ends).
A sink's ``checkpoint`` is called at each stream's end; ``close`` at the end of the run.
"""

from beampipe.testing.harness import Harness, run
from beampipe.testing.results import DeadLetter, Results

__all__ = ["DeadLetter", "Harness", "Results", "run"]
