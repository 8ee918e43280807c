"""Per-message CPU time of what the runtime does with 1 KiB results, in-process: a worker's
``process`` returning one message (the common case), or a list of one (the general path), and
a source's ``generate`` yielding one message at a time; driven by :mod:`beampipe.testing`, so
the emitter, the source loop and the wire encoding run as in a node process, without sockets.

    python bench/result_checks.py [--n 100000] [--repeat 5]

Prints one JSON line: the median µs of CPU per message of each case. To compare two versions,
run it alternately with ``PYTHONPATH=<other checkout>/src``. Without the sockets, the share of
the checks in these figures is larger than in a pipeline (where a 1 KiB message costs about
28 µs of CPU per node).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import beampipe
from beampipe import EndOfStream, Message, StreamStart
from beampipe.testing import Harness

BLOB = np.zeros(1024, np.uint8)


class One(beampipe.Worker):
    def process(self, msg: Message) -> Message:
        return Message(data={"blob": msg.data["blob"]}, metadata={"n": 1})


class ListOfOne(beampipe.Worker):
    def process(self, msg: Message) -> list[Message]:
        return [Message(data={"blob": msg.data["blob"]}, metadata={"n": 1})]


class Yields(beampipe.Source):
    class Params(beampipe.Params):
        n: int = 1000

    def generate(self):  # type: ignore[no-untyped-def]
        yield StreamStart("s", {})
        for i in range(1, self.params.n + 1):
            yield Message(data={"blob": BLOB}, metadata={"n": 1}, stream="s", id=i)
        yield EndOfStream("s", self.params.n)


def per_message(case: str, n: int) -> float:
    """µs of CPU per message of one run of ``case`` over ``n`` messages."""
    if case == "source":
        harness = Harness(Yields, {"n": n}, check_finite=False)
        t0 = time.process_time()
        harness.generate()
    else:
        harness = Harness(One if case == "worker" else ListOfOne, check_finite=False)
        items = [Message(data={"blob": BLOB}, stream="s", id=i) for i in range(1, n + 1)]
        t0 = time.process_time()
        harness.feed(items)
    return (time.process_time() - t0) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cases = ("worker", "worker_list", "source")
    times: dict[str, list[float]] = {case: [] for case in cases}
    for _ in range(args.repeat):
        for case in cases:
            times[case].append(per_message(case, args.n))
    print(json.dumps({case: round(statistics.median(t), 3) for case, t in times.items()}))


if __name__ == "__main__":
    main()
