"""What ``beampipe run`` shows in the terminal: one progress line per stream and a summary."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from beampipe.config import Pipeline
from beampipe.runtime.metrics import Histogram, NodeMetrics


@dataclass
class _Stream:
    task: TaskID
    t_start: float
    """Unix time of the stream's first message at the source."""
    messages: int = 0
    sink_ends: int = 0
    t_last: float = 0.0
    """Unix time of the last message at any sink."""


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
            TextColumn("{task.fields[rate]:>8.0f} msg/s"),
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
            task = self.progress_bar.add_task(f"  {name}", total=None, rate=0.0)
            self.streams[name] = _Stream(task, time.time())
        return self.streams[name]

    def _finished(self, s: _Stream) -> bool:
        return s.sink_ends == self.sink_replicas

    def _show(self, s: _Stream) -> None:
        done = self._finished(s)
        elapsed = (s.t_last if done and s.t_last else time.time()) - s.t_start
        rate = s.messages / elapsed if elapsed > 0 else 0.0
        self.progress_bar.update(s.task, completed=s.messages, rate=rate)
        if done:
            name = self.progress_bar.tasks[s.task].description.strip()
            self.progress_bar.update(s.task, description=f"[green]✓[/] {name}")
            self.progress_bar.stop_task(s.task)

    def progress(self, node: str, replica: int, streams: dict[str, int]) -> None:
        if node in self.sources:
            for name, count in streams.items():
                s = self._stream(name)
                s.messages = count
                self._show(s)

    def stream_end(self, node: str, replica: int, report: dict[str, Any]) -> None:
        s = self._stream(report["stream"])
        if node in self.sources:
            s.messages = report["messages"]
            s.t_start = report["t_first"] or s.t_start
        if node in self.sinks:
            s.sink_ends += 1
            s.t_last = max(s.t_last, report["t_last"])
            if self._finished(s):
                self._show(s)

    def failure(self, text: str) -> None:
        self.console.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)

    def metrics_table(self, metrics: dict[str, NodeMetrics], wall_time: float) -> None:
        """Per node: messages and MB received (sent, for a source), mean rate over the run,
        p50/p99 of the time in ``process`` and of the latency since the source, and messages
        left in flight."""
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

    def skipped(self, metrics: dict[str, NodeMetrics], dead_letter: str) -> None:
        """Warn about frames that could not be decoded and messages that nodes with
        ``on_error: skip`` skipped, if any."""
        for what, field in (
            ("corrupt frames dropped", "corrupt_frames"),
            ("messages skipped after errors", "skipped"),
            ("ids never issued by sources", "missing"),
            ("frames from unknown peers dropped (see the node logs)", "rejected_frames"),
        ):
            counts = {name: getattr(m, field) for name, m in metrics.items() if getattr(m, field)}
            if counts:
                per_node = ", ".join(f"{name}: {n}" for name, n in counts.items())
                self.console.print(
                    f"[bold yellow]warning:[/] {sum(counts.values())} {what} ({escape(per_node)}), "
                    f"listed in {escape(dead_letter)}",
                    highlight=False,
                    soft_wrap=True,
                )

    def recovery(self, metrics: dict[str, NodeMetrics]) -> None:
        """After restarts: how many, what was sent again and what sinks dropped as duplicates
        (nothing, if no process died and no message came late)."""
        restarts = {name: m.restarts for name, m in metrics.items() if m.restarts}
        late = sum(m.late for m in metrics.values())
        if not restarts and not late:
            return
        per_node = ", ".join(f"{name}: {n}" for name, n in restarts.items())
        self.console.print(
            f"[bold yellow]recovery:[/] {sum(restarts.values())} restarts"
            + (f" ({escape(per_node)})" if per_node else "")
            + f", {sum(m.resent for m in metrics.values())} messages sent again, "
            f"{sum(m.duplicates for m in metrics.values())} duplicates dropped by sinks, "
            f"{late} late messages",
            highlight=False,
            soft_wrap=True,
        )

    def summary(self, exit_code: int, wall_time: float, outputs: list[str]) -> None:
        messages = sum(s.messages for s in self.streams.values())
        finished = sum(1 for s in self.streams.values() if self._finished(s))
        status = "[green]finished[/]" if exit_code == 0 else f"[red]failed (exit {exit_code})[/]"
        self.console.print(
            f"{status}: {finished}/{len(self.streams)} streams, {messages} messages, "
            f"{wall_time:.1f} s wall time" + (f", output: {', '.join(outputs)}" if outputs else ""),
            soft_wrap=True,
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
