"""Running a benchmark's pipeline without a display: :func:`run_quietly`, and the rate at a
sink that recorded its arrival times (``bench_nodes:Recorder``), :func:`sink_rate`."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from beampipe.config import load_pipeline
from beampipe.launch import Launcher


class Quiet:
    """A launcher observer that keeps the failures only."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def progress(self, node: str, replica: int, streams: dict[str, int]) -> None:
        pass

    def stream_end(self, node: str, replica: int, report: dict) -> None:
        pass

    def failure(self, text: str) -> None:
        self.failures.append(text)


def run_quietly(path: Path) -> None:
    """Run the pipeline file ``path``; exit the benchmark with its errors if it fails."""
    observer = Quiet()
    result = Launcher(load_pipeline(path), observer).run()
    if result.exit_code != 0:
        sys.exit(f"the pipeline failed: {result.errors} {observer.failures}")


def sink_rate(times: Path) -> float:
    """Messages/s at the sink from the arrival times ``bench_nodes:Recorder`` saved in
    ``times`` (first column, seconds): from the first message to the last."""
    t = np.load(times)[:, 0]
    return (len(t) - 1) / (t[-1] - t[0])
