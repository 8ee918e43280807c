"""Error policies: fail_fast (default), skip with a dead-letter file, transient-error retries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import beampipe, rows, run_pipeline

PIPELINE = """\
nodes:
  src: {use: flownodes:Counter, params: {n: 1000}}
  work: {use: flownodes:Flaky, OPTIONS}
  sink: {use: flownodes:Collect, params: {path: out.jsonl}}
connections:
  - src -> work
  - work.out -> sink.in
"""


def test_skip_records_each_bad_message_and_the_rest_go_on(folder: Path) -> None:
    text = PIPELINE.replace("OPTIONS", "params: {every: 100}, on_error: skip, replicas: 2")
    result, _ = run_pipeline(folder, "dead_letter: bad/dead.jsonl\n" + text)
    assert result.exit_code == 0, result.errors
    dead = rows(folder / "bad" / "dead.jsonl")
    assert sorted(d["id"] for d in dead) == list(range(100, 1001, 100))
    for d in dead:
        assert (d["node"], d["stream"]) == ("work", "s0")
        assert d["error"] == f"ValueError: bad point {d['id']}"
        assert "raise ValueError" in d["traceback"] and d["metadata"] == {}
    got = sorted(r["id"] for r in rows(folder / "out.jsonl"))
    assert got == [i for i in range(1, 1001) if i % 100]
    assert result.metrics["work"].skipped == 10


def test_fail_fast_stops_at_the_first_bad_id(folder: Path) -> None:
    (folder / "pipeline.yaml").write_text(PIPELINE.replace("OPTIONS", "params: {every: 100}"))
    (folder / "flownodes.py").write_text(
        (Path(__file__).parent / "nodes" / "flownodes.py").read_text()
    )
    done = beampipe("run", "pipeline.yaml", cwd=folder)
    assert done.returncode == 1
    assert "node 'work', stream 's0', message id 100: ValueError: bad point 100" in done.stderr
    assert not (folder / "pipeline.dead-letters.jsonl").exists()


def test_a_transient_error_succeeds_on_retry(folder: Path) -> None:
    options = "params: {transient_ids: [7, 500]}, retries: 2, retry_delay: 0.01"
    result, _ = run_pipeline(folder, PIPELINE.replace("OPTIONS", options))
    assert result.exit_code == 0, result.errors
    got = {r["id"]: r["meta"]["attempts"] for r in rows(folder / "out.jsonl")}
    assert sorted(got) == list(range(1, 1001))
    assert (got[7], got[500], got[8]) == (2, 2, 1)
    assert (result.metrics["work"].retries, result.metrics["work"].skipped) == (2, 0)


def test_retries_exhausted_fall_back_to_the_error_policy(folder: Path) -> None:
    options = "params: {transient_ids: [7], transient: 5}, retries: 2, on_error: skip"
    result, _ = run_pipeline(folder, PIPELINE.replace("OPTIONS", options))
    assert result.exit_code == 0, result.errors
    (dead,) = rows(folder / "pipeline.dead-letters.jsonl")
    assert (dead["id"], dead["error"]) == (7, "TransientError: not ready yet (3)")
    assert result.metrics["work"].retries == 2


@pytest.mark.parametrize("payload", [0, 100_000])
def test_corrupt_frames_are_counted_recorded_and_the_run_goes_on(
    folder: Path, monkeypatch: pytest.MonkeyPatch, payload: int
) -> None:
    """Every 100th message the source sends loses its last byte on the wire (the header
    frame for small messages, the array frame for large ones)."""
    monkeypatch.setenv(
        "BEAMPIPE_FAULTS", json.dumps([{"node": "src", "fault": "corrupt", "every": 100}])
    )
    text = PIPELINE.replace("OPTIONS", "params: {}").replace(
        "n: 1000", f"n: 1000, payload: {payload}"
    )
    result, _ = run_pipeline(folder, text)
    assert result.exit_code == 0, result.errors
    got = sorted(r["id"] for r in rows(folder / "out.jsonl"))
    assert got == [i for i in range(1, 1001) if i % 100]
    assert result.metrics["work"].corrupt_frames == 10
    dead = rows(folder / "pipeline.dead-letters.jsonl")
    assert len(dead) == 10 and {d["upstream"] for d in dead} == {"src#0.out"}
    assert all(
        d["node"] == "work" and d["error"].startswith("WireError: from src#0.out") for d in dead
    )
    if payload:  # the header was intact: the error names stream and id
        assert sorted(int(d["error"].split("id ")[1].split(":")[0]) for d in dead) == list(
            range(100, 1001, 100)
        )
