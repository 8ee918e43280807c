"""Record and replay: the ``recorder`` sink, the ``replay`` source and ``beampipe record``.

The round trip is checked message by message: stream names and metadata, ids, message
metadata, and every data item's type, dtype, shape and bytes, in the same order."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import NODES, REPO, FakeClock, beampipe, run_pipeline

import beampipe as bp
from beampipe.nodes.record.recorder import FORMAT, Recorder, link_name
from beampipe.nodes.record.replay import RecordingError, Replay
from beampipe.nodes.sim.detector import DetectorSim
from beampipe.testing import Harness, run
from beampipe.worker.registry import resolve


def assert_same_data(got: dict, expected: dict) -> None:
    assert list(got) == list(expected)
    for name, value in expected.items():
        other = got[name]
        if isinstance(value, bytes):
            assert isinstance(other, bytes) and other == value, name
        else:
            assert isinstance(other, np.ndarray), name
            assert (other.dtype.str, other.shape) == (value.dtype.str, value.shape), name
            assert other.tobytes() == value.tobytes(), name


def recorder(path: Path, **params) -> Recorder:
    return Recorder(Recorder.Params(path=str(path), **params), name="rec")


def replay(path: Path, **params) -> Replay:
    return Replay(Replay.Params(path=str(path), **params), name="play")


def msg(stream: str, i: int, data=None, t: float | None = None, port: str = "in", **meta):
    stamps = [["src", t]] if t is not None else []
    data = {"x": np.array(float(i))} if data is None else data
    return bp.Message(data=data, metadata=meta, stream=stream, id=i, timestamps=stamps, port=port)


def test_registered():
    assert resolve("recorder") is Recorder
    assert resolve("replay") is Replay


# -- the round trip through two pipelines ------------------------------------------------------


def copy_nodes(folder: Path) -> None:
    for name in ("capture.py", "variety.py"):
        shutil.copy(NODES / name, folder)


def test_record_then_replay_gives_identical_messages(folder):
    copy_nodes(folder)
    result, _ = run_pipeline(
        folder,
        textwrap.dedent(
            """\
            nodes:
              src:
                use: variety:Variety
                params: {n: 6}
              rec:
                use: recorder
                params: {path: out/rec.h5}
              direct:
                use: capture:Capture
                params: {path: direct.pickle}
            connections:
              - src -> rec.src
              - src -> direct.in
            """
        ),
    )
    assert result.exit_code == 0, result.errors
    result, _ = run_pipeline(
        folder,
        textwrap.dedent(
            """\
            nodes:
              play:
                use: replay
                params: {path: out/rec.h5, port: src, timestamps: recorded}
              again:
                use: capture:Capture
                params: {path: replayed.pickle}
            connections:
              - play -> again.in
            """
        ),
    )
    assert result.exit_code == 0, result.errors
    from capture import load

    direct, replayed = load(folder / "direct.pickle"), load(folder / "replayed.pickle")
    assert [i[:2] for i in replayed] == [i[:2] for i in direct]  # kinds and streams, in order
    assert len([i for i in direct if i[0] == "msg"]) == 12
    for a, b in zip(direct, replayed, strict=True):
        if a[0] == "start":
            assert b == a  # stream name and metadata
        elif a[0] == "msg":
            _, stream, msg_id, _, meta, data, stamps = a
            assert (b[1], b[2], b[4]) == (stream, msg_id, meta)
            assert_same_data(b[5], data)
            assert b[6][:-1] == stamps and b[6][-1][0] == "play"  # recorded, then the replay
    from variety import payload

    first = next(i for i in direct if i[0] == "msg" and i[1] == "scan/1" and i[2] == 3)
    assert_same_data(first[5], payload(0, 3))  # and what went in is what the source made


def test_each_recorded_port_replays_on_its_own(folder):
    copy_nodes(folder)
    run_pipeline(
        folder,
        textwrap.dedent(
            """\
            nodes:
              src: {use: variety:Variety, params: {n: 3}}
              tag: {use: flownodes:Tag}
              rec: {use: recorder, params: {path: rec.h5, origins: {tagged: tag.out}}}
            connections:
              - src -> rec.src
              - src -> tag
              - tag -> rec.tagged
            """
        ),
    )
    node = replay(folder / "rec.h5", port="tagged")
    msgs = [i for i in node.generate() if isinstance(i, bp.Message)]
    assert sorted((m.stream, m.id) for m in msgs) == sorted(
        (s, i) for s in ("scan/1", "plain") for i in (1, 2, 3)
    )
    assert all(m.metadata == {"replica": 0} and m.timestamps == [] for m in msgs)
    with h5py.File(folder / "rec.h5") as f:
        ports = f["streams/scan%2F1/ports"]
        assert ports["tagged"].attrs["origin"] == "tag.out"
        assert ports["src"].attrs["origin"] == ""
    with pytest.raises(RecordingError, match=r"holds the ports src, tagged; choose one with"):
        replay(folder / "rec.h5")
    with pytest.raises(RecordingError, match=r"no port 'x' in the recording \(its ports: src, "):
        replay(folder / "rec.h5", port="x")


# -- the file layout -----------------------------------------------------------------------------


def test_layout_stacks_rows_and_keeps_the_odd_ones_per_message(tmp_path):
    frames = [np.full((4, 3), i, dtype=np.uint16) for i in range(3)]
    items = [
        bp.StreamStart("a/b", {"title": "scan", "n": [1, 2]}),
        msg("a/b", 1, {"img": frames[0], "raw": b"ab"}, t=10.0, kind="first"),
        msg("a/b", 2, {"img": frames[1], "raw": b"abc"}, t=10.5),
        msg("a/b", 3, {"raw": b"cd", "img": frames[2].astype(np.int8)}, t=11.0),
        bp.EndOfStream("a/b", 3),
    ]
    run(recorder(tmp_path / "r.h5", flush_interval=0), items)
    with h5py.File(tmp_path / "r.h5") as f:
        assert (f.attrs["format"], f.attrs["version"]) == (FORMAT, 1)
        g = f["streams"][link_name("a/b")]
        assert g.name == "/streams/a%2Fb"
        assert dict(g.attrs) == {"stream": "a/b", "start_seq": 1, "end_seq": 5, "ended": True}
        assert json.loads(g["metadata"].asstr()[()]) == {"title": "scan", "n": [1, 2]}
        p = g["ports/in"]
        assert (p.attrs["port"], p.attrs["messages"], p.attrs["last_id"]) == ("in", 3, 3)
        assert list(p["id"]) == [1, 2, 3] and list(p["seq"]) == [2, 3, 4]
        assert [json.loads(s) for s in p["metadata"].asstr()] == [{"kind": "first"}, {}, {}]
        assert [json.loads(s) for s in p["timestamps"].asstr()] == [
            [["src", 10.0]],
            [["src", 10.5]],
            [["src", 11.0]],
        ]
        assert [json.loads(s) for s in p["items"].asstr()] == [
            [["img", 0], ["raw", 0]],
            [["img", 1], ["raw", -1]],
            [["raw", 1], ["img", -1]],
        ]
        img = p["data/img"]
        assert img.shape == (2, 4, 3) and img.dtype == np.uint16 and img.maxshape == (None, 4, 3)
        assert np.array_equal(img[()], np.stack(frames[:2]))
        assert dict(img.attrs) == {"name": "img", "kind": "array", "dtype": "<u2"}
        assert p["data/raw"][()].tobytes() == b"abcd" and p["data/raw"].attrs["kind"] == "bytes"
        assert p["per_message/1/raw"][()].tobytes() == b"abc"
        assert np.array_equal(p["per_message/2/img"][()], frames[2].astype(np.int8))
        assert all(t > 1e9 for t in p["received"][()])


def test_unicode_and_datetime_arrays_are_opaque_but_read_back_as_themselves(tmp_path):
    text, when = np.array(["µm", "eV"]), np.array(["2024-01-01"], dtype="datetime64[s]")
    run(
        recorder(tmp_path / "r.h5"),
        [bp.StreamStart("s", {}), msg("s", 1, {"text": text, "when": when})],
    )
    with h5py.File(tmp_path / "r.h5") as f:
        data = f["streams/s/ports/in/data"]
        assert data["text"].dtype == text.dtype and data["text"].attrs["dtype"] == "<U2"
        assert np.array_equal(data["when"][0], when)


def test_a_stream_that_never_ended_and_a_restarted_stream(tmp_path):
    rec = recorder(tmp_path / "r.h5")
    rec.on_stream_start("s", {"run": 1})
    rec.process(msg("s", 1))
    rec.on_stream_end("s")
    rec.on_stream_start("s", {"run": 2})
    rec.on_stream_start("open", {})
    rec.process(msg("s", 1))
    rec.process(msg("open", 4))
    rec.close()  # the run stopped: "s" (second) and "open" never ended
    with h5py.File(tmp_path / "r.h5") as f:
        assert list(f["streams"]) == ["s", "s%#2", "open"]
        assert [f["streams"][n].attrs["ended"] for n in f["streams"]] == [True, False, False]
    items = list(replay(tmp_path / "r.h5").generate())
    assert [(type(i).__name__, i.stream) for i in items] == [
        ("StreamStart", "s"),
        ("Message", "s"),
        ("EndOfStream", "s"),
        ("StreamStart", "s"),
        ("StreamStart", "open"),
        ("Message", "s"),
        ("Message", "open"),
        ("EndOfStream", "s"),
        ("EndOfStream", "open"),
    ]
    assert [i.metadata for i in items if isinstance(i, bp.StreamStart)] == [
        {"run": 1},
        {"run": 2},
        {},
    ]
    ends = [i for i in items if isinstance(i, bp.EndOfStream)]
    assert ends == [bp.EndOfStream("s", 1, "s"), bp.EndOfStream("s", 1, "open"),
                    bp.EndOfStream("open", 4, None)]  # fmt: skip


def test_bad_messages_name_node_stream_and_id_and_spoil_nothing(tmp_path):
    rec = recorder(tmp_path / "r.h5")
    rec.on_stream_start("s", {})
    rec.process(msg("s", 1))
    with pytest.raises(TypeError, match=r"rec: stream 's', id 2: the message metadata is not "):
        rec.process(msg("s", 2, when=object()))
    bad = {"x": np.array(2.0), "o": np.array([None], dtype=object)}
    with pytest.raises(TypeError, match=r"rec: stream 's', id 3: data 'o' is an object array"):
        rec.process(msg("s", 3, bad))
    rec.process(msg("s", 4))
    with pytest.raises(KeyError, match="stream 'other' was not started"):
        rec.process(msg("other", 1))
    rec.close()
    got = [i for i in replay(tmp_path / "r.h5").generate() if isinstance(i, bp.Message)]
    assert [(m.id, float(m.data["x"])) for m in got] == [(1, 1.0), (4, 4.0)]


def test_large_rows_are_written_at_once_and_small_ones_wait(tmp_path):
    rec = recorder(tmp_path / "r.h5", flush_interval=3600)
    harness = Harness(rec)
    frames = np.arange(2 * 1024 * 520, dtype=">u2").reshape(2, 1024, 520)  # 1.0 MiB each
    harness.feed(
        [bp.StreamStart("s", {})]
        + [msg("s", i, {"frame": frames[i - 1], "x": np.array(float(i))}) for i in (1, 2)]
    )
    data = rec.file["streams/s/ports/in/data"]
    assert data["frame"].shape == (2, 1024, 520) and data["frame"].dtype.str == ">u2"
    assert np.array_equal(data["frame"][()], frames)
    assert data["x"].shape == (0,)  # waiting
    harness.finish()
    got = run(replay(tmp_path / "r.h5")).messages()
    for i, m in enumerate(got):
        assert_same_data(m.data, {"frame": frames[i], "x": np.array(float(i + 1))})


def test_rows_wait_until_flushed_then_are_on_disk(tmp_path):
    rec = recorder(tmp_path / "r.h5", flush_interval=3600)
    rec.on_stream_start("s", {})
    for i in range(1, 4):
        rec.process(msg("s", i))
    ids = rec.file["streams/s/ports/in/id"]
    assert ids.shape == (0,)  # waiting
    rec.checkpoint()
    assert list(ids) == [1, 2, 3]
    rec.close()


# -- replay ----------------------------------------------------------------------------------------


def recording(path: Path, times: list[float]) -> Path:
    items = [bp.StreamStart("a", {}), bp.StreamStart("b", {})]
    items += [msg("a" if i % 2 else "b", i, t=t) for i, t in enumerate(times, 1)]
    run(recorder(path), [*items, bp.EndOfStream("a", len(times)), bp.EndOfStream("b", len(times))])
    return path


def paced(path: Path, **params) -> tuple[list, FakeClock]:
    node = replay(path, **params)
    fake = FakeClock()
    node.pacer = fake.pacer()
    return list(node.generate()), fake


def test_original_pace_keeps_the_recorded_gaps_across_streams(tmp_path):
    path = recording(tmp_path / "r.h5", [1000.0, 1000.5, 1002.0, 1001.5, 1003.0])
    items, fake = paced(path, pace="original")
    assert len(items) == 9
    # gaps to the latest recorded time so far; 1001.5 is earlier than 1002.0: sent at once
    assert fake.sleeps == pytest.approx([0.5, 1.5, 1.0])
    _, fake = paced(path, pace="original", speedup=4)
    assert fake.sleeps == pytest.approx([0.125, 0.375, 0.25])
    _, fake = paced(path, pace="original", max_gap=0.6)
    assert fake.sleeps == pytest.approx([0.5, 0.6, 0.6])
    _, fake = paced(path)
    assert fake.sleeps == []


def test_original_pace_does_not_drift(tmp_path):
    path = recording(tmp_path / "r.h5", [1000.0, 1001.0, 1002.0, 1003.0])
    node = replay(path, pace="original")
    fake = FakeClock()
    node.pacer = fake.pacer()
    gen = node.generate()
    next(gen), next(gen), next(gen)  # two StreamStarts, message 1 at t0
    fake.now += 0.25  # downstream took 0.25 s
    next(gen)
    fake.now += 5.0  # a stall: messages 3 and 4 are overdue
    list(gen)
    assert fake.sleeps == pytest.approx([0.75])


def test_replay_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"play: recording .*nothing\.h5 does not exist"):
        replay(tmp_path / "nothing.h5")
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(RecordingError, match=r"plain\.h5 is not a beampipe recording"):
        replay(tmp_path / "plain.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(OSError, match=r"play: cannot open recording .*text\.h5"):
        replay(tmp_path / "text.h5")
    path = recording(tmp_path / "r.h5", [1.0, 2.0])
    with h5py.File(path, "a") as f:
        del f["streams/b/ports/in/data/x"]
    with pytest.raises(RecordingError, match=r"play: .*r\.h5: /streams/b/ports/in \(message 0, "):
        list(replay(path).generate())


def test_an_empty_recording_replays_nothing(tmp_path):
    recorder(tmp_path / "r.h5").close()
    assert run(replay(tmp_path / "r.h5")).items() == []


def test_the_example_replay_pipeline_validates():
    done = beampipe("validate", "examples/record-replay/replay.yaml", cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "3 nodes, 3 connections" in done.stderr


def test_validate_reports_bad_params_with_file_and_line(tmp_path):
    (tmp_path / "p.yaml").write_text(
        textwrap.dedent(
            """\
            nodes:
              play:
                use: replay
                params: {path: r.h5, pace: fast}
              rec:
                use: recorder
                params: {path: out.h5, flush_interval: -1}
            connections:
              - play -> rec.x
            """
        )
    )
    done = beampipe("validate", "p.yaml", cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("error: p.yaml:4: node 'play': param 'pace': ")
    assert lines[1].startswith("p.yaml:7: node 'rec': param 'flush_interval': ")


# -- beampipe record ---------------------------------------------------------------------------

PIPELINE = """\
name: tiny
nodes:
  cam:
    use: detector_sim
    params: {shape: [8, 6], frames: 5, streams: 2, pool: 3}
  total:
    use: sum
    params: {every: 2}
connections:
  - cam.out -> total.in
"""


def test_beampipe_record_adds_a_recorder_on_the_given_ports(tmp_path):
    (tmp_path / "p.yaml").write_text(PIPELINE)
    done = beampipe(
        "record", "p.yaml", "--port", "cam", "--port", "total.out", "-o", "out/rec.h5",
        "--set", "cam.frames=4", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "output: out/rec.h5" in done.stderr
    path = tmp_path / "out" / "rec.h5"
    with h5py.File(path) as f:
        assert [g.attrs["stream"] for g in f["streams"].values()] == [
            "series_00001",
            "series_00002",
        ]
        ports = f["streams/series_00001/ports"]
        assert {n: p.attrs["origin"] for n, p in ports.items()} == {
            "cam_out": "cam.out",
            "total_out": "total.out",
        }
    sim = DetectorSim(DetectorSim.Params(shape=(8, 6), frames=4, streams=2, pool=3), "cam")
    expected = run(sim).items()
    got = run(replay(path, port="cam_out")).items()
    # A stream ends at the recorder when both of its ports have ended it, so the start of
    # series_00002 (from cam) may come before the end of series_00001: compare per stream.
    for stream in ("series_00001", "series_00002"):
        a = [i for i in expected if i.stream == stream]
        b = [i for i in got if i.stream == stream]
        assert [type(i) for i in b] == [type(i) for i in a]
        assert b[0] == a[0]  # StreamStart with its metadata
        for x, y in zip(a[1:-1], b[1:-1], strict=True):
            assert (y.stream, y.id, y.metadata) == (x.stream, x.id, x.metadata)
            assert_same_data(y.data, x.data)
        assert (b[-1].stream, b[-1].last_id) == (a[-1].stream, a[-1].last_id)
    sums = run(replay(path, port="total_out")).messages()
    final = [m for m in sums if m.metadata["final"]]
    assert [m.metadata["count"] for m in sums] == [2, 4, 4, 2, 4, 4]
    for m in final:
        frames = [e.data["image"] for e in expected if isinstance(e, bp.Message)]
        frames = frames[:4] if m.stream == "series_00001" else frames[4:]
        assert np.array_equal(m.data["image"], np.sum(frames, axis=0, dtype=np.float64))


@pytest.mark.parametrize(
    ("port", "problem"),
    [
        ("camera.out", "'camera.out': no node 'camera' (nodes: cam, total)"),
        ("cam.image", "'cam.image': 'cam' has no output port 'image' (its output ports: out)"),
    ],
)
def test_beampipe_record_refuses_unknown_ports(tmp_path, port, problem):
    (tmp_path / "p.yaml").write_text(PIPELINE)
    done = beampipe(
        "record", "p.yaml", "--port", port, "-o", "r.h5", cwd=tmp_path, env={"COLUMNS": "200"}
    )
    assert done.returncode == 2
    assert problem in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "r.h5").exists()
