"""Multi-element XRF detector files and their dead-time correction.

``mca_files`` reads the Xspress3 areaDetector layout as xraylarch's reader of it does
(``larch.io.read_xsp3_hdf5``), and the NXdetector-per-element layout where PyMca's HDF5 reader
finds the live and real times; ``xrf.deadtime`` equals numpy applied directly to the same
arrays (counts x DTFactor, x ICR/OCR, x real/live time; summed or per element); ``xrf.fit`` of
the corrected sum, and of each element, equals PyMca's fit run directly (rtol 1e-6); the
positions of another port are joined, and their absence is an error naming node, stream and id;
``hdf5_replay`` carries 1-D spectra into ``xrf.fit``. The detector files are written in the
documented layouts from PyMca's real steel spectrum (no real file of these layouts could be
had: tests/data/xrf/README.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import h5py
import numpy as np
import pytest
from conftest import REPO
from test_xrf_fit import DATA, direct_fit, read_spectrum

import beampipe
from beampipe.nodes.files.hdf5_replay import Hdf5Replay
from beampipe.nodes.reduce.raster import Map
from beampipe.nodes.xrf.deadtime import DeadTimeError, PositionsMissing, XrfDeadTime
from beampipe.nodes.xrf.detectors import DetectorFileError
from beampipe.nodes.xrf.fit import XrfFit
from beampipe.nodes.xrf.mcafiles import McaFiles
from beampipe.testing import run

EXAMPLE = REPO / "examples" / "xrf-map"
XSPRESS3 = EXAMPLE / "data" / "xspress3" / "scan_0002.h5"
STEEL = {"config": str(DATA / "Steel.cfg"), "mode": "linear"}


def maker() -> ModuleType:
    """examples/xrf-map/make_xspress3.py, imported."""
    spec = importlib.util.spec_from_file_location("make_xspress3", EXAMPLE / "make_xspress3.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_nxdetector(path: Path, counts: np.ndarray, stats: dict[str, np.ndarray]) -> Path:
    """One NXdetector per element (``falconx_det0``, ...) under ``/1.1/instrument``, as ESRF
    BLISS writes MCA detectors: ``data`` (points, channels) and ``stats`` datasets (points,)."""
    with h5py.File(path, "w") as f:
        entry = f.create_group("1.1")
        entry.attrs["NX_class"] = "NXentry"
        instrument = entry.create_group("instrument")
        instrument.attrs["NX_class"] = "NXinstrument"
        for k in range(counts.shape[1]):
            det = instrument.create_group(f"falconx_det{k}")
            det.attrs["NX_class"] = "NXdetector"
            det["data"] = counts[:, k]
            for name, values in stats.items():
                det[name] = values[:, k]
        positioners = instrument.create_group("positioners")  # not a detector: not read
        positioners.attrs["NX_class"] = "NXcollection"
        positioners["samx"] = np.arange(counts.shape[0], dtype=float)
    return path


@pytest.fixture(scope="module")
def xspress3() -> list[beampipe.Message]:
    return run(McaFiles, params={"paths": [str(XSPRESS3)]}, name="mca").messages()


def test_xspress3_layout_read_as_larch_reads_it(xspress3: list[beampipe.Message]) -> None:
    from larch.io import read_xsp3_hdf5

    ref = read_xsp3_hdf5(str(XSPRESS3))
    assert len(xspress3) == ref.counts.shape[0] == 20
    assert {m.stream for m in xspress3} == {"scan_0002"}  # the file name without .h5
    for i, msg in enumerate(xspress3):
        assert msg.id == i + 1 and msg.metadata["index"] == i
        np.testing.assert_array_equal(msg.data["spectrum"], ref.counts[i])
        # larch: input counts = DTFactor x output counts; real time in microseconds
        np.testing.assert_allclose(
            msg.data["dt_factor"], ref.inputCounts[i] / ref.outputCounts[i], rtol=1e-12
        )
        np.testing.assert_allclose(msg.data["real_time"], ref.realTime[i] * 1e-6, rtol=1e-12)
    assert xspress3[0].metadata["elements"] == ["CHAN1", "CHAN2", "CHAN3", "CHAN4"]


def test_nxdetector_layout_where_pymca_finds_the_times(tmp_path: Path) -> None:
    from PyMca5.PyMcaCore import NexusTools

    counts, factors = maker().spectra()
    live = 0.1 / factors
    stats = {"live_time": live, "elapsed_time": np.full_like(live, 0.1)}
    path = write_nxdetector(tmp_path / "falcon.h5", counts, stats)
    with h5py.File(path, "r") as f:
        found = NexusTools.getMcaObjectPaths(f, "/1.1/instrument/falconx_det2/data")
        assert found["live_time"] == "/1.1/instrument/falconx_det2/live_time"
        assert found["elapsed_time"] == "/1.1/instrument/falconx_det2/elapsed_time"
    out = run(McaFiles, params={"paths": [str(path)]}, name="mca")
    msgs = out.messages()
    start = next(i for i in out.items() if isinstance(i, beampipe.StreamStart))
    assert start.stream == "falcon"
    assert start.metadata["layout"] == "nxdetector" and start.metadata["stats"] == [
        "live_time",
        "real_time",
    ]
    assert msgs[0].metadata["elements"] == [f"falconx_det{k}" for k in range(4)]
    for i, msg in enumerate(msgs):
        np.testing.assert_array_equal(msg.data["spectrum"], counts[i])
        np.testing.assert_array_equal(msg.data["live_time"], live[i])
        np.testing.assert_array_equal(msg.data["real_time"], np.full(4, 0.1))
    # BLISS's rate names; a pattern picks two of the elements
    rates = {"icr": 1000.0 * factors, "ocr": np.full_like(factors, 1000.0)}
    path = write_nxdetector(tmp_path / "rates.h5", counts, rates)
    params = {"paths": [str(path)], "detectors": "1.1/instrument/falconx_det[13]"}
    two = run(McaFiles, params=params, name="mca").messages()
    np.testing.assert_array_equal(two[5].data["spectrum"], counts[5, [1, 3]])
    np.testing.assert_array_equal(two[5].data["icr"], rates["icr"][5, [1, 3]])


def test_file_without_the_layout(tmp_path: Path) -> None:
    path = tmp_path / "empty.h5"
    with h5py.File(path, "w") as f:
        f["entry/other"] = np.zeros((3, 4))
    with pytest.raises(DetectorFileError, match=r"mca: '.*empty\.h5': no NXdetector group"):
        run(McaFiles, params={"paths": [str(path)]}, name="mca")
    with pytest.raises(DetectorFileError, match=r"no Xspress3 spectra: /entry/instrument"):
        run(McaFiles, params={"paths": [str(path)], "layout": "xspress3"}, name="mca")


def test_corrected_sum_equals_numpy(xspress3: list[beampipe.Message]) -> None:
    out = run(XrfDeadTime, xspress3, name="dt", ports=["in"]).messages()
    for msg, raw in zip(out, xspress3, strict=True):
        counts, factor = raw.data["spectrum"].astype(np.float64), raw.data["dt_factor"]
        np.testing.assert_array_equal(msg.data["spectrum"], (counts * factor[:, None]).sum(0))
        np.testing.assert_array_equal(msg.data["dt_factor"], factor)
        assert msg.metadata["correction"] == "dt_factor"
        assert msg.metadata["kept_elements"] == [0, 1, 2, 3]
    # each element, and a selection of elements
    each = run(XrfDeadTime, xspress3[:2], {"elements": "each"}, name="dt", ports=["in"])
    raw = xspress3[1].data
    np.testing.assert_array_equal(
        each.messages()[1].data["spectrum"], raw["spectrum"] * raw["dt_factor"][:, None]
    )
    some = run(XrfDeadTime, xspress3[:2], {"select": [0, 2]}, name="dt", ports=["in"])
    np.testing.assert_array_equal(
        some.messages()[1].data["spectrum"],
        (raw["spectrum"][[0, 2]] * raw["dt_factor"][[0, 2], None]).sum(0),
    )


@pytest.mark.parametrize("correction", ["icr_ocr", "live_time"])
def test_rates_and_times(correction: str) -> None:
    counts = np.stack([read_spectrum("Steel.spe"), np.round(0.5 * read_spectrum("Steel.spe"))])
    data = {
        "icr_ocr": {"icr": np.array([5000.0, 3000.0]), "ocr": np.array([4000.0, 0.0])},
        "live_time": {"real_time": np.array([1.0, 1.0]), "live_time": np.array([0.8, 0.0])},
    }[correction]
    msg = beampipe.Message(data={"spectrum": counts, **data}, stream="s", id=7)
    results = run(XrfDeadTime, [msg], {"correction": correction}, name="dt", ports=["in"])
    factor = np.array([1.25, 1.0])  # 5000 / 4000 or 1 / 0.8; 0 in the denominator: 1
    got = results.messages()[0]
    np.testing.assert_array_equal(got.data["dt_factor"], factor)
    np.testing.assert_array_equal(got.data["spectrum"], (counts * factor[:, None]).sum(0))
    assert any("dt: stream 's', id 7" in w and "element(s) 1" in w for w in results.warnings)


def test_missing_dead_time_data() -> None:
    msg = beampipe.Message(data={"spectrum": np.ones((2, 8))}, stream="s", id=3)
    with pytest.raises(DeadTimeError, match=r"dt: stream 's', id 3: no dead-time data"):
        run(XrfDeadTime, [msg], name="dt", ports=["in"])
    with pytest.raises(DeadTimeError, match=r"dt: stream 's', id 3: .*icr"):
        run(XrfDeadTime, [msg], {"correction": "icr_ocr"}, name="dt", ports=["in"])
    out = run(XrfDeadTime, [msg], {"correction": "none"}, name="dt", ports=["in"]).messages()
    np.testing.assert_array_equal(out[0].data["spectrum"], np.full(8, 2.0))


def test_fit_of_the_corrected_sum_and_of_each_element(xspress3: list[beampipe.Message]) -> None:
    points = xspress3[6:8]
    summed = run(XrfDeadTime, points, name="dt", ports=["in"]).messages()
    fits = run(XrfFit, summed, STEEL, name="fit").messages()
    for fit, raw in zip(fits, points, strict=True):
        y = (raw.data["spectrum"] * raw.data["dt_factor"][:, None]).sum(0)
        ref = direct_fit("Steel.spe", "linear", y)
        np.testing.assert_allclose(
            fit.data["area"], [ref[g]["fitarea"] for g in ref["groups"]], rtol=1e-6
        )
        np.testing.assert_allclose(fit.data["chisq"], ref["chisq"], rtol=1e-6)
    each = run(XrfDeadTime, points, {"elements": "each"}, name="dt", ports=["in"]).messages()
    fits = run(XrfFit, each, STEEL, name="fit").messages()
    raw = points[1].data
    got = fits[1]
    assert got.data["area"].shape == (4, len(got.metadata["lines"]))
    assert got.data["chisq"].shape == (4,)
    for k in range(4):
        ref = direct_fit("Steel.spe", "linear", raw["spectrum"][k] * raw["dt_factor"][k])
        np.testing.assert_allclose(
            got.data["area"][k], [ref[g]["fitarea"] for g in ref["groups"]], rtol=1e-6
        )
        np.testing.assert_allclose(
            got.data["area_sigma"][k], [ref[g]["sigmaarea"] for g in ref["groups"]], rtol=1e-6
        )
    # per-element maps: (elements, lines, ny, nx)
    placed = [m.replace(metadata={**m.metadata, "x": k, "y": 0}) for k, m in enumerate(fits)]
    maps = run(Map, placed, {"shape": [1, 2], "x": "x", "y": "y"}, name="maps").messages()[-1]
    assert maps.data["area"].shape == (4, len(got.metadata["lines"]), 1, 2)
    np.testing.assert_array_equal(maps.data["area"][:, :, 0, 1], got.data["area"])
    assert maps.metadata["axes"] == [".", "names", "y", "x"]  # the lines: the second axis
    assert maps.metadata["names"] == got.metadata["lines"]


def positions_of(msgs: list[beampipe.Message]) -> list[beampipe.Message]:
    """A positions message per spectrum message: 0-d samx, samy, on port ``positions``."""
    return [
        beampipe.Message(
            data={"samx": np.float64(0.5 * m.id), "samy": np.float64(-m.id)},
            stream=m.stream,
            id=m.id,
            port="positions",
        )
        for m in msgs
    ]


def test_positions_joined_or_missing(xspress3: list[beampipe.Message]) -> None:
    points = xspress3[:3]
    parts = [m for pair in zip(points, positions_of(points), strict=True) for m in pair]
    out = run(XrfDeadTime, parts, name="dt").messages()
    assert [m.metadata["positions"] for m in out] == [
        {"samx": 0.5 * k, "samy": -float(k)} for k in (1, 2, 3)
    ]
    fits = run(XrfFit, out, STEEL, name="fit").messages()  # xrf.fit passes them through
    assert fits[2].metadata["positions"] == {"samx": 1.5, "samy": -3.0}
    # the positions of id 2 never come: the event is delivered incomplete at the stream's end
    with pytest.raises(PositionsMissing) as info:
        run(XrfDeadTime, [p for p in parts if (p.port, p.id) != ("positions", 2)], name="dt")
    text = str(info.value)
    for part in ("dt:", "stream 'scan_0002'", "id 2", "port 'positions'"):
        assert part in text, text
    # or dropped and counted, with events: {incomplete: drop}
    kept = run(
        XrfDeadTime,
        [p for p in parts if (p.port, p.id) != ("positions", 2)],
        name="dt",
        events={"incomplete": "drop"},
    )
    assert [m.id for m in kept.messages()] == [1, 3]


def test_hdf5_replay_carries_1d_spectra_into_xrf_fit(tmp_path: Path) -> None:
    y = read_spectrum("Steel.spe")
    spectra = np.stack([y, np.round(0.5 * y), np.round(2.0 * y)]).astype(np.uint32)
    path = tmp_path / "spectra.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("entry/fluo/data", data=spectra)
        ds.attrs["interpretation"] = "spectrum"  # a table: one spectrum per row
    params = {"paths": [str(path)], "dataset": "entry/fluo/data", "key": "spectrum"}
    msgs = run(Hdf5Replay, params=params, name="replay").messages()
    assert [m.data["spectrum"].shape for m in msgs] == [(y.size,)] * 3
    fits = run(XrfFit, msgs, STEEL, name="fit").messages()
    for fit, s in zip(fits, spectra, strict=True):
        ref = direct_fit("Steel.spe", "linear", s)
        np.testing.assert_allclose(
            fit.data["area"], [ref[g]["fitarea"] for g in ref["groups"]], rtol=1e-6
        )
        np.testing.assert_allclose(fit.data["chisq"], ref["chisq"], rtol=1e-6)


def test_xspress3_factor_from_the_sca_counters(tmp_path: Path) -> None:
    # a file without CHAN{k}DTFactor: the factor from the clock, reset and event counters, as
    # xraylarch computes it (elements 1 and 2 with an EventWidth, 3 and 4 without)
    from larch.io import read_xsp3_hdf5

    counts, _ = maker().spectra()
    path = tmp_path / "sca.h5"
    rng = np.random.default_rng(5)
    with h5py.File(path, "w") as f:
        f["entry/instrument/detector/data"] = counts
        for k in range(1, 5):
            f[f"entry/instrument/NDAttributes/CHAN{k}SCA0"] = np.full(20, 8.0e6)
            f[f"entry/instrument/NDAttributes/CHAN{k}SCA1"] = rng.uniform(1e4, 5e4, 20)
            f[f"entry/instrument/NDAttributes/CHAN{k}SCA3"] = rng.uniform(1e4, 1e5, 20)
            if k < 3:
                f[f"entry/instrument/NDAttributes/CHAN{k}EventWidth"] = np.full(20, 5.0 + k)
    msgs = run(McaFiles, params={"paths": [str(path)]}, name="mca").messages()
    ref = read_xsp3_hdf5(str(path))
    got = np.stack([m.data["dt_factor"] for m in msgs])
    np.testing.assert_allclose(got, ref.inputCounts / ref.outputCounts, rtol=1e-12)
    assert (got > 1.0).all()


def xmap_buffer(counts: np.ndarray, counters: np.ndarray, slots: int = 124) -> np.ndarray:
    """One module's mapping-mode buffer (XIA xMAP, full spectra): 16-bit words, a 256-word
    buffer header, then per pixel a 256-word pixel header with each channel's real time, live
    time, triggers and events (32 bit, low word first) and the 4 spectra; ``slots`` pixel
    blocks (124 for 2048 bins: the xMAP's 1 Mword buffer)."""
    pixels, channels, bins = counts.shape
    block = 256 + channels * bins
    words = np.zeros(256 + slots * block, dtype=np.uint16)
    words[[0, 1, 2, 3, 8]] = [0x55AA, 0xAA55, 256, 1, pixels]
    words[20:24] = bins
    for p in range(pixels):
        start = 256 + p * block
        words[start : start + 4] = [0x33CC, 0xCC33, 256, 1]
        words[start + 32 : start + 64] = counters[p].astype(np.uint32).ravel().view(np.uint16)
        words[start + 256 : start + block] = counts[p].ravel()
    return words


@pytest.mark.filterwarnings("ignore:Cannot close a netcdf_file:RuntimeWarning")  # larch's reader
def test_xmap_buffers_read_as_larch_reads_them(tmp_path: Path) -> None:
    # the same buffers in HDF5 (as the areaDetector HDF5 plugin stores them) for mca_files and
    # in netCDF for xraylarch's reader of xMAP mapping files, the reference
    from larch.io import read_xrf_netcdf
    from scipy.io import netcdf_file

    raw, _ = maker().spectra()
    counts = np.round(0.1 * raw[:, :, :]).astype(np.uint16)  # 16-bit bins (larch: int16)
    rng = np.random.default_rng(7)
    real = np.full((20, 4), 312500)  # 0.1 s in 320 ns ticks
    live = (real / rng.uniform(1.05, 1.4, (20, 4))).astype(np.int64)
    events = counts.astype(np.int64).sum(axis=2)
    triggers = (events * rng.uniform(1.1, 1.5, (20, 4))).astype(np.int64)
    counters = np.stack([real, live, triggers, events], axis=2)
    buffer = xmap_buffer(counts, counters)
    with h5py.File(tmp_path / "xmap_0001.h5", "w") as f:
        f["entry/data/data"] = buffer[None, None, :]
    with netcdf_file(tmp_path / "xmap_0001.nc", "w") as nc:
        nc.createDimension("array", 1)
        nc.createDimension("module", 1)
        nc.createDimension("word", buffer.size)
        var = nc.createVariable("array_data", "h", ("array", "module", "word"))
        var[:] = buffer.view(np.int16)[None, None, :]
    ref = read_xrf_netcdf(str(tmp_path / "xmap_0001.nc"))
    out = run(McaFiles, params={"paths": [str(tmp_path / "xmap_0001.h5")]}, name="mca")
    msgs = out.messages()
    assert len(msgs) == 20 and msgs[0].metadata["elements"][3] == "module0/channel3"
    for i, msg in enumerate(msgs):
        np.testing.assert_array_equal(msg.data["spectrum"], ref.counts[i])
        np.testing.assert_array_equal(msg.data["spectrum"], counts[i])
        np.testing.assert_allclose(msg.data["real_time"], ref.realTime[i] * 1e-6, rtol=1e-12)
        np.testing.assert_allclose(msg.data["live_time"], ref.liveTime[i] * 1e-6, rtol=1e-12)
        # ICR / OCR is larch's dead-time factor: triggers x real time / (events x live time)
        larch = ref.inputCounts[i] * ref.realTime[i] / (ref.outputCounts[i] * ref.liveTime[i])
        np.testing.assert_allclose(msg.data["icr"] / msg.data["ocr"], larch, rtol=1e-12)
    summed = run(XrfDeadTime, msgs[:2], name="dt", ports=["in"]).messages()
    assert summed[0].metadata["correction"] == "icr_ocr"
    # two modules (8 elements), two buffers (the second holds the last 5 pixels)
    two = np.stack(
        [
            np.stack(
                [xmap_buffer(counts[:15], counters[:15]), xmap_buffer(counts[:15], counters[:15])]
            ),
            np.stack(
                [xmap_buffer(counts[15:], counters[15:]), xmap_buffer(counts[15:], counters[15:])]
            ),
        ]
    )
    with h5py.File(tmp_path / "xmap_0002.h5", "w") as f:
        f["entry/data/data"] = two
    msgs = run(McaFiles, params={"paths": [str(tmp_path / "xmap_0002.h5")]}, name="mca").messages()
    assert len(msgs) == 20
    np.testing.assert_array_equal(msgs[17].data["spectrum"], np.concatenate([counts[17]] * 2))
    np.testing.assert_array_equal(msgs[17].data["real_time"], np.full(8, 0.1))
    # ROI mapping (mode 2) is not read
    roi = xmap_buffer(counts[:2], counters[:2], slots=2)
    roi[3] = 2
    with h5py.File(tmp_path / "roi.h5", "w") as f:
        f["entry/data/data"] = roi[None, None, :]
    with pytest.raises(DetectorFileError, match=r"mca: '.*roi\.h5': .*mapping mode \[2\]"):
        run(McaFiles, params={"paths": [str(tmp_path / "roi.h5")]}, name="mca")
