"""Send synthetic detector frames to ASAP::O, as a detector's producer would (for trying out
``pipeline.yaml``).

``streams`` streams ``scan_0001``, ``scan_0002``, ... of ``frames`` uint16 frames each (the
Debye-Scherrer rings of beampipe's ``detector_sim`` with Poisson noise, seeded), every frame
with ``meta = {"dtype": "<u2", "shape": [rows, columns], "frame": n}``; each stream is finished
with the next one named as its successor. The token is read from ``ASAPO_TOKEN``.

The client is ``asapo_producer`` (``pip install 'beampipe[asapo]'``), or the module that
``BEAMPIPE_ASAPO_CLIENT`` selects, as for the connectors (see README.md).

    python produce_frames.py --endpoint asapo-services:8400 --beamtime 11012345
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from beampipe.nodes.asapo.client import load_client
from beampipe.nodes.sim.detector import ring_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="host:port of the ASAP::O services")
    parser.add_argument("--beamtime", required=True)
    parser.add_argument("--data-source", default="detector")
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--shape", type=int, nargs=2, default=(256, 256))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    api = load_client("producer", "produce_frames", "example")
    producer = api.create_producer(
        args.endpoint,
        "processed",
        args.beamtime,
        "auto",
        args.data_source,
        os.environ["ASAPO_TOKEN"],
        1,
        10000,
    )
    failures = []

    def callback(info: dict, err: Exception | None) -> None:
        if err is not None and not isinstance(err, api.AsapoServerWarning):
            failures.append(f"stream {info['stream']!r}, id {info['id']}: {err}")

    rng = np.random.default_rng(args.seed)
    expected = ring_model(tuple(args.shape))
    names = [f"scan_{k:04d}" for k in range(1, args.streams + 1)]
    for k, stream in enumerate(names):
        header = {"sample": "LaB6", "scan": k + 1}
        producer.send_stream_meta(header, stream=stream, callback=callback)
        for i in range(1, args.frames + 1):
            frame = rng.poisson(expected).astype(np.uint16)
            meta = {"dtype": frame.dtype.str, "shape": list(frame.shape), "frame": i - 1}
            path = f"processed/{args.data_source}/{stream}/{i:06d}"
            producer.send(i, path, frame, user_meta=meta, stream=stream, callback=callback)
        following = names[k + 1] if k + 1 < len(names) else None
        producer.send_stream_finished_flag(stream, args.frames, following, callback=callback)
    producer.wait_requests_finished(60000)
    for failure in failures:
        print(failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
