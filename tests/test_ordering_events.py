"""Ordered input ports behind replicas, and event formation from two sources."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from conftest import rows, run_pipeline

from beampipe import Message
from beampipe.runtime.events import EventBuilder
from beampipe.runtime.ordering import Reorder

SHUFFLE = """\
nodes:
  src: {use: flownodes:Counter, params: {n: 300, streams: 2}}
  work: {use: flownodes:Tag, replicas: 4, params: {jitter: 0.003}}
  sink: {use: flownodes:Collect, params: {path: out.jsonl}ORDERED}
connections:
  - src -> work
  - work.out -> sink.in
"""


@pytest.mark.parametrize("ordered", [False, True])
def test_ordered_port_restores_id_order_after_four_replicas(folder: Path, ordered: bool) -> None:
    text = SHUFFLE.replace("ORDERED", ", ordered: true, reorder_buffer: 1000" if ordered else "")
    result, _ = run_pipeline(folder, text, window=8)
    assert result.exit_code == 0, result.errors
    got = rows(folder / "out.jsonl")
    for stream in ("s0", "s1"):
        ids = [r["id"] for r in got if r["stream"] == stream]
        assert sorted(ids) == list(range(1, 301))
        assert (ids == sorted(ids)) is ordered  # without ordered: true the replicas shuffle
    assert {r["meta"]["replica"] for r in got} == {0, 1, 2, 3}
    assert result.metrics["sink"].out_of_order == 0 and result.metrics["sink"].held == 0


def test_reorder_releases_on_next_id_watermark_end_and_overflow() -> None:
    r = Reorder(pipes=[0, 1], capacity=3)
    assert r.push(0, "s", 2, "m2") == []  # 1 may still come from pipe 1
    assert r.push(1, "s", 1, "m1") == [(1, "m1"), (0, "m2")]
    assert r.push(0, "s", 5, "m5") == []
    assert r.push(1, "s", 7, "m7") == [(0, "m5")]  # sparse ids: pipe 1 is past 5
    assert r.end(0, "s") == [(1, "m7")]
    assert r.end(1, "s") == []
    assert r.push(0, "s", 8, "late") == [(0, "late")]  # stream over: at once
    for i in (3, 5, 7):  # stream t: pipe 1 silent, so nothing is safe
        assert r.push(0, "t", i, f"t{i}") == []
    assert r.push(0, "t", 9, "t9") == [(0, "t3")]  # 4 > capacity 3: lowest goes on
    assert (r.out_of_order, r.held) == (1, 3)
    assert r.end(1, "t") == [(0, "t5"), (0, "t7"), (0, "t9")]
    assert r.held == 0


def test_reorder_gives_up_waiting_after_its_timeout_and_counts_the_late_ids() -> None:
    """Pipe 1 stalls (a hung replica) with ids 2 and 4: after ``timeout`` seconds without
    anything going on, what waits goes on; pipe 1 is no longer waited for until it delivers,
    and its ids, when they come, go on at once as late."""
    now = [100.0]
    r = Reorder(pipes=[0, 1], capacity=1024, timeout=30.0, clock=lambda: now[0])
    assert r.push(1, "s", 1, "m1") == [(1, "m1")]
    assert r.deadline is None
    for i in (3, 5, 6):
        assert r.push(0, "s", i, f"m{i}") == []  # 2 may still come from pipe 1
    assert r.deadline == 130.0
    now[0] = 129.9
    assert r.expire() == []
    now[0] = 130.0
    assert r.expire() == [(0, "m3"), (0, "m5"), (0, "m6")]
    assert (r.held, r.out_of_order, r.late, r.deadline) == (0, 2, 0, None)
    assert r.push(0, "s", 7, "m7") == [(0, "m7")]  # pipe 1 is not waited for
    assert r.push(1, "s", 2, "m2") == [(1, "m2")]  # late, at once
    assert r.push(1, "s", 4, "m4") == [(1, "m4")]
    assert r.late == 2
    assert r.push(0, "s", 9, "m9") == []  # pipe 1 delivers again: waited for again
    assert r.push(1, "s", 8, "m8") == [(1, "m8"), (0, "m9")]
    assert r.late == 2 and r.out_of_order == 2
    off = Reorder(pipes=[0, 1], capacity=1024, clock=lambda: now[0])
    assert off.push(0, "s", 3, "m3") == [] and off.deadline is None
    now[0] = 1e9
    assert off.expire() == []  # no timeout: waits for ever


def test_reorder_random_interleaving_of_monotonic_pipes() -> None:
    rng = random.Random(1)
    ids = list(range(1, 501))
    pipes: list[list[int]] = [[], [], []]
    for i in ids:
        pipes[rng.randrange(3)].append(i)
    r = Reorder(pipes=[0, 1, 2], capacity=1000)
    out = []
    cursors = [0, 0, 0]
    while any(c < len(p) for c, p in zip(cursors, pipes, strict=True)):
        k = rng.choice([i for i in range(3) if cursors[i] < len(pipes[i])])
        out += [m for _, m in r.push(k, "s", pipes[k][cursors[k]], pipes[k][cursors[k]])]
        cursors[k] += 1
    for k in range(3):
        out += [m for _, m in r.end(k, "s")]
    assert out == ids and r.out_of_order == 0


EVENTS = """\
nodes:
  a: {use: flownodes:Counter, params: {n: 20HOLD}}
  b: {use: flownodes:Counter, params: {n: 20, skip: [5]HOLD}}
  join:
    use: flownodes:Join
    params: {flag: incomplete.flag}
    events: {timeout: TIMEOUT, incomplete: POLICY}
  sink: {use: flownodes:Collect, params: {path: out.jsonl}}
connections:
  - a -> join.a
  - b -> join.b
  - join -> sink.in
"""


def events_pipeline(timeout: float, policy: str, hold: bool) -> str:
    held = ", hold_after: 10, hold_until: incomplete.flag" if hold else ""
    return EVENTS.replace("HOLD", held).replace("TIMEOUT", str(timeout)).replace("POLICY", policy)


def test_events_join_two_sources_and_deliver_the_incomplete_one_at_stream_end(
    folder: Path,
) -> None:
    result, _ = run_pipeline(folder, events_pipeline(600, "deliver", hold=False))
    assert result.exit_code == 0, result.errors
    got = {r["id"]: r for r in rows(folder / "out.jsonl")}
    assert sorted(got) == list(range(1, 21))
    for i, r in got.items():
        assert r["x"] == (i * i if i == 5 else 2 * i * i)
        assert r["meta"]["missing"] == (["b"] if i == 5 else [])
    m = result.metrics["join"]
    assert (m.messages_in, m.incomplete_events, m.dropped_events, m.held) == (39, 1, 0, 0)


def test_an_incomplete_event_goes_on_after_its_timeout(folder: Path) -> None:
    """Both sources hold their stream open after id 10 until the join has delivered event 5
    incomplete: only the timeout can release them (with a 30 s fallback in the source)."""
    result, _ = run_pipeline(folder, events_pipeline(0.2, "deliver", hold=True))
    assert result.exit_code == 0, result.errors
    order = [r["id"] for r in rows(folder / "out.jsonl")]
    assert sorted(order) == list(range(1, 21))
    assert order.index(5) < order.index(11)  # delivered before the sources went on
    assert result.metrics["join"].incomplete_events == 1


def test_drop_policy_drops_and_counts_the_incomplete_event(folder: Path) -> None:
    result, _ = run_pipeline(folder, events_pipeline(0.2, "drop", hold=False))
    assert result.exit_code == 0, result.errors
    assert sorted(r["id"] for r in rows(folder / "out.jsonl")) == [
        i for i in range(1, 21) if i != 5
    ]
    assert (result.metrics["join"].dropped_events, result.metrics["join"].incomplete_events) == (
        1,
        0,
    )


def test_event_builder_duplicate_and_expiry() -> None:
    b = EventBuilder(["a", "b"], timeout=1.0, incomplete="deliver")
    assert b.add("a", Message(stream="s", id=1), "t1", now=0.0) == []
    assert b.next_deadline == 1.0 and b.held == 1
    (dup,) = b.add("a", Message(stream="s", id=1), "t2", now=0.5)
    assert dup.event.missing == ("b",) and dup.tokens == ["t1"]
    assert b.expire(1.4) == []
    (late,) = b.expire(1.5)
    assert late.event.missing == ("b",) and late.tokens == ["t2"] and b.incomplete == 2
