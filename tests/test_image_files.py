"""The ``image_files`` source, replay mode: every format it claims, on real files (NSLS-II LiX
CBF and HDF5, NSLS-II XPD TIFF) and on small files written here with fabio and h5py; streams by
file, folder and pattern; headers; dead letters; pacing; a pipeline run.

Every frame that comes out is compared with the same frame read directly with fabio or h5py."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import fabio
import h5py
import hdf5plugin
import numpy as np
import pytest
from conftest import NODES, REPO, FakeClock, run_pipeline
from fabio.adscimage import AdscImage
from fabio.bruker100image import Bruker100Image
from fabio.cbfimage import CbfImage
from fabio.edfimage import EdfImage
from pydantic import ValidationError
from test_hdf5_replay import eiger, lambda_like

import beampipe as bp
from beampipe.nodes.images.source import ImageFiles, NoFilesMatched
from beampipe.testing import run

DATA = REPO.parent / "shared" / "data"  # the project's shared/ beside the clone (read-only)
LIX = DATA / "saxs-waxs-lix"
XPD = DATA / "powder-ni-xpd"
BSLZ4 = hdf5plugin.Bitshuffle(cname="lz4")


def source(paths, **params) -> ImageFiles:
    paths = [str(p) for p in paths] if isinstance(paths, list) else str(paths)
    return ImageFiles(ImageFiles.Params(paths=paths, **params), name="img")


def split(items):
    """StreamStarts, Messages and (stream, last_id, next_stream) of the EndOfStreams."""
    starts = [i for i in items if isinstance(i, bp.StreamStart)]
    msgs = [i for i in items if isinstance(i, bp.Message)]
    ends = [(i.stream, i.last_id, i.next_stream) for i in items if isinstance(i, bp.EndOfStream)]
    return starts, msgs, ends


def same(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert np.array_equal(got, expected)


def frames(n: int, shape=(12, 10), dtype="uint16", seed=0) -> np.ndarray:
    return np.random.default_rng(seed).poisson(30, size=(n, *shape)).astype(dtype)


# -- real files --------------------------------------------------------------------------------


def test_real_pilatus_cbf_and_perkinelmer_tiff_equal_fabio():
    cbf, tiff = LIX / "Sol-b_000018_WAXS1.cbf", XPD / "Ni_img_file.tiff"
    starts, msgs, ends = split(run(source([cbf, tiff])).items())
    assert [m.stream for m in msgs] == ["Sol-b_000018_WAXS1", "Ni_img_file"]
    for msg, path in zip(msgs, (cbf, tiff), strict=True):
        expected = fabio.open(str(path))
        same(msg.data["image"], expected.data)
        assert msg.id == 1
        assert msg.metadata == {"frame": 0, "file": str(path), "file_frame": 0, "signal": "image"}
    assert msgs[0].data["image"].shape == (619, 487) and msgs[0].data["image"].dtype == np.int32
    assert msgs[1].data["image"].shape == (2048, 2048)
    cbf_meta = starts[0].metadata
    assert cbf_meta["format"] == "cbf" and cbf_meta["file"] == str(cbf)
    assert cbf_meta["header"] == {k: str(v) for k, v in fabio.open(str(cbf)).header.items()}
    assert "PILATUS3" in cbf_meta["header"]["_array_data.header_contents"]
    assert starts[1].metadata["format"] == "tif"
    assert ends == [
        ("Sol-b_000018_WAXS1", 1, "Ni_img_file"),
        ("Ni_img_file", 1, None),
    ]


def test_real_bluesky_hdf5_frame_equals_h5py():
    path = LIX / "AgBH-2020Aug16.h5"
    name = "AgBH_2020Aug16/primary/data/pil1M_image"
    starts, msgs, _ = split(run(source(path, dataset=name)).items())
    with h5py.File(path) as f:
        expected = f[name][0]
    assert len(msgs) == 1
    same(msgs[0].data["image"], expected)
    assert starts[0].metadata["header"] == {"dataset": "/" + name}
    assert starts[0].metadata["format"] == "hdf5"


def test_real_hdf5_without_dataset_names_the_problem():
    results = run(source(LIX / "AgBH-2020Aug16.h5"))
    _, msgs, ends = split(results.items())
    assert msgs == [] and ends == [("AgBH-2020Aug16", 0, None)]
    [(item, reason)] = results.dead_letters
    assert item.metadata["file"] == str(LIX / "AgBH-2020Aug16.h5")
    assert "set 'dataset'" in reason and "AgBH-2020Aug16.h5" in reason


# -- formats written here ----------------------------------------------------------------------


def test_edf_multiframe_edf_adsc_and_cbf_written_with_fabio(tmp_path):
    data = frames(6, dtype="uint16", seed=1)
    EdfImage(data=data[0], header={"ExposureTime": "0.5"}).write(str(tmp_path / "a.edf"))
    multi = EdfImage(data=data[1], header={"frame_no": "0"})
    for k in (2, 3):
        multi.append_frame(data=data[k], header={"frame_no": str(k - 1)})
    multi.write(str(tmp_path / "b.edf"))
    AdscImage(data=data[4], header={"TIME": "1.0"}).write(str(tmp_path / "c.img"))
    CbfImage(data=data[5].astype(np.int32)).write(str(tmp_path / "d.cbf"))
    paths = [tmp_path / n for n in ("a.edf", "b.edf", "c.img", "d.cbf")]
    starts, msgs, _ = split(run(source(paths, header="message")).items())
    assert [(m.stream, m.id, m.metadata["file_frame"]) for m in msgs] == [
        ("a", 1, 0),
        ("b", 1, 0),
        ("b", 2, 1),
        ("b", 3, 2),
        ("c", 1, 0),
        ("d", 1, 0),
    ]
    for msg in msgs:
        image = fabio.open(msg.metadata["file"])
        one = image if image.nframes == 1 else image.getframe(msg.metadata["file_frame"])
        same(msg.data["image"], one.data)
    same(msgs[3].data["image"], data[3])
    assert msgs[2].metadata["header"]["frame_no"] == "1"  # the frame's own header
    assert msgs[0].metadata["header"]["ExposureTime"] == "0.5"
    assert [s.metadata["format"] for s in starts] == ["edf", "edf", "dtrek", "cbf"]
    assert all("header" not in s.metadata for s in starts)


def test_bruker_written_with_fabio(tmp_path):
    """Bruker's ``.sfrm`` (format 100), each frame equal to fabio's reading and to what was
    written."""
    data = frames(2, shape=(16, 12), dtype="int32", seed=3)
    for k in (0, 1):
        Bruker100Image(data=data[k]).write(str(tmp_path / f"b_{k}.sfrm"))
    starts, msgs, _ = split(run(source(tmp_path / "b_*.sfrm", stream_by="folder")).items())
    assert [(m.stream, m.id, m.metadata["file"]) for m in msgs] == [
        (tmp_path.name, k + 1, str(tmp_path / f"b_{k}.sfrm")) for k in (0, 1)
    ]
    for k, msg in enumerate(msgs):
        same(msg.data["image"], fabio.open(msg.metadata["file"]).data)
        same(msg.data["image"], data[k])
    assert [s.metadata["format"] for s in starts] == ["bruker100"]


def test_compressed_hdf5_stack_eiger_master_and_lambda_files(tmp_path):
    stack = frames(5, shape=(16, 12), dtype="uint32", seed=2)
    with h5py.File(tmp_path / "stack.h5", "w") as f:
        f.create_dataset("entry/data/data", data=stack, chunks=(1, 16, 12), **BSLZ4)
        f["entry"].attrs["NX_class"] = "NXentry"
        f["entry/data"].attrs.update({"NX_class": "NXdata", "signal": "data"})
    eiger_data = frames(7, shape=(16, 12), dtype="uint32", seed=3)
    eiger(tmp_path, "series", eiger_data, per_file=3)
    lambda_data = frames(1, shape=(20, 18), dtype="uint16", seed=4)[0]
    lambda_like(tmp_path / "lambda.nxs", lambda_data)  # a 2-D dataset: one frame
    paths = [tmp_path / "stack.h5", tmp_path / "series_master.h5", tmp_path / "lambda.nxs"]
    starts, msgs, _ = split(run(source(paths, dataset=None)).items())
    by_stream: dict[str, list[bp.Message]] = {}
    for m in msgs:
        by_stream.setdefault(m.stream, []).append(m)
    with h5py.File(tmp_path / "stack.h5") as f:
        assert f["entry/data/data"].id.get_create_plist().get_filter(0)[0] == 32008  # bslz4
        for k, m in enumerate(by_stream["stack"]):
            same(m.data["image"], f["entry/data/data"][k])
    assert [m.id for m in by_stream["series_master"]] == list(range(1, 8))
    for m, frame in zip(by_stream["series_master"], eiger_data, strict=True):
        same(m.data["image"], frame)
    [one] = by_stream["lambda"]
    with h5py.File(tmp_path / "lambda.nxs") as f:
        same(one.data["image"], f["entry/instrument/detector/data"][()])
    header = starts[2].metadata["header"]
    assert header["dataset"] == "/entry/instrument/detector/data"
    assert header["instrument/detector/count_time"] == 0.001
    assert header["instrument/detector/description"] == "Lambda"


# -- streams -----------------------------------------------------------------------------------


def cbf_series(folder: Path, scan: str, numbers, seed=0) -> dict[int, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for k in numbers:
        frame = frames(1, dtype="int32", seed=seed + k)[0]
        CbfImage(data=frame).write(str(folder / f"{scan}_{k}.cbf"))
        out[k] = frame
    return out


def test_stream_by_pattern_names_the_scan_and_orders_by_frame_number(tmp_path):
    a = cbf_series(tmp_path, "sampleA", [9, 10, 11, 8])
    b = cbf_series(tmp_path, "sampleB", [1, 2], seed=50)
    starts, msgs, ends = split(
        run(source(tmp_path / "*.cbf", stream_by="{scan}_{frame:d}.cbf")).items()
    )
    assert [(m.stream, m.id, Path(m.metadata["file"]).name) for m in msgs] == [
        ("sampleA", 1, "sampleA_8.cbf"),
        ("sampleA", 2, "sampleA_9.cbf"),
        ("sampleA", 3, "sampleA_10.cbf"),
        ("sampleA", 4, "sampleA_11.cbf"),
        ("sampleB", 1, "sampleB_1.cbf"),
        ("sampleB", 2, "sampleB_2.cbf"),
    ]
    for m in msgs:
        same(m.data["image"], fabio.open(m.metadata["file"]).data)
    same(msgs[0].data["image"], a[8])
    same(msgs[5].data["image"], b[2])
    assert starts[0].metadata["fields"] == {"scan": "sampleA", "frame": "8"}
    assert ends == [("sampleA", 4, "sampleB"), ("sampleB", 2, None)]


def test_stream_by_folder(tmp_path):
    cbf_series(tmp_path / "run1", "x", [1, 2, 3])
    cbf_series(tmp_path / "run2", "y", [1])
    _, msgs, ends = split(run(source(tmp_path / "*/*.cbf", stream_by="folder")).items())
    assert [(m.stream, m.id) for m in msgs] == [("run1", 1), ("run1", 2), ("run1", 3), ("run2", 1)]
    assert ends[0] == ("run1", 3, "run2")


def test_bad_params_and_files_are_refused_clearly(tmp_path):
    cbf_series(tmp_path, "s", [1])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(NoFilesMatched, match="matches no file"):
        source(tmp_path / "*.edf")
    with pytest.raises(ValueError, match=r"notes.txt .* does not fit the stream_by pattern"):
        source(tmp_path / "*", stream_by="{scan}_{frame:d}.cbf")
    with pytest.raises(ValidationError, match="no field naming the stream"):
        source(tmp_path / "*.cbf", stream_by="img_{frame:05d}.cbf")
    with pytest.raises(ValidationError, match="apply only with follow: true"):
        source(tmp_path / "*.cbf", idle_timeout=3)


def test_unreadable_and_truncated_files_go_to_dead_letters_and_the_rest_go_on(tmp_path):
    good = cbf_series(tmp_path, "s", [1, 3])
    cbf_series(tmp_path, "s", [2])
    raw = (tmp_path / "s_2.cbf").read_bytes()
    (tmp_path / "s_2.cbf").write_bytes(raw[: len(raw) // 2])  # truncated mid-frame
    (tmp_path / "s_4.cbf").write_bytes(b"not an image at all")
    multi = EdfImage(data=frames(1, seed=7)[0])
    multi.append_frame(data=frames(1, seed=8)[0])
    multi.write(str(tmp_path / "m.edf"))
    raw = (tmp_path / "m.edf").read_bytes()
    (tmp_path / "m.edf").write_bytes(raw[:-100])  # the second frame cut short
    results = run(source(tmp_path / "s_*.cbf", stream_by="{scan}_{frame:d}.cbf"))
    _, msgs, ends = split(results.items())
    assert [Path(m.metadata["file"]).name for m in msgs] == ["s_1.cbf", "s_3.cbf"]
    assert [m.id for m in msgs] == [1, 2]
    same(msgs[1].data["image"], good[3])
    assert ends == [("s", 2, None)]
    reasons = {Path(item.metadata["file"]).name: reason for item, reason in results.dead_letters}
    assert set(reasons) == {"s_2.cbf", "s_4.cbf"}
    assert all(str(tmp_path) in r for r in reasons.values())
    results = run(source(tmp_path / "m.edf"))
    _, msgs, ends = split(results.items())
    same(msgs[0].data["image"], frames(1, seed=7)[0])
    [(item, reason)] = results.dead_letters
    assert (item.metadata["file_frame"], item.id) == (1, 2)
    assert "m.edf: frame 1 of 2 is incomplete" in reason
    assert ends == [("m", 1, None)]


def test_pace_as_a_rate_and_realtime_from_modification_times(tmp_path):
    import os

    cbf_series(tmp_path, "s", [1, 2, 3])
    for k, t in ((1, 1000.0), (2, 1002.0), (3, 1007.0)):
        os.utime(tmp_path / f"s_{k}.cbf", (t, t))
    clock = FakeClock()
    node = source(tmp_path / "*.cbf", stream_by="folder", pace=4)
    node.pacer = clock.pacer()
    run(node)
    assert clock.sleeps == pytest.approx([0.25, 0.25])
    clock = FakeClock()
    node = source(tmp_path / "*.cbf", stream_by="folder", pace="realtime", speedup=2)
    node.pacer = clock.pacer()
    run(node)
    assert clock.sleeps == pytest.approx([1.0, 2.5])


# -- in a pipeline -----------------------------------------------------------------------------


def test_pipeline_run_sends_every_frame_of_real_files(folder):
    shutil.copy(NODES / "capture.py", folder)
    result, _ = run_pipeline(
        folder,
        textwrap.dedent(
            f"""\
            nodes:
              frames:
                use: image_files
                params:
                  paths: [{LIX}/*.cbf, {XPD}/*.tiff, {LIX}/AgBH*.h5]
                  dataset: AgBH_2020Aug16/primary/data/pilW2_image
              sink:
                use: capture:Capture
                params: {{path: got.pickle}}
            connections:
              - frames -> sink.in
            """
        ),
    )
    assert result.exit_code == 0, result.errors
    from capture import load

    got = load(folder / "got.pickle")
    msgs = [i for i in got if i[0] == "msg"]
    assert [m[1] for m in msgs] == ["Sol-b_000018_WAXS1", "Ni_img_file", "AgBH-2020Aug16"]
    same(msgs[0][5]["image"], fabio.open(str(LIX / "Sol-b_000018_WAXS1.cbf")).data)
    same(msgs[1][5]["image"], fabio.open(str(XPD / "Ni_img_file.tiff")).data)
    with h5py.File(LIX / "AgBH-2020Aug16.h5") as f:
        same(msgs[2][5]["image"], f["AgBH_2020Aug16/primary/data/pilW2_image"][0])
    assert [i[1] for i in got if i[0] == "end"] == [m[1] for m in msgs]


def test_lambda_files_of_one_frame_each_are_one_stream_of_whole_frames(tmp_path):
    """Issue 17's case: Lambda 250k files, one 516 x 516 frame each in a 2-D dataset with the
    older signal=1 attribute: one message per file, the whole frame, one stream per folder."""
    scan = tmp_path / "scan_017"
    scan.mkdir()
    expected = []
    for k in range(5):
        data = frames(1, shape=(516, 516), dtype="uint16", seed=10 + k)[0]
        lambda_like(scan / f"lambda_{k:05d}.nxs", data)
        expected.append(data)
    starts, msgs, ends = split(run(source(scan / "*.nxs", stream_by="folder")).items())
    assert [(m.stream, m.id) for m in msgs] == [("scan_017", k) for k in range(1, 6)]
    for m, data in zip(msgs, expected, strict=True):
        with h5py.File(m.metadata["file"]) as f:
            same(m.data["image"], f["entry/instrument/detector/data"][()])
        same(m.data["image"], data)
    assert starts[0].metadata["header"]["dataset"] == "/entry/instrument/detector/data"
    assert ends == [("scan_017", 5, None)]


def test_a_frame_of_another_shape_mid_stream_is_a_dead_letter_naming_file_and_frame(tmp_path):
    cbf_series(tmp_path, "s", [1, 2, 4])
    CbfImage(data=frames(1, shape=(8, 8), dtype="int32")[0]).write(str(tmp_path / "s_3.cbf"))
    results = run(source(tmp_path / "*.cbf", stream_by="{scan}_{frame:d}.cbf"))
    _, msgs, ends = split(results.items())
    assert [Path(m.metadata["file"]).name for m in msgs] == ["s_1.cbf", "s_2.cbf", "s_4.cbf"]
    assert ends == [("s", 3, None)]
    [(item, reason)] = results.dead_letters
    assert (item.id, item.metadata["file_frame"]) == (3, 0)
    assert "s_3.cbf: frame 0 is (8, 8) int32, but the frames of stream 's' are (12, 10)" in reason
