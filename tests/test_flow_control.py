"""Backpressure: a slow sink slows a fast source; what is in flight stays within the credit."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import NODES, Recorder, run_pipeline

from beampipe.config import load_pipeline
from beampipe.launch import Launcher

PIPELINE = """\
nodes:
  src: {use: flownodes:Counter, params: {n: 150, payload: PAYLOAD}}
  slow: {use: flownodes:Tag, params: {delay: 0.002}}
  sink: {use: flownodes:Collect, params: {path: out.jsonl}}
connections:
  - src -> slow
  - slow.out -> sink.in
"""


def test_message_credit_bounds_what_a_fast_source_has_in_flight(folder: Path) -> None:
    result, _ = run_pipeline(folder, PIPELINE.replace("PAYLOAD", "0"), window=6)
    assert result.exit_code == 0, result.errors
    src = result.metrics["src"]
    assert src.messages_out == 150 and result.metrics["sink"].messages_in == 150
    assert src.peak_in_flight == 6  # the window filled (the source was held back) ...
    assert src.in_flight == 0 and src.in_flight_bytes == 0  # ... and everything drained


def test_byte_credit_bounds_the_bytes_in_flight(folder: Path) -> None:
    window_bytes = 350_000  # three 100 kB messages
    text = PIPELINE.replace("PAYLOAD", "100_000")
    result, _ = run_pipeline(folder, text, window=32, window_bytes=window_bytes)
    assert result.exit_code == 0, result.errors
    src = result.metrics["src"]
    assert result.metrics["sink"].messages_in == 150
    assert 3 * 100_000 < src.peak_in_flight_bytes <= window_bytes
    assert src.peak_in_flight == 3


def test_a_message_larger_than_the_byte_window_still_moves_one_at_a_time(folder: Path) -> None:
    text = PIPELINE.replace("PAYLOAD", "100_000").replace("n: 150", "n: 20")
    result, _ = run_pipeline(folder, text, window=32, window_bytes=50_000)
    assert result.exit_code == 0, result.errors
    assert result.metrics["sink"].messages_in == 20
    assert result.metrics["src"].peak_in_flight == 1


def test_a_slow_sink_acknowledges_in_time_so_upstream_retains_about_a_window(
    folder: Path,
) -> None:
    """A sink taking 10 ms per message acknowledges (after its checkpoints) while it works
    through what it has received, so the worker before it retains (for redelivery) about its
    credit window, not the 64 messages the sink takes from its input in one go."""
    shutil.copy(NODES / "flownodes.py", folder)
    path = folder / "pipeline.yaml"
    path.write_text(
        PIPELINE.replace("PAYLOAD", "0")
        .replace("n: 150", "n: 300")
        .replace("delay: 0.002", "delay: 0")
        .replace("path: out.jsonl", "path: out.jsonl, delay: 0.01")
    )
    retained: list[int] = []

    class Watch(Recorder):
        def progress(self, node: str, replica: int, streams: dict[str, int]) -> None:
            if node == "slow":
                retained.append(launcher.metrics["slow", 0].retained)

    launcher = Launcher(load_pipeline(path), Watch(), window=4)
    result = launcher.run()
    assert result.exit_code == 0, result.errors
    assert result.metrics["sink"].messages_in == 300
    assert len(retained) >= 3  # progress every 0.5 s over about 3 s
    # credit (4) + what the sink processed in the 50 ms before its checkpoint (<= 5) + 1
    assert max(retained) <= 10, retained
