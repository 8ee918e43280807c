"""Hung replicas: a node process that holds messages and has not reported for its node's
``hang_timeout`` is taken as hung, from outside (a stopped or stuck process says nothing).

A live node reports at least every second while its loop turns
(:data:`beampipe.runtime.progress.HEARTBEAT_INTERVAL`), so a silence means that it is stopped
(SIGSTOP, a debugger), stuck in a call (``process``, a hook, a checkpoint) or cut off. It
matters when the replica holds messages, i.e. its last report counted unacknowledged inputs or
its upstream replicas' last reports counted items sent to it and not acknowledged: its
upstream ports then keep them, and an ordered port downstream waits for their ids. Sources
(no inputs) are never taken as hung: they may wait for data for as long as it takes.

What happens then (docs/reliability.md, "Hangs"): a replica that may be restarted
(``restart: on-failure``, restarts left) is killed and restarted, its unacknowledged messages
sent to it again; one that may not but whose messages other replicas can take (``round_robin``,
another replica running) is killed and dropped, its messages redelivered to the others; any
other is reported and waited for. Each hang is shown as it is found, in the
:class:`~beampipe.launch.status.RunStatus` (state ``hung``), and at the end of the run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from beampipe.launch.replica import Replica


@dataclass
class Hang:
    """One hang of one replica's process.

    Attributes:
        node, replica: which replica.
        silent_since: monotonic time of its last report before the hang.
        found: monotonic time the launcher took it as hung.
        holding: unacknowledged input items its last report counted.
        action: what the launcher did: ``restarted``, ``redelivered`` or ``waited``.
        ended: monotonic time it ended (killed, or resumed reporting); None while it lasts.
    """

    node: str
    replica: int
    silent_since: float
    found: float
    holding: int
    action: str
    ended: float | None = None

    @property
    def label(self) -> str:
        return f"node {self.node!r}" + (f" replica {self.replica}" if self.replica else "")

    @property
    def reason(self) -> str:
        """Why it was taken as hung."""
        return (
            f"no report for {self.found - self.silent_since:.1f} s while holding "
            f"{self.holding} unacknowledged messages"
        )

    def text(self, now: float | None = None) -> str:
        """The hang in one line, as the status and the end of a run list it (``now``:
        monotonic time, for a hang that lasts)."""
        if self.action == "restarted":
            outcome = "it was killed and restarted, its messages sent to it again"
        elif self.action == "redelivered":
            outcome = "it was killed and dropped, its messages sent to the other replicas"
        elif self.ended is not None:
            outcome = f"it resumed after {self.ended - self.silent_since:.1f} s"
        else:
            silent = (now if now is not None else time.monotonic()) - self.silent_since
            outcome = f"still hung after {silent:.1f} s"
        return f"{self.label} hung ({self.reason}): {outcome}"


class Hangs:
    """The :class:`~beampipe.launch.Launcher`'s part that finds hung replicas."""

    def _check_hangs(self) -> None:
        """Take the replicas that hold messages and were silent for their ``hang_timeout``
        as hung and act on each; note those that report again as resumed."""
        now = time.monotonic()
        for rep in list(self.replicas.values()):
            hang = rep.hang
            if hang is not None:
                if hang.ended is None and rep.heard > hang.found:
                    hang.ended = rep.heard
                    rep.hang = None
                    self.observer.failure(
                        f"{rep.label} ({self._where(rep)}) reports again: it resumed after "
                        f"{hang.ended - hang.silent_since:.1f} s"
                    )
                continue
            holding = self._holding(rep)
            timeout = self.pipeline.nodes[rep.node].hang_timeout
            if holding and timeout and now - rep.heard >= timeout:
                self._hung(rep, Hang(rep.node, rep.replica, rep.heard, now, holding, ""))

    def _holding(self, rep: Replica) -> int:
        """Input items of ``rep``'s running process not yet acknowledged: the most its last
        report or its upstream replicas' last reports counted (a process stopped right
        after a report may be sent more); 0 for one that is not running its loop (starting,
        done, restarting, exited)."""
        if not rep.bound or rep.done or rep.restart_at is not None:
            return 0
        if rep.process.poll() is not None:
            return 0
        metrics = self.metrics.get((rep.node, rep.replica))
        own = metrics.unacknowledged if metrics is not None else 0
        name = f"{rep.node}#{rep.replica}"
        sent = sum(r.waiting.get(name, 0) for r in self.replicas.values())
        return max(own, sent)

    def _hung(self, rep: Replica, hang: Hang) -> None:
        """``rep`` is hung: kill it where its messages can be taken over (the process watch
        then restarts it or redelivers them, :mod:`~beampipe.launch.supervision`), else say
        so and wait for it."""
        rep.hang = hang
        self.hangs.append(hang)
        if self._may_restart(rep) or self._may_drop(rep) is not None:
            hang.action = "restarted" if self._may_restart(rep) else "redelivered"
            hang.ended = hang.found
            rep.process.kill()
            return
        hang.action = "waited"
        spec = self.pipeline.nodes[rep.node]
        why = (
            f"restart: {spec.restart}"
            + (f", {rep.restarts} restarts done" if spec.restart == "on-failure" else "")
            + ", and no other replica can take its messages"
        )
        self.observer.failure(
            f"{rep.label} ({self._where(rep)}) hung: {hang.reason}; waiting for it ({why})"
        )

    def hang_texts(self) -> list[str]:
        """Every hang of the run so far, one line each (:meth:`Hang.text`)."""
        now = time.monotonic()
        return [h.text(now) for h in self.hangs]
