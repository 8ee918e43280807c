"""The ``detector_sim`` source: streams, frames, content statistics, params, pacing, a CLI run."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import FakeClock
from conftest import beampipe as run_cli
from pydantic import ValidationError

import beampipe
from beampipe.nodes.pacing import Pacer
from beampipe.nodes.sim import detector as detector_sim
from beampipe.nodes.sim.detector import BACKGROUND, DetectorSim, ring_model
from beampipe.testing import run
from beampipe.worker.registry import resolve


def sim(**params) -> DetectorSim:
    return DetectorSim(DetectorSim.Params.model_validate(params), name="cam")


def flat(
    source: DetectorSim,
) -> list[beampipe.Message | beampipe.StreamStart | beampipe.EndOfStream]:
    """What the source sends, item by item (its bursts too)."""
    return run(source).items()


def items(**params) -> list[beampipe.Message | beampipe.StreamStart | beampipe.EndOfStream]:
    return flat(sim(**params))


def messages(**params) -> list[beampipe.Message]:
    return [item for item in items(**params) if isinstance(item, beampipe.Message)]


def test_registered_as_detector_sim():
    assert resolve("detector_sim") is DetectorSim


def test_streams_ids_and_next_stream_chain():
    got = items(shape=[16, 12], frames=4, streams=3)
    assert len(got) == 3 * (4 + 2)
    names = ["series_00001", "series_00002", "series_00003"]
    for k, name in enumerate(names):
        start, *msgs, end = got[k * 6 : (k + 1) * 6]
        assert isinstance(start, beampipe.StreamStart) and start.stream == name
        assert start.metadata == {
            "detector": "detector_sim",
            "shape": [16, 12],
            "dtype": "uint16",
            "frames": 4,
            "rate": "max",
            "signal": "image",
        }
        assert [(m.stream, m.id, m.metadata["frame"]) for m in msgs] == [
            (name, i, i - 1) for i in range(1, 5)
        ]
        assert all(set(m.data) == {"image"} for m in msgs)
        assert msgs[0].metadata == {"frame": 0, "signal": "image", "units": {"image": "counts"}}
        assert end == beampipe.EndOfStream(
            name, last_id=4, next_stream=names[k + 1] if k + 1 < 3 else None
        )
    json.dumps([item.metadata for item in got if not isinstance(item, beampipe.EndOfStream)])


def test_rate_max_yields_bursts_and_a_paced_rate_single_frames():
    n = detector_sim.BURST + 5
    got = list(sim(shape=[4, 4], frames=n).generate())
    assert [len(g) if isinstance(g, list) else type(g).__name__ for g in got] == [
        "StreamStart",
        detector_sim.BURST,
        5,
        "EndOfStream",
    ]
    assert [m.id for m in got[1] + got[2]] == list(range(1, n + 1))
    paced = list(sim(shape=[4, 4], frames=3, rate=1e6).generate())
    assert [type(g).__name__ for g in paced] == ["StreamStart", *["Message"] * 3, "EndOfStream"]


def test_prefix_and_defaults():
    p = DetectorSim.Params()
    assert (p.shape, p.dtype, p.rate, p.frames, p.streams, p.seed, p.pool) == (
        (2167, 2070),
        "uint16",
        "max",
        100,
        1,
        0,
        8,
    )
    assert p.frame_shape == (2167, 2070)
    assert sim(prefix="scan-", streams=2).stream_names() == ["scan-00001", "scan-00002"]


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "float32"])
def test_shape_and_dtype(dtype):
    msgs = messages(shape=[30, 50], dtype=dtype, frames=3)
    for m in msgs:
        image = m.data["image"]
        assert image.shape == (30, 50) and image.dtype == np.dtype(dtype)
        assert not image.flags.writeable
        assert image.min() >= 0 and image.max() > BACKGROUND
    if dtype == "float32":
        assert np.array_equal(msgs[0].data["image"], np.round(msgs[0].data["image"]))


def test_frame_bytes_gives_one_row_of_that_many_bytes():
    msgs = messages(frame_bytes=4096, dtype="uint32", shape=[5, 5], frames=2)
    assert all(m.data["image"].shape == (1, 1024) for m in msgs)
    assert all(m.data["image"].nbytes == 4096 for m in msgs)
    start = items(frame_bytes=4096, dtype="uint32", frames=1)[0]
    assert start.metadata["shape"] == [1, 1024]
    assert DetectorSim.Params(frame_bytes=10, dtype="uint8").frame_shape == (1, 10)


def test_the_pool_is_cycled_without_copies():
    source = sim(shape=[20, 20], frames=5, streams=2, pool=3)
    pool = source.pooled_frames()
    assert len(pool) == 3
    msgs = [m for m in flat(source) if isinstance(m, beampipe.Message)]
    assert [next(j for j, f in enumerate(pool) if f is m.data["image"]) for m in msgs] == [
        g % 3 for g in range(10)
    ]
    assert not any(np.array_equal(pool[0], f) for f in pool[1:])
    # no more frames are drawn than are ever sent
    assert len(sim(shape=[8, 8], frames=2, streams=1, pool=8).pooled_frames()) == 2


def test_content_follows_the_ring_model_with_poisson_noise():
    shape = (256, 256)
    lam = ring_model(shape)
    frames = np.stack(sim(shape=list(shape), frames=8, pool=8).pooled_frames()).astype(float)

    # rings: the model is far from flat, and the frames follow it
    assert lam.min() == pytest.approx(BACKGROUND) and lam.max() > 10 * BACKGROUND
    mean = frames.mean(axis=0)
    assert np.corrcoef(mean.ravel(), lam.ravel())[0, 1] > 0.9

    # flat background: variance = mean = BACKGROUND, within 5 standard errors of the sample
    flat = frames[:, np.abs(lam - BACKGROUND) < 1e-9]
    n = flat.size
    assert n > 5000
    m, v = flat.mean(), flat.var(ddof=1)
    assert abs(m - BACKGROUND) < 5 * np.sqrt(BACKGROUND / n)
    # var of the sample variance of Poisson(l) counts: (l + 2 l^2) / n
    assert abs(v - m) < 5 * np.sqrt((m + 2 * m * m) / n)

    # everywhere: (counts - lambda) / sqrt(lambda) has mean 0 and variance 1
    z = (frames - lam) / np.sqrt(lam)
    assert abs(z.mean()) < 5 / np.sqrt(z.size)
    assert abs(z.var() - 1) < 0.05


def test_counts_are_clipped_to_the_dtype(monkeypatch):
    monkeypatch.setattr(detector_sim, "BACKGROUND", 1000.0)
    small = sim(shape=[32, 32], dtype="uint8", frames=1).pooled_frames()[0]
    assert np.all(small == 255)
    wide = sim(shape=[32, 32], dtype="uint16", frames=1).pooled_frames()[0]
    assert wide.min() > 255 and abs(wide.mean() - 1000 - 1) < 50


def test_same_seed_same_frames_other_seed_other_frames():
    def frames(seed):
        return [m.data["image"] for m in messages(shape=[40, 40], frames=4, pool=4, seed=seed)]

    a, b, c = frames(7), frames(7), frames(8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not any(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"frame_bytes": 1001, "dtype": "uint16"}, "not a multiple of the 2-byte itemsize"),
        ({"frame_bytes": 6, "dtype": "float32"}, "not a multiple of the 4-byte itemsize"),
        ({"frame_bytes": 0}, "greater than 0"),
        ({"rate": 0}, "rate"),
        ({"rate": -5}, "rate"),
        ({"rate": "fast"}, "rate"),
        ({"rate": float("inf")}, "rate"),
        ({"dtype": "int16"}, "dtype"),
        ({"shape": [10, 10, 10]}, "shape"),
        ({"shape": [100]}, "shape"),
        ({"shape": [0, 10]}, "shape"),
        ({"frames": 0}, "frames"),
        ({"streams": 0}, "streams"),
        ({"pool": 0}, "pool"),
        ({"seed": -1}, "seed"),
        ({"nframes": 3}, "nframes"),
    ],
)
def test_bad_params_are_rejected(params, problem):
    with pytest.raises(ValidationError, match=problem):
        DetectorSim.Params.model_validate(params)


def test_rate_sets_a_deadline_schedule_that_catches_up_after_a_stall():
    fake = FakeClock()
    source = sim(shape=[4, 4], frames=3, streams=2, rate=10)
    source.pacer = fake.pacer()
    sent = []
    for item in source.generate():
        if isinstance(item, beampipe.Message):
            sent.append(round(fake.now, 9))
            if len(sent) == 2:
                fake.now += 0.25  # downstream stalls 250 ms after the second frame
    # due at 100.0, 100.1, ...: the schedule runs on across the two streams
    assert sent == [100.0, 100.1, 100.35, 100.35, 100.4, 100.5]
    assert [round(seconds, 9) for seconds in fake.sleeps] == [0.1, 0.05, 0.1]


def test_rate_max_never_sleeps():
    source = sim(shape=[4, 4], frames=5)
    source.pacer = Pacer(sleep=lambda seconds: pytest.fail("slept at rate max"))
    assert len(flat(source)) == 7


SINK = textwrap.dedent(
    '''
    import json

    import numpy as np

    import beampipe


    class Sink(beampipe.Worker):
        """Records stream, id, frame number, shape, dtype and sum of every frame."""

        outputs = ()

        class Params(beampipe.Params):
            path: str

        def __init__(self, params, name=""):
            super().__init__(params, name)
            self.frames = []
            self.starts = {}

        def on_stream_start(self, stream, metadata):
            self.starts[stream] = metadata

        def process(self, msg):
            image = msg.data["image"]
            self.frames.append([msg.stream, msg.id, msg.metadata["frame"], list(image.shape),
                                image.dtype.str, int(image.sum(dtype=np.int64))])

        def close(self):
            with open(self.params.path, "w") as f:
                json.dump({"frames": self.frames, "starts": self.starts}, f)
    '''
)


def test_a_pipeline_from_the_cli_delivers_the_frames(tmp_path: Path):
    (tmp_path / "mysink.py").write_text(SINK)
    out = tmp_path / "frames.json"
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        textwrap.dedent(
            f"""\
            name: detector-sim
            nodes:
              cam:
                use: detector_sim
                params: {{shape: [64, 64], frames: 20, streams: 2, pool: 3, seed: 5}}
              sink:
                use: mysink:Sink
                params: {{path: "{out}"}}
            connections:
              - cam.out -> sink.in
            """
        )
    )
    done = run_cli("run", str(pipeline), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    got = json.loads(out.read_text())

    expected = [
        [m.stream, m.id, m.id - 1, [64, 64], "<u2", int(m.data["image"].sum(dtype=np.int64))]
        for m in messages(shape=[64, 64], frames=20, streams=2, pool=3, seed=5)
    ]
    assert sorted(got["frames"]) == expected
    assert len({row[-1] for row in expected}) == 3  # three distinct pooled frames
    assert got["starts"]["series_00002"]["shape"] == [64, 64]
    assert "2/2 streams, 40 messages" in done.stderr
