"""A source may yield a list of items, a burst: all are sent, small ones in batches, and the
batches go out when the burst is over, before the generator is asked for more
(beampipe.Source, runtime/source.py)."""

from __future__ import annotations

from pathlib import Path

from conftest import rows, run_pipeline


def pipeline(source_params: str, sink_params: str = "") -> str:
    return f"""\
nodes:
  src: {{use: flownodes:Counter, params: {{{source_params}}}}}
  work: {{use: flownodes:Tag}}
  sink: {{use: flownodes:Collect, params: {{path: out.jsonl{sink_params}}}}}
connections:
  - src -> work
  - work -> sink.in
"""


def test_bursts_arrive_once_each_in_order(folder: Path) -> None:
    result, _ = run_pipeline(folder, pipeline("n: 95, streams: 2, burst: 10"))
    assert result.exit_code == 0, result.errors
    got = rows(folder / "out.jsonl")
    assert [(r["stream"], r["id"]) for r in got] == [
        (s, i) for s in ("s0", "s1") for i in range(1, 96)
    ]
    assert all(r["x"] == r["id"] ** 2 for r in got)
    assert result.metrics["sink"].messages_in == 190


def test_a_burst_is_sent_before_the_generator_blocks(folder: Path) -> None:
    """After its first burst of 10 the source blocks, without yielding, until the sink has
    received those 10: it raises after 30 s (and the run fails) if they wait in a batch."""
    text = pipeline(
        "n: 30, burst: 10, hold_after: 10, hold_until: ten.flag",
        ", flag: ten.flag, flag_after: 10",
    )
    result, _ = run_pipeline(folder, text)
    assert result.exit_code == 0, result.errors
    assert [r["id"] for r in rows(folder / "out.jsonl")] == list(range(1, 31))


def test_a_tuple_is_not_a_burst(folder: Path) -> None:
    text = pipeline("n: 1").replace("flownodes:Counter, params: {n: 1}", "flownodes:TupleBurst")
    result, _ = run_pipeline(folder, text)
    assert result.exit_code != 0
    assert any("generate() yielded a tuple" in e and "src" in e for e in result.errors), (
        result.errors
    )
