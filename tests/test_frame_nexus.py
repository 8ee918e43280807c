"""Frames and ROI scalars in ``nexus_writer``: frame stacks chunked one frame per chunk and
compressed with bitshuffle-LZ4 (hdf5plugin) as DECTRIS EIGER files are; the ``frame.roi``
scalars as an NXdata against the message id or a scan axis; nxcheck finds no error.

Frames: the PILATUS3 300K miniCBF of NSLS-II LiX (../shared/data/saxs-waxs-lix, read with fabio).
"""

from __future__ import annotations

import fabio
import h5py
import hdf5plugin
import numpy as np
import pytest
from conftest import REPO, nxcheck

import beampipe as bp
from beampipe.nodes.frame.roi import FrameRoi
from beampipe.nodes.nexus.writer import NexusWriter
from beampipe.testing import run

CBF = REPO.parent / "shared" / "data" / "saxs-waxs-lix" / "Sol-b_000018_WAXS1.cbf"
pytestmark = pytest.mark.skipif(not CBF.is_file(), reason=f"no shared data: {CBF}")


def frames() -> np.ndarray:
    with fabio.open(CBF) as img:
        frame = np.asarray(img.data)
    return np.stack([frame, frame[::-1], np.roll(frame, 7, axis=1)])


def filter_ids(dataset: h5py.Dataset) -> list[int]:
    """The HDF5 filter ids of ``dataset``, in pipeline order."""
    plist = dataset.id.get_create_plist()
    return [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]


def items(messages: list[bp.Message], stream: str = "scan") -> list:
    return [bp.StreamStart(stream, {}), *messages, bp.EndOfStream(stream, len(messages))]


@pytest.mark.parametrize("compression", ["bitshuffle_lz4", "lz4", "gzip", "none"])
def test_a_frame_stack_is_chunked_per_frame_and_compressed(tmp_path, compression):
    stack = frames()
    msgs = [
        bp.Message(
            data={"image": f}, metadata={"signal": "image"}, stream="scan", id=i, port="frames"
        )
        for i, f in enumerate(stack, 1)
    ]
    params = {
        "path": str(tmp_path / "out.nxs"),
        "xas": None,
        "groups": {"frames": {"compression": compression}},
    }
    run(NexusWriter, items(msgs), params)
    with h5py.File(tmp_path / "out.nxs") as f:
        image = f["scan/frames/image"]
        assert image.chunks == (1, *stack.shape[1:])
        filters = image._filters
        want = {
            "bitshuffle_lz4": hdf5plugin.BSHUF_ID,
            "lz4": hdf5plugin.LZ4_ID,
            "gzip": "gzip",
            "none": None,
        }[compression]
        if want is None:
            assert not filters
        else:
            assert str(want) in filters or want in filters, filters
        np.testing.assert_array_equal(image[()], stack)
        assert list(f["scan/frames/id"]) == [1, 2, 3]
        assert f["scan/frames"].attrs["signal"] == "image"
        assert list(f["scan/frames"].attrs["axes"]) == ["id", ".", "."]
        assert filter_ids(f["scan/frames/id"]) == []
    assert nxcheck(tmp_path / "out.nxs")[0] == 0


def test_small_frames_are_chunked_one_frame_per_chunk_too(tmp_path):
    small = frames()[:, :64, :64].astype(np.uint16)  # 8 kB frames
    msgs = [
        bp.Message(data={"image": f}, stream="s", id=i, port="frames")
        for i, f in enumerate(small, 1)
    ]
    run(NexusWriter, items(msgs, "s"), {"path": str(tmp_path / "o.nxs"), "xas": None})
    with h5py.File(tmp_path / "o.nxs") as f:
        assert f["s/frames/image"].chunks == (1, 64, 64)
        np.testing.assert_array_equal(f["s/frames/image"][()], small)


def test_roi_scalars_are_an_nxdata_against_the_scan_axis(tmp_path):
    stack = frames()
    th = [10.0, 10.5, 11.0]
    inputs = items(
        [
            bp.Message(
                data={"image": f}, metadata={"signal": "image", "th": t}, stream="scan", id=i
            )
            for i, (f, t) in enumerate(zip(stack, th, strict=True), 1)
        ]
    )
    rois = {
        "beam": {"rect": {"x": 100, "y": 200, "width": 50, "height": 40}},
        "edge": {"rect": {"x": 0, "y": 0, "width": 487, "height": 10}},
    }
    out = run(FrameRoi, inputs, {"rois": rois, "axis": "th"}).messages()
    for m in out:
        m.port = "rois"
    run(NexusWriter, items(out), {"path": str(tmp_path / "roi.nxs"), "xas": None})
    with h5py.File(tmp_path / "roi.nxs") as f:
        group = f["scan/rois"]
        assert group.attrs["NX_class"] == "NXdata"
        assert group.attrs["signal"] == "beam_sum"
        assert list(group.attrs["axes"]) == ["th"] and group.attrs["th_indices"] == 0
        np.testing.assert_array_equal(group["th"][()], th)
        want = [f[200:240, 100:150].sum(dtype=np.float64) for f in stack]
        np.testing.assert_array_equal(group["beam_sum"][()], want)
        edge = stack[:, :10, :]
        np.testing.assert_array_equal(group["edge_max"][()], edge.max(axis=(1, 2)))
        assert group["beam_npix"].dtype == np.int64
    assert nxcheck(tmp_path / "roi.nxs")[0] == 0


def test_an_unknown_compression_is_refused():
    with pytest.raises(ValueError, match="compression"):
        NexusWriter.Params(path="o.nxs", groups={"frames": {"compression": "zip"}})
