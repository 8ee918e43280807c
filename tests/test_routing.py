"""Replicas and routing: by_key, round_robin by credit, broadcast; metrics of a run."""

from __future__ import annotations

import math
from collections import Counter as Tally
from pathlib import Path

from conftest import rows, run_pipeline


def pipeline(worker: str, replicas: int, connect: str, n: int = 200, streams: int = 2) -> str:
    return f"""\
nodes:
  src: {{use: flownodes:Counter, params: {{n: {n}, streams: {streams}}}}}
  work: {{use: "{worker}", replicas: {replicas}}}
  sink: {{use: flownodes:Collect, params: {{path: out.jsonl}}}}
connections:
  - {connect}
  - work.out -> sink.in
"""


def test_by_key_keeps_blocks_of_ten_on_one_replica(folder: Path) -> None:
    keyed = "{connect: src -> work, routing: by_key, key: id // 10}"
    result, _ = run_pipeline(folder, pipeline("flownodes:Diff", 3, keyed), window=4)
    assert result.exit_code == 0, result.errors
    got = rows(folder / "out.jsonl")
    assert len(got) == 400
    owner: dict[tuple[str, int], set[int]] = {}
    for r in got:
        owner.setdefault((r["stream"], r["id"] // 10), set()).add(r["meta"]["replica"])
    assert all(len(reps) == 1 for reps in owner.values())
    assert {next(iter(r)) for r in owner.values()} == {0, 1, 2}
    assert all(next(iter(owner[s, b])) == b % 3 for s, b in owner)

    single, _ = run_pipeline(folder, pipeline("flownodes:Diff", 1, "src -> work"))
    assert single.exit_code == 0
    reference = {(r["stream"], r["id"]): r["dx"] for r in rows(folder / "out.jsonl")}
    keyed_dx = {(r["stream"], r["id"]): r["dx"] for r in got}
    assert keyed_dx.keys() == reference.keys()
    for k, dx in reference.items():
        assert (math.isnan(dx) and math.isnan(keyed_dx[k])) or dx == keyed_dx[k], k


def test_round_robin_splits_blocks_over_replicas(folder: Path) -> None:
    """Without by_key the stateful worker sees blocks split over replicas (so the by_key
    test above can fail)."""
    result, _ = run_pipeline(folder, pipeline("flownodes:Diff", 3, "src -> work"), window=4)
    assert result.exit_code == 0
    owners: dict[tuple[str, int], set[int]] = {}
    for r in rows(folder / "out.jsonl"):
        owners.setdefault((r["stream"], r["id"] // 10), set()).add(r["meta"]["replica"])
    assert any(len(reps) > 1 for reps in owners.values())


def test_round_robin_gives_a_slow_replica_fewer_messages(folder: Path) -> None:
    text = pipeline("flownodes:Tag", 2, "src -> work", n=300, streams=1).replace(
        '"flownodes:Tag", replicas: 2}',
        '"flownodes:Tag", replicas: 2, params: {delay: 0.0005, slow_replica: 1}}',
    )
    result, _ = run_pipeline(folder, text, window=4)
    assert result.exit_code == 0, result.errors
    got = rows(folder / "out.jsonl")
    assert sorted(r["id"] for r in got) == list(range(1, 301))  # each exactly once
    per_replica = Tally(r["meta"]["replica"] for r in got)
    assert per_replica[1] * 3 < per_replica[0], per_replica


def test_broadcast_sends_every_message_to_every_replica(folder: Path) -> None:
    text = pipeline("flownodes:Tag", 3, "{connect: src -> work, routing: broadcast}", n=50)
    result, _ = run_pipeline(folder, text, window=4)
    assert result.exit_code == 0, result.errors
    got = Tally((r["stream"], r["id"], r["meta"]["replica"]) for r in rows(folder / "out.jsonl"))
    assert got == {(s, i, rep): 1 for s in ("s0", "s1") for i in range(1, 51) for rep in range(3)}
    assert result.sent["src"] == {"out": 100}
    assert result.sent["work"] == {"out": 300}


def test_metrics_count_messages_bytes_and_latency(folder: Path) -> None:
    result, _ = run_pipeline(folder, pipeline("flownodes:Tag", 2, "src -> work", n=100))
    assert result.exit_code == 0, result.errors
    m = result.metrics
    assert (m["src"].messages_out, m["work"].messages_in, m["work"].messages_out) == (200, 200, 200)
    assert m["sink"].messages_in == 200 and m["sink"].messages_out == 0
    assert m["src"].bytes_out == m["work"].bytes_in > 200 * 8
    assert m["sink"].latency.total == 200 and m["work"].process_time.total == 200
    assert 0 < m["sink"].latency.quantile(0.5) <= m["sink"].latency.quantile(0.99) < 60
    assert m["sink"].in_flight == 0 and m["src"].in_flight == 0
