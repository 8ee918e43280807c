"""The frame examples end to end, run as their pipeline files say (issue 17): real frames of
NSLS-II XPD (PerkinElmer TIFF) and LiX (Pilatus 1M in a Bluesky HDF5 file) through separate
processes into NeXus.

Every value the pipelines wrote is compared with the same computation done directly on the same
files: fabio or h5py to read, numpy to mask and reduce."""

from __future__ import annotations

from pathlib import Path

import fabio
import h5py
import numpy as np
import pytest
from conftest import REPO, beampipe, nxcheck

from beampipe.config import load_pipeline

XPD = REPO / "examples" / "powder-xpd"
LIX = REPO / "examples" / "saxs-lix"


def _run(example: Path, cwd: Path) -> tuple[str, Path]:
    """``beampipe run`` the example from ``cwd``; (stderr, path of the NeXus file)."""
    result = beampipe("run", str(example / "pipeline.yaml"), cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert "finished: 1/1 streams, 1 messages" in result.stderr, result.stderr
    assert "warning" not in result.stderr, result.stderr
    return result.stderr, cwd / "out" / f"{example.name}.nxs"


def _rois(example: Path) -> dict[str, tuple[slice, slice]]:
    rois = load_pipeline(example / "pipeline.yaml").node_params("roi").rois
    return {
        name: (slice(r.rect.y, r.rect.y + r.rect.height), slice(r.rect.x, r.rect.x + r.rect.width))
        for name, r in rois.items()
    }


def _check_stats(group: h5py.Group, masked: np.ndarray, threshold: float) -> None:
    used = masked[np.isfinite(masked)].astype(np.float64)
    assert group["sum"][0] == used.sum()
    np.testing.assert_allclose(group["mean"][0], used.mean(), rtol=1e-12)
    assert group["max"][0] == used.max()
    assert group["npix"][0] == used.size
    assert group["over"][0] == (used > threshold).sum()


def _check_rois(group: h5py.Group, masked: np.ndarray, example: Path) -> None:
    for name, (rows, cols) in _rois(example).items():
        part = masked[rows, cols].astype(np.float64)
        used = np.isfinite(part)
        assert group[f"{name}_sum"][0] == part[used].sum()
        assert group[f"{name}_npix"][0] == used.sum()
        assert group[f"{name}_max"][0] == part[used].max()
        np.testing.assert_allclose(group[f"{name}_mean"][0], part[used].mean(), rtol=1e-12)
        weights = np.where(used, part, 0)
        y, x = np.indices(part.shape)
        cy = (weights * (y + rows.start)).sum() / weights.sum()
        cx = (weights * (x + cols.start)).sum() / weights.sum()
        np.testing.assert_allclose(group[f"{name}_cx"][0], cx, rtol=1e-9)
        np.testing.assert_allclose(group[f"{name}_cy"][0], cy, rtol=1e-9)


@pytest.fixture(scope="module")
def xpd(tmp_path_factory):
    return _run(XPD, tmp_path_factory.mktemp("xpd"))[1]


@pytest.fixture(scope="module")
def lix(tmp_path_factory):
    return _run(LIX, tmp_path_factory.mktemp("lix"))[1]


def test_xpd_frames_scalars_and_rois_equal_fabio_and_numpy(xpd):
    raw = fabio.open(str(XPD / "data" / "Ni_img_file.tiff.gz")).data
    mask = fabio.open(str(XPD / "data" / "mask_file.tiff.gz")).data
    assert raw.shape == (2048, 2048) and raw.dtype == np.float32
    masked = np.where(mask != 0, np.float32(np.nan), raw)
    with h5py.File(xpd) as f:
        entry = f["Ni_img_file_tiff"]
        frames = entry["frames/image"]
        assert frames.compression == "gzip"
        np.testing.assert_array_equal(frames[()], raw[np.newaxis])
        _check_stats(entry["stats"], masked, threshold=1000)
        _check_rois(entry["roi"], masked, XPD)
        # the Ni (111) ring crosses the ring111 ROI: far above the background
        assert entry["roi/ring111_mean"][0] > 50 * entry["roi/background_mean"][0]


def test_lix_scalars_rois_and_mean_equal_h5py_and_numpy(lix):
    dataset = load_pipeline(LIX / "pipeline.yaml").node_params("frames").dataset
    with h5py.File(LIX / "data" / "AgBH-2020Aug16.h5") as f:
        raw = f[dataset][0]
    assert raw.shape == (1043, 981) and raw.dtype == np.int32
    masked = np.where(raw < 0, np.nan, raw).astype(np.float32)
    with h5py.File(lix) as f:
        entry = f["AgBH_2020Aug16"]
        _check_stats(entry["stats"], masked, threshold=100)
        _check_rois(entry["roi"], masked, LIX)
        average = entry["average"]
        assert average["count"][()] == 1
        np.testing.assert_array_equal(average["image"][()], masked.astype(np.float64))
        assert average["image"].compression == "gzip"


@pytest.mark.parametrize("example", ["xpd", "lix"])
def test_nxcheck_finds_no_error(example, request):
    errors, report = nxcheck(request.getfixturevalue(example))
    assert errors == 0, report
