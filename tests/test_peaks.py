"""``peaks.find`` (peakfinder8 through OM), the ``hit_rate`` reducer and ``cxi_writer``.

Frames: simulated Bragg spots (Gaussian, Poisson noise) on the real PILATUS3 300K WAXS frame of
NSLS-II LiX (examples/serial-hits: no installed package ships real frames with Bragg spots).
The reference is OM's compiled peakfinder8 (``om.algorithms._crystallography.peakfinder_8``)
called directly on the same frames, with a mask and radius map made here with numpy: peak lists
equal exactly; hit counts and rates are counted here from the reference.
"""

from __future__ import annotations

import importlib.util
import json
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request

import fabio
import h5py
import numpy as np
import pytest
from conftest import REPO, beampipe, nxcheck
from om.algorithms._crystallography import peakfinder_8

import beampipe as bp
from beampipe.nodes.peaks.cxi import CxiWriter
from beampipe.nodes.peaks.find import PeaksFind
from beampipe.nodes.peaks.geometry import GeometryError
from beampipe.nodes.peaks.hitrate import HitRate
from beampipe.testing import run

EXAMPLE = REPO / "examples" / "serial-hits"
BACKGROUND = EXAMPLE / "data" / "Sol-b_000018_WAXS1.cbf"
CENTER = (150.0, -175.0)
PARAMS = {"center": list(CENTER), "adc_threshold": 100.0, "min_snr": 5.0, "min_peaks": 20}


def _spots():
    spec = importlib.util.spec_from_file_location("serial_spots", EXAMPLE / "spots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def background() -> np.ndarray:
    with fabio.open(BACKGROUND) as img:
        return np.asarray(img.data)


def simulated(n: int, hit_fraction: float = 0.3, seed: int = 1) -> list[tuple[np.ndarray, int]]:
    return list(_spots().frames(background(), n, hit_fraction, seed))


def reference(
    frame: np.ndarray,
    valid: np.ndarray,
    *,
    center=CENTER,
    adc=100.0,
    snr=5.0,
    min_pix=2,
    max_pix=200,
    bg=3,
    min_res=0.0,
    max_res=1200.0,
    max_peaks=2048,
    panels=(1, 1),
) -> dict[str, np.ndarray]:
    """OM's peakfinder8 called directly as OM's Peakfinder8PeakDetection.find_peaks calls it."""
    ny, nx = frame.shape
    ss, fs = np.mgrid[:ny, :nx]
    radius = np.sqrt((fs - center[0]) ** 2 + (ss - center[1]) ** 2).astype(np.float32)
    mask = valid.astype(np.int8)
    mask[radius < min_res] = 0
    mask[radius > max_res] = 0
    out = peakfinder_8(
        max_peaks,
        frame.astype(np.float32),
        mask,
        radius,
        0,
        None,
        None,
        0,
        nx // panels[1],
        ny // panels[0],
        panels[1],
        panels[0],
        adc,
        snr,
        min_pix,
        max_pix,
        bg,
    )
    names = ["fs", "ss", "intensity", "index", "npix", "max", "sigma", "snr"]
    return {k: np.asarray(v) for k, v in zip(names, out, strict=True)}


def stream(frames, name="run1") -> list:
    items: list = [bp.StreamStart(name, {})]
    for i, frame in enumerate(frames, 1):
        frame = np.ascontiguousarray(frame)
        frame.setflags(write=False)  # as from the wire
        items.append(
            bp.Message(data={"image": frame}, metadata={"signal": "image"}, stream=name, id=i)
        )
    items.append(bp.EndOfStream(name, len(frames)))
    return items


def assert_equal_peaks(data: dict, ref: dict) -> None:
    n = ref["fs"].size
    assert int(data["n_peaks"]) == n
    for key, ref_key in [
        ("peak_fs", "fs"),
        ("peak_ss", "ss"),
        ("peak_intensity", "intensity"),
        ("peak_max", "max"),
        ("peak_sigma", "sigma"),
        ("peak_snr", "snr"),
        ("peak_npix", "npix"),
    ]:
        assert data[key].shape == (n,)
        np.testing.assert_array_equal(data[key], ref[ref_key].astype(data[key].dtype), key)


# -- peaks.find ----------------------------------------------------------------------------------


def test_peaks_equal_om_peakfinder8_on_integer_frames_with_a_mask_file(tmp_path):
    frames = simulated(8)
    gaps = background() < 0
    np.save(tmp_path / "mask.npy", gaps)
    results = run(
        PeaksFind, stream([f for f, _ in frames]), {**PARAMS, "mask": "mask.npy"}, base_dir=tmp_path
    )
    messages = results.messages()
    assert [m.id for m in messages] == list(range(1, 9))
    hits = 0
    for m, (frame, spots) in zip(messages, frames, strict=True):
        ref = reference(frame, ~gaps)
        assert_equal_peaks(m.data, ref)
        assert m.data["hit"].dtype == bool and bool(m.data["hit"]) == (ref["fs"].size >= 20)
        assert m.metadata["n_peaks"] == ref["fs"].size and "image" not in m.data
        hits += bool(m.data["hit"])
        if spots:  # the simulated spots are found, and not many more
            assert spots - 5 <= ref["fs"].size <= spots + 12
    assert hits == sum(1 for _, spots in frames if spots) > 0
    assert results.warnings == {} and results.dead_letters == []


def test_peaks_of_float_frames_leave_nan_pixels_out_and_the_hits_go_on_with_their_frames():
    frames = simulated(6, hit_fraction=0.5, seed=3)
    floats = [np.where(f < 0, np.nan, f).astype(np.float32) for f, _ in frames]
    results = run(PeaksFind, stream(floats), PARAMS)
    hits = {m.id: m for m in results.messages("hits")}
    assert 0 < len(hits) < 6
    for m, frame in zip(results.messages(), floats, strict=True):
        ref = reference(np.nan_to_num(frame), np.isfinite(frame))
        assert_equal_peaks(m.data, ref)
        assert "image" not in m.data and "frame" not in m.metadata
        assert bool(m.data["hit"]) == (m.id in hits)
        if m.id in hits:
            hit = hits[m.id]
            assert hit.metadata == {**m.metadata, "frame": "image"}
            assert_equal_peaks(hit.data, ref)
            np.testing.assert_array_equal(hit.data["image"], frame)
    markers = results.items("hits")
    assert isinstance(markers[0], bp.StreamStart) and isinstance(markers[-1], bp.EndOfStream)


def test_peaks_with_panels_resolution_limits_and_other_settings():
    frame, _ = simulated(4, hit_fraction=1.0, seed=5)[2]
    settings = {"adc_threshold": 50.0, "min_snr": 4.0, "min_pixels": 3, "max_pixels": 30}
    params = {
        **settings,
        "center": [150.0, -175.0],
        "local_bg_radius": 4,
        "min_res": 300.0,
        "max_res": 650.0,
        "panels": [1, 1],
    }
    crop = np.where(frame < 0, np.nan, frame.astype(np.float32))[: 3 * 206]
    for panels in ([1, 1], [3, 1]):  # 3 panels of 206 rows: the PILATUS modules and their gaps
        (m,) = run(PeaksFind, stream([crop]), {**params, "panels": panels}).messages()
        ref = reference(
            np.nan_to_num(crop),
            np.isfinite(crop),
            center=(150.0, -175.0),
            adc=50.0,
            snr=4.0,
            min_pix=3,
            max_pix=30,
            bg=4,
            min_res=300.0,
            max_res=650.0,
            panels=tuple(panels),
        )
        assert_equal_peaks(m.data, ref)
        assert ref["fs"].size > 5
        radius = np.hypot(ref["fs"] - 150.0, ref["ss"] + 175.0)
        assert radius.min() >= 298 and radius.max() <= 652


def test_a_full_peak_list_is_warned_about():
    frame, _ = simulated(1, hit_fraction=1.0)[0]
    results = run(PeaksFind, stream([frame]), {**PARAMS, "max_peaks": 5})
    (m,) = results.messages()
    assert int(m.data["n_peaks"]) == 5
    assert_equal_peaks(m.data, reference(frame, frame >= 0, max_peaks=5))
    (text,) = results.warnings
    assert "max_peaks (5)" in text


def test_beam_center_from_a_poni_file(tmp_path):
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    ai = AzimuthalIntegrator(detector="Pilatus300k", wavelength=1e-10)
    ai.setFit2D(200.0, centerX=150.0, centerY=-175.0)
    ai.save(str(tmp_path / "waxs.poni"))
    frame, _ = simulated(1, hit_fraction=1.0)[0]
    np.save(tmp_path / "mask.npy", frame < 0)
    params = {**PARAMS, "center": None, "poni": "waxs.poni", "mask": "mask.npy"}
    (m,) = run(PeaksFind, stream([frame]), params, base_dir=tmp_path).messages()
    fit2d = ai.getFit2D()
    ref = reference(frame, frame >= 0, center=(fit2d["centerX"], fit2d["centerY"]))
    assert ref["fs"].size >= 20
    assert_equal_peaks(m.data, ref)
    with pytest.raises(GeometryError, match=r"params\.poni .* detector of shape \(619, 487\)"):
        run(PeaksFind, stream([frame[:600]]), {**params, "mask": None}, base_dir=tmp_path)
    with pytest.raises(GeometryError, match=r"params\.poni: PONI file .*missing\.poni"):
        run(PeaksFind, [], {**params, "poni": "missing.poni"}, base_dir=tmp_path)


def test_the_beam_center_of_a_tilted_poni_is_where_pyfai_puts_the_direct_beam():
    poni = REPO.parent / "shared" / "data" / "powder-ni-xpd" / "Ni_poni_file.poni"
    if not poni.is_file():
        pytest.skip(f"no shared data {poni}")
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    node = PeaksFind(PeaksFind.Params(poni=str(poni)), "peaks")
    ai = AzimuthalIntegrator()
    ai.load(str(poni))
    assert ai.rot1 or ai.rot2  # a tilted detector
    tth = ai.center_array((2048, 2048), unit="2th_rad")
    row, col = np.unravel_index(np.argmin(tth), tth.shape)
    assert abs(node.center[0] - col) <= 0.5 and abs(node.center[1] - row) <= 0.5


def test_without_om_the_node_says_which_extra_installs_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "om.algorithms._crystallography", None)
    with pytest.raises(ImportError, match=r"pip install 'beampipe\[peaks\]'"):
        PeaksFind(PeaksFind.Params(center=(1.0, 2.0)), "peaks")


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({}, "give exactly one of center"),
        ({"center": [1, 2], "poni": "x.poni"}, "give exactly one of center"),
        ({"center": [1, 2], "min_pixels": 5, "max_pixels": 4}, "min_pixels"),
        ({"center": [1, 2], "min_res": 10, "max_res": 5}, "min_res"),
        ({"center": [1, 2], "panels": [0, 1]}, "panels"),
        ({"center": [1, 2], "frames": "hits"}, "frames"),
    ],
)
def test_bad_params_are_refused(params, error):
    with pytest.raises(ValueError, match=error):
        PeaksFind.Params.model_validate(params)


def test_frames_that_do_not_divide_into_panels_or_a_far_beam_center_are_errors():
    frame, _ = simulated(1)[0]
    with pytest.raises(ValueError, match=r"619 rows x 487 columns .* 2 x 1 panels.*panels"):
        run(PeaksFind, stream([frame]), {**PARAMS, "panels": [2, 1]})
    with pytest.raises(ValueError, match=r"beam centre far off the detector .*params\.center"):
        run(PeaksFind, stream([frame]), {**PARAMS, "center": [1e6, 0]})


# -- hit_rate -----------------------------------------------------------------------------------


def _peaks_messages(hits: list[bool], stream_name: str = "run1") -> list:
    items: list = [bp.StreamStart(stream_name, {})]
    for i, hit in enumerate(hits, 1):
        data = {"hit": np.asarray(hit), "n_peaks": np.asarray(25 if hit else 3, np.int64)}
        items.append(bp.Message(data=data, stream=stream_name, id=i))
    items.append(bp.EndOfStream(stream_name, len(hits)))
    return items


def test_hit_rate_counts_every_n_frames_and_at_the_end():
    hits = [True, False, False, True, True, False, False]
    results = run(HitRate, _peaks_messages(hits), {"every": 3})
    out = results.messages()
    assert [(int(m.data["frames"]), int(m.data["hits"])) for m in out] == [(3, 1), (6, 3), (7, 3)]
    assert [float(m.data["hit_rate"]) for m in out] == [1 / 3, 3 / 6, 3 / 7]
    assert [int(m.data["peaks"]) for m in out] == [31, 84, 87]
    assert [m.metadata["final"] for m in out] == [False, False, True]
    assert out[-1].metadata["hit_rate"] == 3 / 7 and out[-1].metadata["signal"] == "hit_rate"
    assert [m.id for m in out] == [3, 6, 7]


def test_hit_rate_needs_the_hit_flag():
    items = _peaks_messages([True])
    del items[1].data["hit"]
    with pytest.raises(KeyError, match="no column 'hit'"):
        run(HitRate, items)


# -- cxi_writer -----------------------------------------------------------------------------------


def test_cxi_writer_pads_the_peaks_of_the_hits_and_stacks_their_frames(tmp_path):
    frames = simulated(6, hit_fraction=0.5, seed=3)
    found = run(PeaksFind, stream([f for f, _ in frames]), PARAMS)
    hits = found.messages("hits")
    assert [m.id for m in hits] == [m.id for m in found.messages() if bool(m.data["hit"])]
    assert 0 < len(hits) < len(frames)
    items = [bp.StreamStart("run 1", {}), *hits, bp.EndOfStream("run 1", len(frames))]
    for m in hits:
        m.stream = "run 1"
    writer = CxiWriter(CxiWriter.Params(directory=str(tmp_path / "cxi"), max_peaks=100))
    run(writer, items)
    with h5py.File(tmp_path / "cxi" / "run_1.cxi") as f:
        assert f["cxi_version"][()] == 140
        result = f["entry_1/result_1"]
        assert list(result["nPeaks"][()]) == [int(m.data["n_peaks"]) for m in hits]
        for key, name in [("peakXPosRaw", "peak_fs"), ("peakSNR", "peak_snr")]:
            assert result[key].shape == (len(hits), 100) and result[key].dtype == np.float32
            for row, m in enumerate(hits):
                n = int(m.data["n_peaks"])
                np.testing.assert_array_equal(result[key][row, :n], m.data[name])
                assert not result[key][row, n:].any()
        stack = f["entry_1/data_1/data"]
        np.testing.assert_array_equal(stack[()], [m.data["image"] for m in hits])
        ids = [s.decode() for s in f["entry_1/experiment_identifier"][()]]
        assert ids == [f"run 1//{m.id}" for m in hits]


def test_cxi_writer_every_frame_peaks_only(tmp_path):
    frames = simulated(4, hit_fraction=0.5, seed=3)
    messages = run(PeaksFind, stream([f for f, _ in frames]), PARAMS).messages()
    items = [bp.StreamStart("run1", {}), *messages, bp.EndOfStream("run1", len(messages))]
    params = {"directory": str(tmp_path), "hits_only": False, "frames": False, "max_peaks": 80}
    run(CxiWriter, items, params)
    with h5py.File(tmp_path / "run1.cxi") as f:
        assert "data" not in f["entry_1/data_1"]
        result = f["entry_1/result_1"]
        assert list(result["nPeaks"][()]) == [int(m.data["n_peaks"]) for m in messages]
        for row, m in enumerate(messages):
            n = int(m.data["n_peaks"])
            np.testing.assert_array_equal(result["peakYPosRaw"][row, :n], m.data["peak_ss"])
            np.testing.assert_array_equal(result["peakMaximumValue"][row, :n], m.data["peak_max"])
    items[1].data["n_peaks"] = np.asarray(81, np.int64)
    with pytest.raises(ValueError, match=r"81 peaks, more than params\.max_peaks \(80\)"):
        run(CxiWriter, items, params)


def test_cxi_writer_refuses_a_hit_without_its_frame(tmp_path):
    frame, _ = simulated(1, hit_fraction=1.0)[0]
    messages = run(PeaksFind, stream([frame]), PARAMS).messages()
    items = [bp.StreamStart("run1", {}), *messages, bp.EndOfStream("run1", 1)]
    with pytest.raises(ValueError, match=r"connect the peaks\.find node's port 'hits'"):
        run(CxiWriter, items, {"directory": str(tmp_path)})


# -- a real pipeline: examples/serial-hits ------------------------------------------------------


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory):
    cwd = tmp_path_factory.mktemp("run")
    done = beampipe("run", str(EXAMPLE / "pipeline.yaml"), cwd=cwd)
    return done, cwd / "out"


def test_example_hits_and_hit_rate_equal_peakfinder8_directly(example):
    done, out = example
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr, done.stderr
    frames = simulated(60)
    refs = []
    for frame, _ in frames:
        corrected = np.where(frame < 0, np.nan, frame.astype(np.float32))
        refs.append(reference(np.nan_to_num(corrected), frame >= 0))
    hit_ids = [i for i, r in enumerate(refs, 1) if r["fs"].size >= 20]
    assert hit_ids == [i for i, (_, s) in enumerate(frames, 1) if s]  # the simulated hits
    with h5py.File(out / "serial-hits.nxs") as f:
        g = f["run1/hitrate"]
        assert list(g["frames"][()]) == [10, 20, 30, 40, 50, 60, 60]
        hits = list(g["hits"][()])  # 2 replicas: the first 10 to arrive need not be ids 1-10
        assert hits == sorted(hits) and hits[-2:] == [len(hit_ids)] * 2
        assert g["hit_rate"][-1] == len(hit_ids) / 60
        assert g["peaks"][-1] == sum(r["fs"].size for r in refs)
    assert nxcheck(out / "serial-hits.nxs")[0] == 0
    with h5py.File(out / "run1.cxi") as f:
        ids = [int(s.decode().split("//")[1]) for s in f["entry_1/experiment_identifier"][()]]
        assert sorted(ids) == hit_ids  # 2 replicas: in arrival order
        result = f["entry_1/result_1"]
        for row, i in enumerate(ids):
            ref = refs[i - 1]
            n = ref["fs"].size
            assert result["nPeaks"][row] == n
            np.testing.assert_array_equal(result["peakXPosRaw"][row, :n], ref["fs"])
            np.testing.assert_array_equal(result["peakYPosRaw"][row, :n], ref["ss"])
            np.testing.assert_array_equal(result["peakTotalIntensity"][row, :n], ref["intensity"])
            np.testing.assert_array_equal(result["peakNPixels"][row, :n], ref["npix"])
            frame = frames[i - 1][0]
            np.testing.assert_array_equal(
                f["entry_1/data_1/data"][row], np.where(frame < 0, np.nan, frame.astype(np.float32))
            )


def test_validate_names_the_node_and_param_of_a_bad_peaks_setting(tmp_path):
    (tmp_path / "pipeline.yaml").write_text(
        textwrap.dedent("""\
        name: bad
        nodes:
          frames: {use: detector_sim, params: {frames: 2}}
          peaks: {use: peaks.find, params: {adc_threshold: 100}}
        connections:
          - frames -> peaks
        """)
    )
    done = beampipe("validate", "pipeline.yaml", cwd=tmp_path)
    assert done.returncode != 0
    assert "peaks" in done.stdout + done.stderr
    assert "give exactly one of center" in done.stdout + done.stderr


def test_example_under_ui_shows_the_final_hit_rate_in_the_viewer(tmp_path):
    pytest.importorskip("fastapi")
    log = tmp_path / "run.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "beampipe", "run", str(EXAMPLE / "pipeline.yaml"), "--ui"],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 300
        while not (m := re.search(r"viewer: still serving (\S+)", log.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        with urllib.request.urlopen(f"{m[1]}api/plot/hitrate/out?key=hit_rate", timeout=10) as r:
            plot = json.loads(r.read())
        (trace,) = plot["traces"]
        assert trace["finished"] and trace["last_id"] == 60
        # the frames given spots: the hits peakfinder8 finds (the test above)
        assert trace["y"][-1] == sum(1 for _, spots in simulated(60) if spots) / 60
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
