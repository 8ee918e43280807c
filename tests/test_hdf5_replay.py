"""The ``hdf5_replay`` source: plain datasets, the NeXus default plot, EIGER master files with
external links, bitshuffle-LZ4 compression, pacing, errors, a pipeline run and the example.

Every frame that comes out is compared with the same frame read directly with h5py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest
from conftest import NODES, REPO, FakeClock, beampipe, run_pipeline

import beampipe as bp
from beampipe.nodes.files.hdf5_replay import (
    DataFileMissing,
    DatasetNotFound,
    Hdf5Replay,
    NoFilesMatched,
    NotFrames,
)
from beampipe.testing import run
from beampipe.worker.registry import resolve

EXAMPLE = REPO / "examples" / "hdf5-replay"
BSLZ4 = hdf5plugin.Bitshuffle(cname="lz4")


# -- files -------------------------------------------------------------------------------------


def frames(n: int, shape=(6, 5), dtype="uint16", seed=0) -> np.ndarray:
    return np.random.default_rng(seed).poisson(20, size=(n, *shape)).astype(dtype)


def plain(path: Path, data: np.ndarray, dataset: str = "scan/images", **options) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset(dataset, data=data, **options)
    return path


def nexus(path: Path, data: np.ndarray, frame_time=None) -> Path:
    """NXroot@default -> entry_2@default -> plot@signal -> counts (units "counts"); a first
    entry and a second NXdata with other data, which the default chain must not pick."""
    with h5py.File(path, "w") as f:
        f.attrs["default"] = "entry_2"
        for name in ("entry_1", "entry_2"):
            entry = f.create_group(name)
            entry.attrs["NX_class"] = "NXentry"
            entry["title"] = f"title of {name}"
            for group in ("other", "plot"):
                g = entry.create_group(group)
                g.attrs["NX_class"] = "NXdata"
                g.attrs["signal"] = "counts"
                g["counts"] = data if (name, group) == ("entry_2", "plot") else data + 1
        f["entry_2"].attrs["default"] = "plot"
        f["entry_2/plot/counts"].attrs["units"] = "counts"
        f["entry_2/plot/counts"].attrs["long_name"] = "photon counts"
        if frame_time is not None:
            detector = f.create_group("entry_2/instrument/pilatus")
            detector.attrs["NX_class"] = "NXdetector"
            detector["frame_time"] = frame_time
            detector["frame_time"].attrs["units"] = "ms"
    return path


def eiger(folder: Path, stem: str, data: np.ndarray, per_file: int, frame_time=0.01) -> Path:
    """A DECTRIS-like master file (no NeXus default attributes) with external links
    data_000001 ... to bitshuffle-LZ4 compressed data files of ``per_file`` frames."""
    master = folder / f"{stem}_master.h5"
    with h5py.File(master, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        group = entry.create_group("data")
        group.attrs["NX_class"] = "NXdata"
        for k, start in enumerate(range(0, len(data), per_file), 1):
            name = f"{stem}_data_{k:06d}.h5"
            with h5py.File(folder / name, "w") as d:
                d.create_dataset(
                    "entry/data/data",
                    data=data[start : start + per_file],
                    chunks=(1, *data.shape[1:]),
                    **BSLZ4,
                )
            group[f"data_{k:06d}"] = h5py.ExternalLink(name, "/entry/data/data")
        detector = entry.create_group("instrument/detector")
        detector.attrs["NX_class"] = "NXdetector"
        detector["frame_time"] = frame_time
        detector["frame_time"].attrs["units"] = "s"
    return master


def source(paths, **params) -> Hdf5Replay:
    paths = [str(p) for p in paths] if isinstance(paths, list) else str(paths)
    return Hdf5Replay(Hdf5Replay.Params(paths=paths, **params), name="rep")


def split(items):
    starts = [i for i in items if isinstance(i, bp.StreamStart)]
    msgs = [i for i in items if isinstance(i, bp.Message)]
    ends = [i for i in items if isinstance(i, bp.EndOfStream)]
    return starts, msgs, ends


def assert_frames(msgs, expected: np.ndarray, key: str = "image") -> None:
    assert len(msgs) == len(expected)
    for k, (msg, frame) in enumerate(zip(msgs, expected, strict=True)):
        got = msg.data[key]
        assert (msg.id, msg.metadata["frame"]) == (k + 1, k)
        assert got.dtype == frame.dtype and got.shape == frame.shape
        assert np.array_equal(got, frame)


# -- what comes out ----------------------------------------------------------------------------


def test_registered_as_hdf5_replay():
    assert resolve("hdf5_replay") is Hdf5Replay


def test_plain_dataset_one_message_per_frame(tmp_path):
    data = frames(7, dtype="int32")
    path = plain(tmp_path / "scan_0001.h5", data, chunks=(2, 6, 5), compression="gzip")
    with h5py.File(path, "a") as f:
        f["scan/images"].attrs["units"] = "counts"
    start, msgs, end = split(run(source(path, dataset="scan/images")).items())
    with h5py.File(path) as f:
        expected = np.stack([f["scan/images"][k] for k in range(7)])
    assert_frames(msgs, expected)
    assert start[0].stream == "scan_0001"
    meta = start[0].metadata
    assert meta["file"] == str(path) and meta["dataset"] == "/scan/images"
    assert meta["parts"] == [{"file": str(path), "dataset": "/scan/images", "frames": 7}]
    assert (meta["shape"], meta["dtype"], meta["frames"]) == ([7, 6, 5], "int32", 7)
    assert (meta["signal"], meta["units"], meta["title"]) == ("image", "counts", "scan_0001")
    assert meta["attributes"] == {"units": "counts"}
    assert meta["filters"] == [{"id": 1, "name": "deflate"}]
    assert meta["frame_time"] is None
    assert msgs[0].metadata == {"frame": 0, "signal": "image", "units": {"image": "counts"}}
    assert end == [bp.EndOfStream("scan_0001", 7, None)]


def test_a_2d_dataset_is_one_frame(tmp_path):
    """Issue 17: a 516 x 516 Lambda frame came out as 516 one-row messages."""
    data = frames(1, shape=(516, 516), dtype="uint16")[0]
    path = plain(tmp_path / "lambda.h5", data, dataset="entry/data/data")
    start, msgs, end = split(run(source(path, dataset="entry/data/data")).items())
    assert len(msgs) == 1
    np.testing.assert_array_equal(msgs[0].data["image"], data)
    assert msgs[0].data["image"].dtype == data.dtype
    assert (start[0].metadata["shape"], start[0].metadata["frames"]) == ([1, 516, 516], 1)
    assert end == [bp.EndOfStream("lambda", 1, None)]


def test_a_2d_table_gives_1d_rows_and_key_names_them(tmp_path):
    """A 2-D dataset that is a table (NeXus interpretation 'spectrum', or rows: true) gives one
    message per row."""
    data = np.linspace(0, 1, 4 * 9).reshape(4, 9)
    path = plain(tmp_path / "spectra.h5", data, dataset="mca")
    _, msgs, _ = split(run(source(path, dataset="/mca", key="spectrum", rows=True)).items())
    assert_frames(msgs, data, key="spectrum")
    assert msgs[0].metadata == {"frame": 0, "signal": "spectrum"}
    with h5py.File(path, "a") as f:
        f["mca"].attrs["interpretation"] = "spectrum"
    _, msgs, _ = split(run(source(path, dataset="/mca", key="spectrum")).items())
    assert_frames(msgs, data, key="spectrum")


def test_a_1d_counter_read_by_rows_gives_one_value_per_message(tmp_path):
    """A 1-D dataset (a scan's counter, e.g. the I0 monitor of each frame) read with rows: true
    gives one 0-d message per value; without rows it is refused (test_not_frames)."""
    data = np.array([977851.16, 977012.5, 976433.25])
    path = plain(tmp_path / "scan.h5", data, dataset="primary/data/em1")
    start, msgs, end = split(
        run(source(path, dataset="primary/data/em1", key="i0", rows=True)).items()
    )
    assert [m.id for m in msgs] == [1, 2, 3]
    for msg, value in zip(msgs, data, strict=True):
        assert isinstance(msg.data["i0"], np.ndarray) and msg.data["i0"].shape == ()
        assert msg.data["i0"] == value and msg.data["i0"].dtype == np.float64
    assert (start[0].metadata["shape"], start[0].metadata["frames"]) == ([3], 3)
    assert end == [bp.EndOfStream("scan", 3, None)]


def lambda_like(path: Path, data: np.ndarray) -> Path:
    """A Lambda-like NeXus file: no 'default' nor NXdata 'signal' attributes; the frames in
    /entry/instrument/detector/data with the older attribute signal=1, bitshuffle-LZ4."""
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        detector = entry.create_group("instrument/detector")
        entry["instrument"].attrs["NX_class"] = "NXinstrument"
        detector.attrs["NX_class"] = "NXdetector"
        detector["count_time"] = 0.001
        detector.create_dataset("data", data=data, chunks=(1, *data.shape[1:]), **BSLZ4)
        detector["data"].attrs["signal"] = 1
        detector["description"] = "Lambda"
    return path


def test_the_older_nexus_signal_1_attribute_finds_the_frames(tmp_path):
    data = frames(3, shape=(12, 10), dtype="uint16", seed=4)
    path = lambda_like(tmp_path / "lambda_00001.nxs", data)
    start, msgs, _ = split(run(source(path)).items())
    assert_frames(msgs, data)
    assert start[0].metadata["dataset"] == "/entry/instrument/detector/data"


def test_nexus_default_plot_is_followed(tmp_path):
    data = frames(5, shape=(3, 4), dtype="uint32")
    path = nexus(tmp_path / "nx.nxs", data)
    start, msgs, _ = split(run(source(path)).items())
    assert_frames(msgs, data)
    meta = start[0].metadata
    assert meta["dataset"] == "/entry_2/plot/counts"
    assert meta["title"] == "title of entry_2"
    assert meta["attributes"] == {"units": "counts", "long_name": "photon counts"}
    assert msgs[0].metadata["units"] == {"image": "counts"}


def test_eiger_master_with_external_links_and_bitshuffle_lz4_is_one_stream(tmp_path):
    data = frames(11, shape=(16, 12), dtype="uint32", seed=3)
    master = eiger(tmp_path, "series_7", data, per_file=4)
    start, msgs, end = split(run(source(tmp_path / "*_master.h5")).items())
    expected = []
    for k in (1, 2, 3):
        with h5py.File(tmp_path / f"series_7_data_{k:06d}.h5") as f:
            ds = f["entry/data/data"]
            assert ds.id.get_create_plist().get_filter(0)[0] == 32008  # bitshuffle
            expected += [ds[i] for i in range(ds.shape[0])]
    assert_frames(msgs, np.stack(expected))
    meta = start[0].metadata
    assert start[0].stream == "series_7_master"
    assert meta["dataset"] == "/entry/data" and meta["shape"] == [11, 16, 12]
    assert [(Path(p["file"]).name, p["dataset"], p["frames"]) for p in meta["parts"]] == [
        ("series_7_data_000001.h5", "/entry/data/data", 4),
        ("series_7_data_000002.h5", "/entry/data/data", 4),
        ("series_7_data_000003.h5", "/entry/data/data", 3),
    ]
    assert meta["filters"] == [{"id": 32008, "name": "bitshuffle"}]
    assert meta["frame_time"] == 0.01
    assert meta["file"] == str(master)
    assert end == [bp.EndOfStream("series_7_master", 11, None)]


def test_streams_follow_the_patterns_and_chain(tmp_path):
    plain(tmp_path / "b.h5", frames(2), dataset="d")
    plain(tmp_path / "a.h5", frames(3), dataset="d")
    plain(tmp_path / "c.h5", frames(1), dataset="d")
    node = source([tmp_path / "c.h5", tmp_path / "*.h5"], dataset="d")
    starts, _, ends = split(run(node).items())
    assert [s.stream for s in starts] == ["c", "a", "b"]
    assert ends == [
        bp.EndOfStream("c", 1, "a"),
        bp.EndOfStream("a", 3, "b"),
        bp.EndOfStream("b", 2),
    ]


def test_frames_are_read_one_at_a_time(tmp_path, monkeypatch):
    """Each read asks h5py for one frame, never the whole dataset."""
    path = plain(tmp_path / "s.h5", frames(5), dataset="d")
    reads = []
    getitem = h5py.Dataset.__getitem__

    def spy(self, key, *args):
        reads.append(key)
        return getitem(self, key, *args)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    gen = source(path, dataset="d").generate()
    next(gen), next(gen)
    assert reads == [0]
    list(gen)
    assert reads == [0, 1, 2, 3, 4]


# -- pacing --------------------------------------------------------------------------------------


def paced(path, **params) -> tuple[Hdf5Replay, FakeClock]:
    node = source(path, **params)
    fake = FakeClock()
    node.pacer = fake.pacer()
    return node, fake


def test_realtime_waits_the_detector_frame_time_over_speedup(tmp_path):
    eiger(tmp_path, "s", frames(5), per_file=2, frame_time=0.01)
    node, fake = paced(tmp_path / "s_master.h5", pace="realtime", speedup=2)
    list(node.generate())
    assert fake.sleeps == pytest.approx([0.005] * 4)


def test_realtime_with_one_frame_time_per_frame_in_ms(tmp_path):
    path = nexus(tmp_path / "n.nxs", frames(4), frame_time=[10.0, 20.0, 30.0, 40.0])
    node, fake = paced(path, pace="realtime")
    gen = node.generate()
    next(gen), next(gen)  # StreamStart, frame 1 at t0
    fake.now += 0.005  # downstream took 5 ms
    list(gen)
    # frame k waits its own frame time (ms), counted from the previous frame's deadline
    assert fake.sleeps == pytest.approx([0.015, 0.03, 0.04])


def test_a_frame_time_dataset_can_be_named(tmp_path):
    path = plain(tmp_path / "s.h5", frames(3), dataset="d")
    with h5py.File(path, "a") as f:
        f["timing/period"] = 0.5
    node, fake = paced(path, dataset="d", pace="realtime", frame_time="timing/period")
    start = next(node.generate())
    assert start.metadata["frame_time"] == 0.5
    list(node.generate())
    assert fake.sleeps == pytest.approx([0.5, 0.5])


def test_fixed_rate_and_max(tmp_path):
    path = plain(tmp_path / "s.h5", frames(4), dataset="d")
    node, fake = paced(path, dataset="d", pace=8, speedup=100)
    list(node.generate())
    assert fake.sleeps == pytest.approx([0.125] * 3)
    node, fake = paced(path, dataset="d")
    list(node.generate())
    assert fake.sleeps == []


def test_realtime_without_a_frame_time_is_an_error(tmp_path):
    path = plain(tmp_path / "s.h5", frames(3), dataset="d")
    with pytest.raises(NotFrames, match="pace 'realtime' needs the frame time"):
        next(source(path, dataset="d", pace="realtime").generate())
    with h5py.File(path, "a") as f:
        f["t"] = [1.0, 2.0]
    with pytest.raises(NotFrames, match=r"frame_time /t has shape \(2,\), but there are 3"):
        next(source(path, dataset="d", pace="realtime", frame_time="t").generate())


def test_params_validation():
    with pytest.raises(ValueError):
        Hdf5Replay.Params(paths=["x"], pace="fast")
    with pytest.raises(ValueError):
        Hdf5Replay.Params(paths=["x"], pace=0)
    with pytest.raises(ValueError):
        Hdf5Replay.Params(paths=["x"], pace=float("inf"))
    with pytest.raises(ValueError):
        Hdf5Replay.Params(paths=["x"], key="")
    with pytest.raises(ValueError):
        Hdf5Replay.Params(paths=["x"], speedup=0)
    assert Hdf5Replay.Params(paths="x").paths == ["x"]


# -- errors ---------------------------------------------------------------------------------------


def test_no_file_matches(tmp_path):
    with pytest.raises(NoFilesMatched, match=r"rep: paths pattern '.*nothing\*\.h5' matches no"):
        source(tmp_path / "nothing*.h5")


def test_missing_dataset_names_node_file_dataset_and_what_is_there(tmp_path):
    path = plain(tmp_path / "s.h5", frames(2), dataset="scan/images")
    with pytest.raises(DatasetNotFound) as err:
        next(source(path, dataset="scan/image").generate())
    assert str(err.value) == (
        f"rep: {path}: no dataset /scan/image in the file (its parent holds: images); "
        "check 'dataset'"
    )
    with pytest.raises(DatasetNotFound, match=r"no dataset /other/x in the file \(its parent "):
        next(source(path, dataset="other/x").generate())


def test_a_group_or_a_file_without_default_plot_is_an_error(tmp_path):
    path = plain(tmp_path / "s.h5", frames(2), dataset="scan/images")
    with pytest.raises(DatasetNotFound, match="/scan is a group without a 'signal' attribute"):
        next(source(path, dataset="scan").generate())
    with pytest.raises(DatasetNotFound, match="/ has no 'default' attribute and none, so the"):
        next(source(path).generate())
    nx = nexus(tmp_path / "n.nxs", frames(2))
    with h5py.File(nx, "a") as f:
        del f.attrs["default"]
    with pytest.raises(DatasetNotFound, match=r"2 NXentry groups \(entry_1, entry_2\)"):
        next(source(nx).generate())


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (np.arange(5.0), r"shape \(5,\) and dtype float64"),
        (np.array([b"ab", b"cd"] * 3).reshape(3, 2), r"shape \(3, 2\) and dtype \|S2"),
    ],
)
def test_not_frames(tmp_path, data, problem):
    path = plain(tmp_path / "s.h5", data, dataset="d")
    with pytest.raises(NotFrames, match=rf"rep: .*s\.h5: dataset /d has {problem}; frames need"):
        next(source(path, dataset="d").generate())


def test_a_missing_data_file_is_named_before_any_frame(tmp_path):
    eiger(tmp_path, "s", frames(6), per_file=3)
    (tmp_path / "s_data_000002.h5").unlink()
    gen = source(tmp_path / "s_master.h5").generate()
    with pytest.raises(DataFileMissing) as err:
        next(gen)
    assert str(err.value) == (
        f"rep: {tmp_path / 's_master.h5'}: /entry/data/data_000002 is an external link to "
        f"s_data_000002.h5:/entry/data/data, but {tmp_path / 's_data_000002.h5'} does not "
        "exist; check that the data files are next to the master file"
    )


def test_a_data_file_that_disappears_mid_stream_stops_after_the_frames_sent(tmp_path):
    data = frames(6)
    eiger(tmp_path, "s", data, per_file=3)
    gen = source(tmp_path / "s_master.h5").generate()
    got = [next(gen) for _ in range(3)]  # StreamStart and frames 1, 2: the first file is open
    (tmp_path / "s_data_000002.h5").unlink()
    with pytest.raises(DataFileMissing, match=r"does not exist; .* \(3 frames of the stream were"):
        got.extend(gen)
    _, msgs, _ = split(got)
    assert_frames(msgs, data[:3])  # every frame of the first file went out


def test_a_file_gone_before_its_stream_or_not_hdf5(tmp_path):
    plain(tmp_path / "a.h5", frames(1), dataset="d")
    plain(tmp_path / "b.h5", frames(1), dataset="d")
    node = source(tmp_path / "*.h5", dataset="d")
    (tmp_path / "b.h5").unlink()
    gen = node.generate()
    assert len(split([next(gen) for _ in range(3)])[1]) == 1  # a.h5: start, frame, end
    with pytest.raises(DataFileMissing, match=r"rep: .*b\.h5: the file is gone"):
        next(gen)
    (tmp_path / "b.h5").write_bytes(b"not hdf5")
    with pytest.raises(OSError, match=r"rep: .*b\.h5: cannot open it as an HDF5 file"):
        next(source(tmp_path / "b.h5").generate())


def test_without_hdf5plugin_a_compressed_dataset_says_what_to_install(tmp_path):
    eiger(tmp_path, "s", frames(2), per_file=2)
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["hdf5plugin"] = None  # as if it were not installed
        from beampipe.nodes.files.hdf5_replay import FilterMissing, Hdf5Replay
        node = Hdf5Replay(Hdf5Replay.Params(paths=[{str(tmp_path / "s_master.h5")!r}]), "rep")
        try:
            next(node.generate())
        except FilterMissing as exc:
            print(exc)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "HDF5_PLUGIN_PATH"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "/entry/data/data_000001 is compressed with HDF5 filter 32008 (bitshuffle)" in (
        done.stdout
    )
    assert "install hdf5plugin: pip install 'beampipe[hdf5]'" in done.stdout


# -- in a pipeline -------------------------------------------------------------------------------


def test_pipeline_run_delivers_every_frame_of_every_kind_of_file(folder):
    data = folder / "data"
    data.mkdir()
    a = frames(9, shape=(20, 16), dtype="uint32", seed=1)
    b = frames(4, shape=(8, 8), dtype="float32", seed=2)
    c = frames(5, shape=(12, 10), dtype="uint16", seed=3)
    eiger(data, "a", a, per_file=4)
    nexus(data / "b.nxs", b)
    plain(data / "c.h5", c, dataset="entry/data/data", chunks=(1, 12, 10), **BSLZ4)
    shutil.copy(NODES / "capture.py", folder)
    result, _ = run_pipeline(
        folder,
        textwrap.dedent(
            """\
            nodes:
              frames:
                use: hdf5_replay
                params: {paths: [data/a_master.h5, data/b.nxs]}
              more:
                use: hdf5_replay
                params: {paths: data/c.h5, dataset: entry/data/data, key: frame, pace: 1000}
              sink:
                use: capture:Capture
                params: {path: got.pickle}
            connections:
              - frames -> sink.in
              - more -> sink.more
            """
        ),
    )
    assert result.exit_code == 0, result.errors
    from capture import load

    got = load(folder / "got.pickle")
    for stream, port, key, expected in (("a_master", "in", "image", a), ("b", "in", "image", b)):
        starts = [i for i in got if i[0] == "start" and i[1] == stream]
        assert starts and starts[0][2]["shape"] == list(expected.shape)
        msgs = [i for i in got if i[0] == "msg" and i[1] == stream]
        assert [m[2] for m in msgs] == list(range(1, len(expected) + 1))
        assert all(m[3] == port for m in msgs)
        for m, frame in zip(msgs, expected, strict=True):
            assert m[5][key].dtype == frame.dtype and np.array_equal(m[5][key], frame)
    with h5py.File(data / "c.h5") as f:
        msgs = [i for i in got if i[0] == "msg" and i[1] == "c"]
        assert [m[3] for m in msgs] == ["more"] * 5
        for k, m in enumerate(msgs):
            assert np.array_equal(m[5]["frame"], f["entry/data/data"][k])
    assert [i[1] for i in got if i[0] == "end"].count("c") == 1


def test_validate_reports_bad_params_with_file_and_line(tmp_path):
    (tmp_path / "p.yaml").write_text(
        textwrap.dedent(
            """\
            nodes:
              frames:
                use: hdf5_replay
                params:
                  paths: [x.h5]
                  pace: fast
              total:
                use: sum
            connections:
              - frames -> total
            """
        )
    )
    done = beampipe("validate", "p.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("error: p.yaml:6: node 'frames': param 'pace': ")
    assert "Traceback" not in done.stderr


# -- the example --------------------------------------------------------------------------------


def test_example_data_are_what_the_script_makes(tmp_path):
    sys.path.insert(0, str(EXAMPLE))
    try:
        import make_data
    finally:
        sys.path.remove(str(EXAMPLE))
    make_data.write(tmp_path)
    for name in ("series_0001_data_000001.h5", "series_0001_data_000002.h5"):
        with h5py.File(EXAMPLE / "data" / name) as kept, h5py.File(tmp_path / name) as made:
            assert np.array_equal(kept["entry/data/data"][()], made["entry/data/data"][()])
    with h5py.File(EXAMPLE / "data" / "series_0001_master.h5") as f:
        assert f["entry/instrument/detector/frame_time"][()] == make_data.FRAME_TIME
    assert sum(p.stat().st_size for p in (EXAMPLE / "data").iterdir()) < 200_000


def test_example_runs_and_the_sum_equals_numpy(tmp_path):
    done = beampipe("run", str(EXAMPLE / "pipeline.yaml"), "--set", "frames.pace=max", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "finished: 1/1 streams, 20 messages" in done.stderr
    expected = []
    with h5py.File(EXAMPLE / "data" / "series_0001_master.h5") as f:
        for k in (1, 2):
            expected.append(f[f"entry/data/data_{k:06d}"][()])
    expected = np.concatenate(expected)
    with h5py.File(tmp_path / "out" / "hdf5-replay.nxs") as f:
        entry = f["series_0001_master"]
        assert entry.attrs["default"] == "sum"
        assert np.array_equal(entry["frames/image"][()], expected)
        total = entry["sum/image"][()]
        assert total.shape == (64, 64) and total.dtype == np.float64
        assert np.array_equal(total, expected.sum(axis=0, dtype=np.float64))
        assert int(entry["sum/count"][()]) == 20
