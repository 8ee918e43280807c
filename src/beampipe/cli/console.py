"""What ``beampipe run`` shows in the terminal: one progress line per stream and a summary.

A stream's count is what the sources sent of it; a stream no source sent (a reducer's own, such
as ``merged``) counts what the sinks received of it. A source replica's count never goes down:
a lower one comes from its restarted process, which may send again what its predecessor sent
(a file replay) or go on from there (a detector), so the stream then counts at least what a
sink received of it. Its rate is measured from its first progress report, or, once finished,
over the time from its first message at the source to its last at a sink; none is shown before
there is a time to divide by.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from beampipe.config import Pipeline
from beampipe.runtime.metrics import Histogram, NodeMetrics

RATE_AFTER = 0.2
"""Seconds of progress reports after which a stream's rate is shown."""


@dataclass
class _Stream:
    task: TaskID
    source_counts: dict[tuple[str, int], int] = field(default_factory=dict)
    """Messages sent by each source replica."""
    sink_counts: dict[tuple[str, int], int] = field(default_factory=dict)
    """Messages received by each sink replica."""
    sink_ends: set[tuple[str, int]] = field(default_factory=set)
    """The sink replicas that have seen it end."""
    restarted: bool = False
    """A source replica's count went down: its process was restarted."""
    ticked: bool = False
    first: tuple[float, int] | None = None
    """Monotonic time and count of the stream's first progress report."""
    t_first: float = 0.0
    """Unix time of the stream's first message at the source (0: not known)."""
    t_last: float = 0.0
    """Unix time of the last message at any sink."""

    def count_sent(self, source: tuple[str, int], count: int) -> None:
        """``source`` replica reported ``count`` messages sent (see the module docstring)."""
        before = self.source_counts.get(source, 0)
        self.restarted = self.restarted or count < before
        self.source_counts[source] = max(before, count)

    @property
    def messages(self) -> int:
        """What the sources sent (at least what a sink received, after a source restarted),
        or, for a stream of a node's own, what a sink received."""
        per_sink: dict[str, int] = {}
        for (node, _), count in self.sink_counts.items():
            per_sink[node] = per_sink.get(node, 0) + count
        received = max(per_sink.values(), default=0)
        if not self.source_counts:
            return received
        sent = sum(self.source_counts.values())
        return max(sent, received) if self.restarted else sent


class ConsoleObserver:
    """Shows, per stream, the messages the sources have sent and their rate; a stream's line is
    ticked when every sink replica has seen it end."""

    def __init__(self, pipeline: Pipeline, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.sources = set(pipeline.sources())
        self.sinks = set(pipeline.sinks())
        self.sink_replicas = sum(pipeline.nodes[n].replicas for n in self.sinks)
        """A stream is finished when this many sink replicas have seen it end."""
        self.streams: dict[str, _Stream] = {}
        self.progress_bar = Progress(
            TextColumn("{task.description}"),
            TextColumn("{task.completed:>8.0f} msgs"),
            TextColumn("{task.fields[rate]:>8} msg/s"),
            TimeElapsedColumn(),
            console=self.console,
        )

    def __enter__(self) -> ConsoleObserver:
        self.progress_bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress_bar.stop()

    def _stream(self, name: str) -> _Stream:
        if name not in self.streams:
            task = self.progress_bar.add_task(f"  {name}", total=None, rate="-")
            self.streams[name] = _Stream(task)
        return self.streams[name]

    def _finished(self, s: _Stream) -> bool:
        return len(s.sink_ends) >= self.sink_replicas

    def _rate(self, s: _Stream) -> str:
        """Messages/s of ``s``: from its first message to its last once finished, else since
        its first progress report; ``-`` while there is no time to divide by."""
        messages = s.messages
        if self._finished(s) and s.t_first and s.t_last > s.t_first and messages > 1:
            return f"{(messages - 1) / (s.t_last - s.t_first):.0f}"
        if s.first is None:
            return "-"
        t0, n0 = s.first
        elapsed = time.monotonic() - t0
        return f"{(messages - n0) / elapsed:.0f}" if elapsed >= RATE_AFTER else "-"

    def _show(self, s: _Stream) -> None:
        self.progress_bar.update(s.task, completed=s.messages, rate=self._rate(s))
        if self._finished(s) and not s.ticked:
            s.ticked = True
            name = self.progress_bar.tasks[s.task].description.strip()
            self.progress_bar.update(s.task, description=f"[green]✓[/] {name}")
            self.progress_bar.stop_task(s.task)

    def progress(self, node: str, replica: int, streams: dict[str, int]) -> None:
        if node not in self.sources and node not in self.sinks:
            return
        for name, count in streams.items():
            s = self._stream(name)
            if node in self.sources:
                s.count_sent((node, replica), count)
            else:
                s.sink_counts[node, replica] = count
            if s.first is None and s.messages:
                s.first = (time.monotonic(), s.messages)
            self._show(s)

    def stream_end(self, node: str, replica: int, report: dict[str, Any]) -> None:
        s = self._stream(report["stream"])
        if node in self.sources:
            s.count_sent((node, replica), report["messages"])
            s.t_first = min(filter(None, (s.t_first, report["t_first"])), default=0.0)
        if node in self.sinks:
            s.sink_counts[node, replica] = report["messages"]
            s.sink_ends.add((node, replica))
            s.t_last = max(s.t_last, report["t_last"])
            if not s.source_counts:  # a stream of a node's own: timed at the sinks
                s.t_first = min(filter(None, (s.t_first, report["t_first"])), default=0.0)
        self._show(s)

    def failure(self, text: str) -> None:
        self.console.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)

    def metrics_table(self, metrics: dict[str, NodeMetrics], wall_time: float) -> None:
        """Per node: messages and MB received (sent, for a source), mean rate over the run,
        p50/p99 of the time in ``process`` and of the latency since the source, and messages
        left in flight; under the table, a line per node that reported info
        (:meth:`beampipe.Worker.report_info`): ``ml: execution_provider CPUExecutionProvider``."""
        table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
        for header in ("node", "msgs", "MB", "msg/s", "process p50/p99", "latency p50/p99"):
            table.add_column(header, justify="left" if header == "node" else "right", no_wrap=True)
        table.add_column("in flight", justify="right")
        for name, m in metrics.items():
            count, size = (
                (m.messages_in, m.bytes_in) if m.messages_in else (m.messages_out, m.bytes_out)
            )
            table.add_row(
                name,
                str(count),
                f"{size / 1e6:.1f}",
                f"{count / wall_time:.0f}" if wall_time > 0 else "-",
                f"{_duration(m.process_time, 0.5)}/{_duration(m.process_time, 0.99)}",
                f"{_duration(m.latency, 0.5)}/{_duration(m.latency, 0.99)}",
                str(m.in_flight + m.held),
            )
        self.console.print(table)
        for name, m in metrics.items():
            if m.info:
                facts = "; ".join(f"{key} {value}" for key, value in m.info.items())
                self.console.print(
                    f"{escape(name)}: {escape(facts)}", highlight=False, soft_wrap=True
                )

    def skipped(self, metrics: dict[str, NodeMetrics], dead_letter: str) -> int:
        """Warn about frames that could not be decoded, messages that nodes with ``on_error:
        skip`` skipped and inputs nodes dropped, if any; how many lines were printed."""
        lines = 0
        for what, name in (
            ("corrupt frames dropped", "corrupt_frames"),
            ("messages skipped after errors", "skipped"),
            ("inputs dropped by nodes", "dropped"),
            ("ids never issued by sources", "missing"),
            ("frames from unknown peers dropped (see the node logs)", "rejected_frames"),
            (
                "connections refused: no credentials of this run (see the node logs)",
                "refused_connections",
            ),
        ):
            counts = {node: getattr(m, name) for node, m in metrics.items() if getattr(m, name)}
            if counts:
                lines += 1
                per_node = ", ".join(f"{node}: {n}" for node, n in counts.items())
                self.console.print(
                    f"[bold yellow]warning:[/] {sum(counts.values())} {what} ({escape(per_node)}), "
                    f"listed in {escape(dead_letter)}",
                    highlight=False,
                    soft_wrap=True,
                )
        return lines

    def refused(self, refused: int) -> int:
        """Warn about connections to the launcher's control channel refused for want of the
        run's credentials (listed above as they happened), if any; lines printed."""
        if not refused:
            return 0
        self.console.print(
            f"[bold yellow]warning:[/] {refused} connections to the launcher's control channel "
            "refused: not a process of this run",
            highlight=False,
            soft_wrap=True,
        )
        return 1

    def warnings(self, metrics: dict[str, NodeMetrics]) -> int:
        """Per node, each distinct warning it noted (:mod:`beampipe.runtime.notes`: warnings
        raised, inputs dropped or skipped, non-finite values sent) with its count and where it
        first happened; how many were listed."""
        listed = 0
        for node, m in metrics.items():
            for text, count, stream, msg_id in m.notes.values():
                listed += 1
                where = ""
                if stream is not None:
                    where = f", first in stream {stream!r}" + (f" id {msg_id}" if msg_id else "")
                self.console.print(
                    f"[bold yellow]warning:[/] node {node!r}: {escape(text)} ({count} times"
                    + escape(where)
                    + ")",
                    highlight=False,
                    soft_wrap=True,
                )
        return listed

    def hangs(self, hangs: list[str]) -> int:
        """Warn about each replica that hung (:mod:`beampipe.launch.hangs`), what was done and
        how it ended; how many lines were printed."""
        for text in hangs:
            self.console.print(
                f"[bold yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True
            )
        return len(hangs)

    def recovery(self, metrics: dict[str, NodeMetrics]) -> None:
        """After restarts or redelivery: how many restarts, what was sent again and what sinks
        dropped as duplicates (nothing, if no process died and no message came late)."""
        restarts = {name: m.restarts for name, m in metrics.items() if m.restarts}
        late = sum(m.late for m in metrics.values())
        resent = sum(m.resent for m in metrics.values())
        if not restarts and not late and not resent:
            return
        per_node = ", ".join(f"{name}: {n}" for name, n in restarts.items())
        self.console.print(
            f"[bold yellow]recovery:[/] {sum(restarts.values())} restarts"
            + (f" ({escape(per_node)})" if per_node else "")
            + f", {resent} messages sent again, "
            f"{sum(m.duplicates for m in metrics.values())} duplicates dropped by sinks, "
            f"{late} late messages",
            highlight=False,
            soft_wrap=True,
        )

    def summary(
        self,
        exit_code: int,
        wall_time: float,
        outputs: list[str],
        warnings: int = 0,
        logs: str | None = None,
    ) -> None:
        """The last line: how the run ended (and whether with ``warnings``, the number of
        warning lines above), its streams and messages, the files written and the node logs."""
        messages = sum(s.messages for s in self.streams.values())
        finished = sum(1 for s in self.streams.values() if self._finished(s))
        status = "[green]finished[/]" if exit_code == 0 else f"[red]failed (exit {exit_code})[/]"
        if warnings:
            status += f" [bold yellow]with warnings ({warnings} above)[/]"
        self.console.print(
            f"{status}: {finished}/{len(self.streams)} streams, {messages} messages, "
            f"{wall_time:.1f} s wall time"
            + (f", output: {escape(', '.join(outputs))}" if outputs else "")
            + (f", node logs: {escape(logs)}" if logs else ""),
            soft_wrap=True,
            highlight=False,
        )


def _duration(h: Histogram, q: float) -> str:
    """The ``q`` quantile of ``h`` in readable units, or ``-`` without samples."""
    if h.total == 0:
        return "-"
    seconds = h.quantile(q)
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f}µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f}ms"
    return f"{seconds:.2f}s"
