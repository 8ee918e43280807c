"""The batch hook of the SDK (``Worker.max_batch``, ``max_wait``, ``process_batch``): batches
fill up to ``max_batch`` in arrival order, what waits goes before its stream ends, each message
is acknowledged and counted on its own, and a batch call that raises is redone one message at a
time under the node's ``on_error`` (only the bad message is skipped). In a real pipeline
(``beampipe run`` of separate processes) and in ``beampipe.testing``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import NODES, beampipe, rows

import beampipe as bp
from beampipe.testing import Harness, run

PIPELINE = """\
dead_letter: dead.jsonl
nodes:
  src: {use: flownodes:Counter, params: {n: 203, burst: 16}}
  work: {use: batching:BatchTag, params: PARAMS, on_error: skip}
  sink: {use: capture:Capture, params: {path: out.pickle}}
connections:
  - src -> work
  - work.out -> sink.in
"""


def _run(folder: Path, params: str) -> list[tuple]:
    for name in ("flownodes.py", "batching.py", "capture.py"):
        shutil.copy(NODES / name, folder)
    (folder / "pipeline.yaml").write_text(PIPELINE.replace("PARAMS", params))
    result = beampipe("run", "pipeline.yaml", cwd=folder)
    assert result.returncode == 0, result.stderr
    from capture import load

    return load(folder / "out.pickle")


def test_batches_fill_in_order_and_go_before_the_stream_ends(folder: Path) -> None:
    # max_wait 60 s: only a full batch or the stream's end lets messages go
    got = _run(folder, "{max_batch: 8, max_wait: 60}")
    assert got[0][0] == "start" and got[-1] == ("end", "s0")
    msgs = [item for item in got if item[0] == "msg"]
    assert [m[2] for m in msgs] == list(range(1, 204))
    assert [m[4]["batch"] for m in msgs] == [8] * 200 + [3] * 3
    assert [m[4]["call"] for m in msgs] == [i // 8 + 1 for i in range(203)]


def test_a_failing_batch_is_redone_one_by_one_and_only_bad_messages_skipped(
    folder: Path,
) -> None:
    got = _run(folder, "{max_batch: 8, max_wait: 60, every: 50}")
    ids = [item[2] for item in got if item[0] == "msg"]
    assert ids == [i for i in range(1, 204) if i % 50]
    assert sorted(d["id"] for d in rows(folder / "dead.jsonl")) == [50, 100, 150, 200]
    # the messages of a failed batch went one by one; the others in full batches
    sizes = {item[2]: item[4]["batch"] for item in got if item[0] == "msg"}
    assert all(sizes[i] == (1 if (i - 1) // 8 in {6, 12, 18, 24} else 8) for i in sizes if i <= 200)


def test_harness_batches_what_one_feed_brings() -> None:
    from batching import BatchTag

    harness = Harness(BatchTag, {"max_batch": 4})
    items = [bp.Message(data={"x": float(i)}, stream="s", id=i) for i in range(1, 7)]
    first = harness.feed(items[:5]).messages()
    assert [m.metadata["batch"] for m in first] == [4, 4, 4, 4, 1]
    second = harness.feed(items[5:]).messages()
    assert [(m.id, m.metadata["batch"]) for m in second] == [(6, 1)]
    harness.finish()


def test_a_result_list_of_another_length_is_a_result_error() -> None:
    from batching import BatchTag

    items = [bp.Message(data={"x": 1.0}, stream="s", id=i) for i in range(1, 3)]
    with pytest.raises(bp.ResultError, match=r"process_batch\(\) returned 3 results for 2"):
        run(BatchTag, items, params={"max_batch": 2, "wrong_length": True})


@pytest.fixture(autouse=True)
def _nodes_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(NODES))
