"""What ``beampipe run`` reports after a process died: the stream lines and the ``recovery:``
line (issue 16, "correct end-of-run verdicts and reports")."""

from __future__ import annotations

from io import StringIO

from conftest import EXAMPLE
from rich.console import Console

from beampipe.cli.console import ConsoleObserver
from beampipe.config import load_pipeline
from beampipe.runtime.metrics import NodeMetrics


def observer() -> tuple[ConsoleObserver, StringIO]:
    """A console observer of the example pipeline (source ``scan``, sink ``nexus``)."""
    out = StringIO()
    return ConsoleObserver(load_pipeline(EXAMPLE / "pipeline.yaml"), Console(file=out)), out


def restarted_source(console: ConsoleObserver) -> None:
    """The source's first process sent 478 messages, its restarted one 1,087 more; the sink
    wrote 1,565; reports come after the stream's end."""
    with console:
        console.progress("scan", 0, {"a": 478})
        console.progress("nexus", 0, {"a": 470})
        console.progress("scan", 0, {"a": 40})  # the restarted process
        console.stream_end("scan", 0, {"stream": "a", "messages": 1087, "t_first": 100.0})
        console.stream_end(
            "nexus", 0, {"stream": "a", "messages": 1565, "t_first": 100.5, "t_last": 110.0}
        )
        console.progress("scan", 0, {"a": 1087})
        console.progress("nexus", 0, {"a": 1565})
        console.stream_end("nexus", 0, {"stream": "a", "messages": 1565, "t_last": 110.0})


def test_a_restarted_source_counts_what_was_written():
    """1,565 messages, not the restarted process's 1,087."""
    console, _ = observer()
    restarted_source(console)
    assert console.streams["a"].messages == 1565


def test_a_stream_is_ticked_once_however_many_reports_come_after_its_end():
    console, _ = observer()
    restarted_source(console)
    s = console.streams["a"]
    description = console.progress_bar.tasks[s.task].description
    assert description.count("✓") == 1, description


def test_a_source_that_was_not_restarted_counts_what_it_sent():
    console, _ = observer()
    with console:
        console.progress("scan", 0, {"a": 300})
        console.progress("nexus", 0, {"a": 200})
        console.stream_end("scan", 0, {"stream": "a", "messages": 1000, "t_first": 100.0})
        console.progress("nexus", 0, {"a": 900})  # a sink may receive fewer (a filter)
    assert console.streams["a"].messages == 1000


def test_the_recovery_line_shows_redelivery_without_restarts():
    """restart: never, a replica dropped and its messages sent to the others: a recovery line
    (it was missing: only restarts and late messages made one)."""
    console, out = observer()
    console.recovery({"scan": NodeMetrics(resent=57), "nexus": NodeMetrics()})
    text = " ".join(out.getvalue().split())
    assert "recovery: 0 restarts, 57 messages sent again, 0 duplicates dropped by sinks" in text


def test_no_recovery_line_when_nothing_happened():
    console, out = observer()
    console.recovery({"scan": NodeMetrics(), "nexus": NodeMetrics()})
    assert out.getvalue() == ""
