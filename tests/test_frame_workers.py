"""The per-frame workers ``frame.stats``, ``frame.roi``, ``frame.correct`` and ``frame.bin``, and
the ``mean`` and ``max`` reducers, on real detector frames.

Frames: a PILATUS3 300K miniCBF (NSLS-II LiX, read with fabio), the Pilatus 1M SAXS and WAXS
frames of a Bluesky HDF5 file (read with h5py), a PerkinElmer TIFF with its mask (NSLS-II XPD);
see ../shared/data/*/README.md. Every value is compared with numpy, scipy.ndimage, pyFAI's
preprocessing or scikit-image called directly on the same frames: integer sums exactly, the rest
to 1e-12 (another summation order).
"""

from __future__ import annotations

import textwrap

import fabio
import h5py
import numpy as np
import pytest
from conftest import REPO, beampipe, nxcheck, rows
from matplotlib.path import Path as Polygon
from pyFAI.engines.preproc import preproc
from scipy import ndimage
from skimage.measure import block_reduce

import beampipe as bp
from beampipe.nodes.frame.binning import FrameBin
from beampipe.nodes.frame.correct import FrameCorrect
from beampipe.nodes.frame.pixels import PixelFileError
from beampipe.nodes.frame.roi import FrameRoi
from beampipe.nodes.frame.stats import FrameStats
from beampipe.nodes.reduce.maximum import Max
from beampipe.nodes.reduce.mean import Mean
from beampipe.testing import Harness, run

DATA = REPO.parent / "shared" / "data"
LIX = DATA / "saxs-waxs-lix"
XPD = DATA / "powder-ni-xpd"
pytestmark = pytest.mark.skipif(not LIX.is_dir(), reason=f"no shared data in {DATA}")


def cbf() -> np.ndarray:
    """The PILATUS3 300K frame, (619, 487) int32; -1 marks gaps, -2 bad pixels."""
    with fabio.open(LIX / "Sol-b_000018_WAXS1.cbf") as img:
        return np.asarray(img.data)


def pilatus_1m() -> np.ndarray:
    """The SAXS and WAXS2 frames of the Bluesky file, (2, 1043, 981) int32."""
    with h5py.File(LIX / "AgBH-2020Aug16.h5") as f:
        data = f["AgBH_2020Aug16/primary/data"]
        return np.concatenate([data["pil1M_image"][()], data["pilW2_image"][()]])


def ni() -> tuple[np.ndarray, np.ndarray]:
    """The PerkinElmer frame (2048, 2048) float32 and its mask (bool, True = masked)."""
    with fabio.open(XPD / "Ni_img_file.tiff") as img:
        frame = np.asarray(img.data)
    return frame, np.load(XPD / "mask_file.npy") != 0


def stream(frames, name="scan", metadata=None) -> list:
    items: list = [bp.StreamStart(name, {})]
    for i, frame in enumerate(frames, 1):
        frame = np.ascontiguousarray(frame)
        frame.setflags(write=False)  # as from the wire
        meta = {"signal": "image", **((metadata or {}).get(i, {}))}
        items.append(bp.Message(data={"image": frame}, metadata=meta, stream=name, id=i))
    items.append(bp.EndOfStream(name, len(frames)))
    return items


# -- frame.stats ----------------------------------------------------------------------------------


def test_stats_equal_numpy_on_a_cbf_frame_with_an_edf_mask(tmp_path):
    frame = cbf()
    mask = frame < 0  # the detector's gaps and bad pixels
    fabio.edfimage.EdfImage(data=mask.astype(np.uint8)).write(str(tmp_path / "mask.edf"))
    frames = [frame, frame[::-1].copy(), np.roll(frame, 3, axis=1)]
    results = run(
        FrameStats, stream(frames), {"mask": "mask.edf", "threshold": 10}, base_dir=tmp_path
    )
    out = results.messages()
    assert [m.id for m in out] == [1, 2, 3]
    for m, f in zip(out, frames, strict=True):
        values = f[~mask]
        assert m.data["sum"] == values.sum(dtype=np.float64)  # integers: exact
        assert m.data["npix"] == values.size == mask.size - mask.sum()
        assert m.data["max"] == values.max()
        assert m.data["mean"] == pytest.approx(values.mean(dtype=np.float64), rel=1e-12)
        assert m.data["over"] == np.count_nonzero(values > 10)
        assert m.metadata["signal"] == "sum"
    assert mask.sum() > 10_000  # the mask mattered: the gaps hold -1
    assert out[0].data["sum"] != frame.sum(dtype=np.float64)


def test_stats_leave_out_nan_pixels_and_the_npy_mask_of_a_float_frame(tmp_path):
    frame, mask = ni()
    holed = frame.copy()
    holed[100:110, 200:300] = np.nan  # as frame.correct marks masked pixels
    results = run(FrameStats, stream([frame, holed]), {"mask": str(XPD / "mask_file.npy")})
    a, b = results.messages()
    for m, f in ((a, frame), (b, holed)):
        values = f[~mask & np.isfinite(f)]
        assert m.data["npix"] == values.size
        assert m.data["sum"] == pytest.approx(values.sum(dtype=np.float64), rel=1e-12)
        assert m.data["max"] == values.max()
    assert b.data["npix"] == a.data["npix"] - np.count_nonzero(~mask[100:110, 200:300])


def test_stats_scan_axis_from_metadata_and_no_pixel_left():
    frame = cbf()[:8, :8]
    results = run(
        FrameStats,
        stream([frame, np.full((8, 8), -1, np.int32)], metadata={1: {"th": 0.5}, 2: {"th": 0.75}}),
        {"axis": "th"},
    )
    a, b = results.messages()
    assert a.data["th"] == 0.5 and b.data["th"] == 0.75
    assert a.metadata["axes"] == ["th"]
    assert b.data["npix"] == 64  # no mask: -1 is a value here


# -- frame.roi ------------------------------------------------------------------------------------


def reference(frame: np.ndarray, pixels: np.ndarray) -> dict[str, float]:
    """scipy.ndimage's statistics of the ``pixels`` of ``frame``."""
    labels = pixels.astype(np.int32)
    cy, cx = ndimage.center_of_mass(frame.astype(np.float64), labels, 1)
    return {
        "sum": ndimage.sum_labels(frame.astype(np.float64), labels, 1),
        "mean": ndimage.mean(frame.astype(np.float64), labels, 1),
        "max": ndimage.maximum(frame, labels, 1),
        "npix": int(pixels.sum()),
        "cx": cx,
        "cy": cy,
    }


def test_roi_rect_polygon_and_file_equal_scipy_ndimage_on_a_masked_float_frame(tmp_path):
    frame, mask = ni()
    frames = [frame, np.roll(frame, (5, -9), axis=(0, 1)), frame[::-1]]
    ring = np.hypot(*np.meshgrid(np.arange(2048) - 1030.3, np.arange(2048) - 1010.7)) < 300
    ring &= ~(np.hypot(*np.meshgrid(np.arange(2048) - 1030.3, np.arange(2048) - 1010.7)) < 250)
    fabio.tifimage.TifImage(data=ring.astype(np.uint8)).write(str(tmp_path / "ring.tif"))
    polygon = [[300.4, 150.2], [900.7, 160.1], [700.2, 800.6], [350.5, 650.3]]
    rois = {
        "peak": {"rect": {"x": 950, "y": 1000, "width": 150, "height": 100}},
        "quad": {"polygon": polygon},
        "ring": {"file": "ring.tif"},
    }
    results = run(
        FrameRoi,
        stream(frames),
        {"rois": rois, "mask": str(XPD / "mask_file.npy")},
        base_dir=tmp_path,
    )
    rows, cols = np.mgrid[:2048, :2048]
    inside = Polygon(polygon).contains_points(np.c_[cols.ravel(), rows.ravel()]).reshape(2048, 2048)
    rect = np.zeros_like(mask)
    rect[1000:1100, 950:1100] = True
    assert (rect & mask).any() and (inside & mask).any()  # the mask cuts into the ROIs
    out = results.messages()
    assert len(out) == 3
    for m, f in zip(out, frames, strict=True):
        assert m.metadata["signal"] == "peak_sum"
        for name, pixels in (("peak", rect), ("quad", inside), ("ring", ring)):
            want = reference(f, pixels & ~mask)
            assert m.data[f"{name}_npix"] == want["npix"]
            assert m.data[f"{name}_max"] == want["max"]
            for stat in ("sum", "mean", "cx", "cy"):
                assert m.data[f"{name}_{stat}"] == pytest.approx(want[stat], rel=1e-12), stat


def test_roi_of_integer_frames_without_mask_sum_exactly_and_nan_pixels_are_left_out():
    frames = pilatus_1m()
    rois = {"beam": {"rect": {"x": 400, "y": 700, "width": 200, "height": 150}}}
    out = run(FrameRoi, stream(frames), {"rois": rois}).messages()
    for m, f in zip(out, frames, strict=True):
        box = f[700:850, 400:600]
        assert m.data["beam_sum"] == box.sum(dtype=np.float64)
        assert m.data["beam_npix"] == box.size
        cy, cx = ndimage.center_of_mass(box.astype(np.float64))
        assert m.data["beam_cx"] == pytest.approx(cx + 400, rel=1e-12)
        assert m.data["beam_cy"] == pytest.approx(cy + 700, rel=1e-12)
    holed = frames[0].astype(np.float32)
    holed[710, 410:420] = np.nan
    (m,) = run(FrameRoi, stream([holed]), {"rois": rois}).messages()
    box = holed[700:850, 400:600]
    assert m.data["beam_npix"] == box.size - 10
    assert m.data["beam_sum"] == pytest.approx(np.nansum(box, dtype=np.float64), rel=1e-12)


# -- bad input ------------------------------------------------------------------------------------


def test_a_frame_of_another_shape_mid_stream_is_a_dead_letter_naming_node_stream_and_id():
    frames = [cbf(), cbf()[:300], cbf()]
    results = run(FrameStats, stream(frames), name="stats")
    assert [m.id for m in results.messages()] == [1, 3]
    ((item, reason),) = results.dead_letters
    assert item.id == 2
    assert "stats: stream 'scan', id 2" in str(reason)
    assert "(300, 487)" in str(reason) and "(619, 487)" in str(reason)


def test_a_mask_of_another_shape_is_an_error_naming_the_mask_file():
    with pytest.raises(PixelFileError, match=r"mask_file\.npy.*\(2048, 2048\).*\(619, 487\)"):
        run(
            FrameRoi,
            stream([cbf()]),
            {
                "rois": {"a": {"rect": {"x": 0, "y": 0, "width": 2, "height": 2}}},
                "mask": str(XPD / "mask_file.npy"),
            },
            name="roi",
        )


def test_a_missing_mask_file_and_a_rectangle_outside_the_frame_are_errors(tmp_path):
    with pytest.raises(PixelFileError, match=r"nothere\.edf"):
        run(FrameStats, [], {"mask": "nothere.edf"}, base_dir=tmp_path)
    rois = {"big": {"rect": {"x": 480, "y": 0, "width": 10, "height": 5}}}
    with pytest.raises(ValueError, match=r"roi: stream 'scan', id 1: ROI 'big'.*487 columns"):
        run(FrameRoi, stream([cbf()]), {"rois": rois}, name="roi")


def test_roi_params_are_checked():
    with pytest.raises(ValueError, match="exactly one of rect, polygon, file"):
        FrameRoi.Params(rois={"a": {}})
    with pytest.raises(ValueError, match="ROI name"):
        FrameRoi.Params(rois={"a-b": {"rect": {"x": 0, "y": 0, "width": 1, "height": 1}}})


# -- a real pipeline ---------------------------------------------------------------------------


def test_pipeline_hdf5_replay_roi_stats_correct_mean_into_nexus(tmp_path):
    frames = pilatus_1m()
    with h5py.File(tmp_path / "agbh.h5", "w") as f:
        f.create_dataset("entry/data/data", data=frames, chunks=(1, *frames.shape[1:]))
    (tmp_path / "pipeline.yaml").write_text(
        textwrap.dedent("""\
        name: frames
        nodes:
          frames: {use: hdf5_replay, params: {paths: agbh.h5, dataset: entry/data/data}}
          roi:
            use: frame.roi
            params:
              rois:
                beam: {rect: {x: 400, y: 700, width: 200, height: 150}}
                arc: {polygon: [[100.5, 100.5], [900.5, 120.5], [500.5, 600.5]]}
          stats: {use: frame.stats, params: {threshold: 100}}
          correct: {use: frame.correct, check_finite: false}  # NaN marks masked pixels
          average: {use: mean, check_finite: false}
          nexus:
            use: nexus_writer
            params:
              path: out/frames.nxs
              xas: null
              groups:
                frames: {compression: bitshuffle_lz4}
                mean: {mode: replace}
        connections:
          - frames -> roi
          - frames -> stats
          - frames -> correct
          - correct -> average
          - frames -> nexus.frames
          - roi -> nexus.rois
          - stats -> nexus.stats
          - average -> nexus.mean
        """)
    )
    done = beampipe("run", "pipeline.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "NaN" not in done.stderr and "warning" not in done.stderr, done.stderr
    rows, cols = np.mgrid[:1043, :981]
    arc = (
        Polygon([[100.5, 100.5], [900.5, 120.5], [500.5, 600.5]])
        .contains_points(np.c_[cols.ravel(), rows.ravel()])
        .reshape(1043, 981)
    )
    with h5py.File(tmp_path / "out" / "frames.nxs") as f:
        rois, stats = f["agbh/rois"], f["agbh/stats"]
        assert list(rois["id"]) == [1, 2]
        assert rois.attrs["signal"] == "beam_sum"
        for k, frame in enumerate(frames):
            assert rois["beam_sum"][k] == frame[700:850, 400:600].sum(dtype=np.float64)
            assert rois["arc_sum"][k] == frame[arc].sum(dtype=np.float64)
            assert rois["arc_npix"][k] == arc.sum()
            assert stats["sum"][k] == frame.sum(dtype=np.float64)
            assert stats["over"][k] == np.count_nonzero(frame > 100)
        stack = f["agbh/frames/image"]
        assert stack.chunks == (1, 1043, 981) and stack.dtype == np.int32
        assert stack.id.get_create_plist().get_filter(0)[0] == 32008  # bitshuffle
        np.testing.assert_array_equal(stack[()], frames)
        corrected = np.where(frames < 0, np.nan, frames.astype(np.float32))
        np.testing.assert_array_equal(
            f["agbh/mean/image"][()], corrected.mean(axis=0, dtype=np.float64)
        )
        assert f["agbh/mean/count"][()] == 2
    assert nxcheck(tmp_path / "out" / "frames.nxs")[0] == 0


# -- frame.correct and frame.bin ------------------------------------------------------------------


def test_correct_equals_pyfai_preproc_with_dark_flat_mask_gaps_and_saturation(tmp_path):
    raw = cbf()
    rng = np.random.default_rng(7)
    dark = rng.poisson(2.0, raw.shape).astype(np.float32)
    flat = rng.normal(1.0, 0.05, raw.shape).astype(np.float32)
    flat[10:12, 10:20] = 0.0  # dead in the flat: masked
    mask = np.zeros(raw.shape, np.uint8)
    mask[300:310, 100:140] = 1
    np.save(tmp_path / "dark.npy", dark)
    fabio.edfimage.EdfImage(data=flat).write(str(tmp_path / "flat.edf"))
    with h5py.File(tmp_path / "mask.h5", "w") as f:  # as EIGER keeps it, bit flags
        f["entry/instrument/detector/detectorSpecific/pixel_mask"] = mask.astype(np.uint32) * 8
    params = {"dark": "dark.npy", "flat": "flat.edf", "mask": "mask.h5", "saturation": 100000}
    (m,) = run(FrameCorrect, stream([raw]), params, base_dir=tmp_path).messages()
    out = m.data["image"]
    assert out.dtype == np.float32 and out.shape == raw.shape
    masked = (mask != 0) | (raw < 0) | (raw >= 100000) | (flat <= 0)
    want = preproc(raw, dark=dark, flat=flat, mask=masked, empty=np.nan, dtype=np.float32)
    np.testing.assert_array_equal(out, want)  # NaN at the same places, the rest bit for bit
    assert np.array_equal(np.isnan(out), masked)
    assert m.metadata["masked"] == masked.sum() and m.metadata["signal"] == "image"
    assert (raw >= 100000).any() and (raw < 0).any()


def test_correct_masks_the_top_value_of_unsigned_frames_and_feeds_roi_nan_aware(tmp_path):
    raw = pilatus_1m()[0].clip(0).astype(np.uint16)
    raw[500, 500:510] = 65535  # EIGER-style gap/overflow marker
    (m,) = run(FrameCorrect, stream([raw]), {"dtype": "float64"}).messages()
    out = m.data["image"]
    assert out.dtype == np.float64 and np.isnan(out[500, 500:510]).all()
    assert np.isnan(out).sum() == 10
    rois = {"c": {"rect": {"x": 490, "y": 495, "width": 30, "height": 10}}}
    (r,) = run(
        FrameRoi, [bp.StreamStart("scan", {}), m, bp.EndOfStream("scan", 1)], {"rois": rois}
    ).messages()
    box = raw[495:505, 490:520].astype(np.float64)
    assert r.data["c_npix"] == 300 - 10
    assert r.data["c_sum"] == box[box != 65535].sum()


def test_a_dark_of_another_shape_is_an_error_naming_the_file(tmp_path):
    np.save(tmp_path / "dark.npy", np.zeros((10, 10)))
    with pytest.raises(PixelFileError, match=r"dark.*dark\.npy.*\(10, 10\).*\(619, 487\)"):
        run(FrameCorrect, stream([cbf()]), {"dark": "dark.npy"}, base_dir=tmp_path)
    np.save(tmp_path / "flat.npy", np.ones((10, 12)))
    with pytest.raises(
        PixelFileError, match=r"dark '.*dark\.npy' \(10, 10\), flat '.*flat\.npy' \(10, 12\)"
    ):
        run(FrameCorrect, [], {"dark": "dark.npy", "flat": "flat.npy"}, base_dir=tmp_path)


@pytest.mark.parametrize(("factor", "mode"), [(2, "sum"), ((3, 4), "mean")])
def test_bin_equals_skimage_block_reduce(factor, mode):
    raw = cbf()
    (m,) = run(FrameBin, stream([raw]), {"factor": factor, "mode": mode}).messages()
    fy, fx = (factor, factor) if isinstance(factor, int) else factor
    ny, nx = raw.shape[0] // fy, raw.shape[1] // fx
    cropped = raw[: ny * fy, : nx * fx].astype(np.float64)
    want = block_reduce(cropped, (fy, fx), np.sum if mode == "sum" else np.mean)
    out = m.data["image"]
    assert out.shape == (ny, nx) and out.dtype == np.float64
    if mode == "sum":
        np.testing.assert_array_equal(out, want)
    else:
        np.testing.assert_allclose(out, want, rtol=1e-15)
    assert m.metadata["binning"] == [fy, fx]


def test_bin_makes_a_bin_with_a_masked_pixel_nan():
    frame, mask = ni()
    (m,) = run(
        FrameBin, stream([frame]), {"factor": 8, "mask": str(XPD / "mask_file.npy")}
    ).messages()
    hit = mask.reshape(256, 8, 256, 8).any(axis=(1, 3))
    assert np.array_equal(np.isnan(m.data["image"]), hit)
    clean = frame.astype(np.float64).reshape(256, 8, 256, 8).sum(axis=(1, 3))
    np.testing.assert_array_equal(m.data["image"][~hit], clean[~hit])


# -- the mean and max reducers ------------------------------------------------------------------


def test_mean_and_max_images_equal_numpy_every_two_frames_and_at_the_end():
    base = cbf()
    frames = np.stack([base, base[::-1], np.roll(base, 5, axis=0), base // 2, base[:, ::-1]])
    for cls, reference in ((Mean, np.mean), (Max, np.max)):
        h = Harness(cls, {"every": 2}, name=cls.__name__.lower())
        sent = h.feed(stream(frames)).messages()
        assert [m.id for m in sent] == [2, 4, 5]
        assert [m.metadata["final"] for m in sent] == [False, False, True]
        for m, n in zip(sent, (2, 4, 5), strict=True):
            want = reference(frames[:n].astype(np.float64), axis=0)
            assert m.data["image"].dtype == np.float64
            np.testing.assert_array_equal(m.data["image"], want)
            assert m.data["count"] == n and m.metadata["signal"] == "image"


def test_mean_and_max_keep_masked_pixels_nan_and_refuse_another_shape():
    frame, _ = ni()
    holed = frame.copy()
    holed[5, 5] = np.nan
    for cls in (Mean, Max):
        (m,) = run(cls, stream([frame, holed])).messages()
        assert np.isnan(m.data["image"][5, 5]) and np.isnan(m.data["image"]).sum() == 1
        with pytest.raises(ValueError, match=r"stream 'scan', id 2: field 'image' has shape"):
            run(cls, stream([frame, frame[:10]]), name="avg")
    with pytest.raises(TypeError, match="complex64, not numeric"):
        run(Max, stream([frame.astype(np.complex64)]), {"fields": ["image"]})
    with pytest.raises(ValueError, match="no numeric array for the maximum; data: image"):
        run(Max, stream([frame.astype(np.complex64)]))


TRUNCATING = '''
"""A source of the PILATUS frame three times, the second cut short (a truncated frame)."""
import fabio
import numpy as np
import beampipe


class Frames(beampipe.Source):
    class Params(beampipe.Params):
        path: beampipe.InputPath

    def generate(self):
        with fabio.open(self.params.path) as img:
            frame = np.asarray(img.data)
        yield beampipe.StreamStart("scan", {})
        for i, f in enumerate([frame, frame[:300], frame], 1):
            yield beampipe.Message(data={"image": f}, metadata={"signal": "image"},
                                   stream="scan", id=i)
        yield beampipe.EndOfStream("scan", 3)
'''


def test_a_run_with_a_truncated_frame_goes_on_and_lists_it_in_the_dead_letter_file(tmp_path):
    (tmp_path / "truncating.py").write_text(TRUNCATING)
    (tmp_path / "pipeline.yaml").write_text(
        textwrap.dedent(f"""\
        name: cut
        nodes:
          frames: {{use: "truncating:Frames", params: {{path: "{LIX / "Sol-b_000018_WAXS1.cbf"}"}}}}
          stats: {{use: frame.stats}}
          nexus: {{use: nexus_writer, params: {{path: out/cut.nxs, xas: null}}}}
        connections:
          - frames -> stats
          - stats -> nexus.stats
        """)
    )
    done = beampipe("run", "pipeline.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    err = " ".join(done.stderr.split())
    assert "1 inputs dropped by nodes (stats: 1), listed in cut.dead-letters.jsonl" in err
    (row,) = rows(tmp_path / "cut.dead-letters.jsonl")
    assert (row["node"], row["stream"], row["id"]) == ("stats", "scan", 2)
    assert "(300, 487)" in row["error"] and "(619, 487)" in row["error"]
    with h5py.File(tmp_path / "out" / "cut.nxs") as f:
        assert list(f["scan/stats/id"]) == [1, 3]
        assert list(f["scan/stats/sum"]) == [cbf().sum(dtype=np.float64)] * 2


def test_mask_bits_pick_flags_of_an_eiger_pixel_mask(tmp_path):
    frame = cbf()
    flags = np.zeros(frame.shape, np.uint32)
    flags[frame == -1] = 1  # gap
    flags[:5, :] |= 8  # over-responding
    with h5py.File(tmp_path / "master.h5", "w") as f:
        f["entry/instrument/detector/pixel_mask"] = flags
    for bits, masked in ((None, flags != 0), (1, frame == -1), (8, flags & 8 != 0)):
        params = {"mask": "master.h5", "mask_bits": bits}
        (m,) = run(FrameStats, stream([frame]), params, base_dir=tmp_path).messages()
        assert m.data["npix"] == frame.size - masked.sum()
        assert m.data["sum"] == frame[~masked].sum(dtype=np.float64)
    with pytest.raises(PixelFileError, match=r"no mask in '.*master\.h5': no dataset entry/nope"):
        run(FrameStats, [], {"mask": "master.h5::entry/nope"}, base_dir=tmp_path)
