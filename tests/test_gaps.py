"""Gap detection at the source (beampipe.runtime.gaps): skipped ids are awaited, then reported."""

from __future__ import annotations

from conftest import rows, run_pipeline

from beampipe.runtime.gaps import GapDetector


def test_an_id_that_comes_out_of_order_within_the_timeout_is_not_missing():
    gaps = GapDetector(timeout=1.0)
    for msg_id in (1, 2, 4, 5):
        assert gaps.issued("s", msg_id, now=10.0)
    assert gaps.next_deadline == 11.0
    assert gaps.expired(10.5) == []
    assert gaps.issued("s", 3, now=10.6)
    assert gaps.next_deadline is None
    assert gaps.end("s", 5) == []


def test_an_id_awaited_longer_than_the_timeout_is_missing_and_then_late():
    gaps = GapDetector(timeout=1.0)
    for msg_id in (1, 2, 5, 6):
        gaps.issued("s", msg_id, now=10.0)
    assert gaps.expired(10.99) == []
    assert gaps.expired(11.0) == [("s", 3, 4)]
    assert gaps.expired(20.0) == []
    assert not gaps.issued("s", 3, now=21.0)  # reported already: late
    assert gaps.end("s", 6) == []


def test_ids_never_issued_before_the_end_of_the_stream_are_missing():
    gaps = GapDetector(timeout=100.0)
    for msg_id in (2, 3, 7):
        gaps.issued("s", msg_id, now=0.0)
    gaps.issued("t", 1, now=0.0)
    assert gaps.end("s", 9) == [(1, 1), (4, 6), (8, 9)]
    assert gaps.end("t", 1) == []


def test_an_id_issued_inside_an_awaited_range_splits_it():
    gaps = GapDetector(timeout=1.0)
    gaps.issued("s", 1, now=0.0)
    gaps.issued("s", 10, now=0.0)  # 2..9 awaited
    assert gaps.issued("s", 5, now=0.5)
    assert gaps.expired(1.0) == [("s", 2, 4), ("s", 6, 9)]
    assert not gaps.issued("s", 3, now=2.0)
    assert gaps.issued("s", 11, now=2.0)  # after the reported ranges: no gap
    assert gaps.end("s", 11) == []


def test_a_jump_of_a_billion_ids_is_one_range():
    gaps = GapDetector(timeout=1.0)
    gaps.issued("s", 1, now=0.0)
    assert gaps.issued("s", 10**9, now=0.0)
    assert gaps.issued("s", 10**9 + 1, now=0.0)
    assert gaps.expired(1.0) == [("s", 2, 10**9 - 1)]
    assert gaps.was_reported("s", 123_456_789)
    assert not gaps.was_reported("s", 10**9)
    assert gaps.end("s", 2 * 10**9) == [(10**9 + 2, 2 * 10**9)]


PIPELINE = """
name: gaps
dead_letter: dead.jsonl
nodes:
  source:
    use: flownodes:Counter
    params: {n: 50, skip: [5, 17]}
  sink:
    use: flownodes:Collect
    params: {path: out.jsonl}
connections:
  - source.out -> sink.in
"""


def test_a_source_that_skips_ids_reports_them_missing_and_the_rest_is_processed(folder):
    result, _ = run_pipeline(folder, PIPELINE)
    assert result.exit_code == 0, result.errors
    assert [r["id"] for r in rows(folder / "out.jsonl")] == [
        i for i in range(1, 51) if i not in (5, 17)
    ]
    dead = rows(folder / "dead.jsonl")
    assert [(d["node"], d["stream"], d["id"]) for d in dead] == [
        ("source", "s0", 5),
        ("source", "s0", 17),
    ]
    assert all(d["error"].startswith("missing: ") for d in dead)
    assert result.metrics["source"].missing == 2


def test_a_source_that_jumps_a_billion_ids_reports_one_missing_range(folder):
    pipeline = PIPELINE.replace(
        "use: flownodes:Counter\n    params: {n: 50, skip: [5, 17]}",
        "use: flownodes:Ids\n    params: {ids: [1, 2, 1000000000], last: 1000000001}",
    )
    result, _ = run_pipeline(folder, pipeline)
    assert result.exit_code == 0, result.errors
    assert [r["id"] for r in rows(folder / "out.jsonl")] == [1, 2, 10**9]
    dead = rows(folder / "dead.jsonl")
    assert [(d["stream"], d["id"], d.get("last_id")) for d in dead] == [
        ("s0", 3, 10**9 - 1),
        ("s0", 10**9 + 1, None),
    ]
    assert dead[0]["error"].startswith(f"missing: {10**9 - 3} ids: ")
    assert result.metrics["source"].missing == 10**9 - 3 + 1
