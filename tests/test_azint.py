"""``azint.integrate1d`` and ``azint.integrate2d`` (issue 18): I(q), sigma and the cake equal
pyFAI's ``integrate1d``/``integrate2d`` called directly on the same real frames, with the same
geometry and options (rtol 1e-6); normalised patterns equal the direct result divided by the
monitor; geometry errors are clear errors at ``beampipe validate`` or at a stream's first frame.

Frames: the PerkinElmer frame of NSLS-II XPD with its PONI and mask (examples/powder-xpd/data,
see its README), at full size through a real ``beampipe run``, and 4 x 4 binned (512 x 512,
pixels of 0.8 mm, the PONI's geometry given as params) for the options, which keeps pyFAI's
look-up tables quick to build."""

from __future__ import annotations

import re
import textwrap
from types import SimpleNamespace

import fabio
import h5py
import numpy as np
import pytest
from conftest import REPO, beampipe
from pyFAI.detectors import Detector
from pyFAI.integrator.azimuthal import AzimuthalIntegrator
from pyFAI.method_registry import IntegrationMethod

import beampipe as bp
from beampipe.nodes.azint.geometry import GeometryError, chosen_method, load_pyfai
from beampipe.nodes.azint.integrate import Integrate1d, Integrate2d
from beampipe.nodes.frame.pixels import PixelFileError
from beampipe.nodes.reduce.mean import Mean
from beampipe.testing import run

XPD = REPO / "examples" / "powder-xpd" / "data"
PONI = XPD / "Ni_poni_file.poni"
RTOL = 1e-6

load_pyfai()


def ni() -> tuple[np.ndarray, np.ndarray]:
    """The PerkinElmer frame (2048, 2048) float32 and its mask (uint8, nonzero = masked)."""
    with fabio.open(str(XPD / "Ni_img_file.tiff.gz")) as img:
        frame = np.asarray(img.data)
    with fabio.open(str(XPD / "mask_file.tiff.gz")) as img:
        mask = np.asarray(img.data)
    return frame, mask


def binned() -> list[np.ndarray]:
    """Three 512 x 512 frames from the real one: 4 x 4 sums, that times 0.5, and flipped."""
    frame = ni()[0].astype(np.float64).reshape(512, 4, 512, 4).sum(axis=(1, 3))
    frame = frame.astype(np.float32)
    return [frame, frame * np.float32(0.5), frame[::-1].copy()]


def geometry() -> dict[str, float]:
    """The PONI's geometry as params, for the 4 x 4 binned detector (0.8 mm pixels)."""
    ai = AzimuthalIntegrator()
    ai.load(str(PONI))
    names = ("poni1", "poni2", "rot1", "rot2", "rot3", "wavelength")
    return {
        "distance": ai.dist,
        **{k: float(getattr(ai, k)) for k in names},
        "pixel1": 8e-4,
        "pixel2": 8e-4,
    }


def direct(g: dict[str, float]) -> AzimuthalIntegrator:
    """pyFAI's integrator for the params ``g``, made directly."""
    return AzimuthalIntegrator(
        dist=g["distance"],
        poni1=g["poni1"],
        poni2=g["poni2"],
        rot1=g["rot1"],
        rot2=g["rot2"],
        rot3=g["rot3"],
        detector=Detector(pixel1=g["pixel1"], pixel2=g["pixel2"]),
        wavelength=g["wavelength"],
    )


def stream(frames, name="scan", metadata=None) -> list:
    items: list = [bp.StreamStart(name, {})]
    for i, frame in enumerate(frames, 1):
        frame = np.array(frame)  # a copy: the caller's frame stays writable
        frame.setflags(write=False)  # as from the wire
        meta = {"signal": "image", **((metadata or {}).get(i, {}))}
        items.append(bp.Message(data={"image": frame}, metadata=meta, stream=name, id=i))
    items.append(bp.EndOfStream(name, len(frames)))
    return items


def close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=RTOL)


# -- a real pipeline ----------------------------------------------------------------------------


def test_pipeline_image_files_integrate1d_nexus_equals_pyfai_and_mean_pattern(tmp_path):
    frame, mask = ni()
    frames = [frame, frame * np.float32(0.5), frame[::-1].copy()]
    (tmp_path / "scan").mkdir()
    for i, f in enumerate(frames):
        fabio.tifimage.TifImage(data=f).write(str(tmp_path / "scan" / f"ni_{i}.tif"))
    (tmp_path / "pipeline.yaml").write_text(
        textwrap.dedent(f"""\
        name: azint
        nodes:
          frames: {{use: image_files, params: {{paths: scan/*.tif, stream_by: folder}}}}
          azint:
            use: azint.integrate1d
            replicas: 2              # each sends ``process`` on its first result of the stream
            params:
              poni: {PONI}
              mask: {XPD / "mask_file.tiff.gz"}
              unit: q_A^-1
              npt: 1000
              polarization_factor: 0.99
          average: {{use: mean, params: {{fields: [intensity, q]}}}}
          nexus:
            use: nexus_writer
            ordered: [pattern]       # the 2 replicas' patterns in id order
            params:
              path: out/azint.nxs
              xas: null
              groups: {{mean: {{mode: replace}}}}
        connections:
          - frames -> azint
          - azint -> nexus.pattern
          - azint -> average
          - average -> nexus.mean
        """)
    )
    done = beampipe("validate", "pipeline.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = beampipe("run", "pipeline.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "finished: 1/1 streams, 3 messages" in done.stderr, done.stderr
    assert "warning" not in done.stderr, done.stderr
    ai = AzimuthalIntegrator()
    ai.load(str(PONI))
    options = {"unit": "q_A^-1", "mask": mask, "polarization_factor": 0.99}
    want = [ai.integrate1d(f, 1000, error_model="poisson", **options) for f in frames]
    with h5py.File(tmp_path / "out" / "azint.nxs") as f:
        pattern = f["scan/pattern"]
        assert list(pattern["id"]) == [1, 2, 3]
        assert pattern["intensity"].shape == (3, 1000)  # the waterfall: frame x q
        assert pattern.attrs["signal"] == "intensity"
        assert list(pattern.attrs["axes"]) == ["id", "q"]
        assert pattern["q"].attrs["units"] == "1/angstrom"
        close(pattern["q"][()], want[0].radial)  # one q axis for the stream (NXazint1d)
        for k, result in enumerate(want):
            close(pattern["intensity"][k], result.intensity)
            close(pattern["sigma"][k], result.sigma)
        reduction = f["scan/pattern_azint/reduction"]  # NXprocess from the first message
        assert reduction["program"].asstr()[()] == "pyFAI"
        assert reduction["input/poni"].asstr()[()] == PONI.read_text()
        assert reduction["input/npt"][()] == 1000
        mean = f["scan/mean"]
        close(mean["intensity"][()], np.mean([r.intensity for r in want], axis=0))
        close(mean["q"][()], want[0].radial)
        assert mean["count"][()] == 3


def test_process_rides_on_a_streams_first_result_only():
    g, frames = geometry(), binned()
    items = [*stream(frames), *stream(frames[:2], name="scan2")]
    items[1].metadata["process"] = {"program": "an upstream node's"}
    items[2].metadata["process"] = {"program": "an upstream node's"}
    results = run(Integrate1d, items, {**g, "npt": 300})
    out = results.messages()
    ids = [(m.stream, m.id) for m in out]
    assert ids == [("scan", 1), ("scan", 2), ("scan", 3), ("scan2", 1), ("scan2", 2)]
    first = out[0].metadata["process"]
    assert first["program"] == "pyFAI" and first["parameters"]["npt"] == 300
    assert out[3].metadata["process"] == first  # the next stream's first result has it again
    assert [m.id for m in out if "process" in m.metadata] == [1, 1]


def test_process_rides_again_on_a_result_below_every_id_sent_before():
    """Events complete out of id order (a late monitor): an ordered writer's first message is
    the lowest id, so it carries ``process`` too."""
    g, frames = geometry(), binned()
    items = stream(frames)
    items[1:4] = [items[2], items[3], items[1]]  # ids 2, 3, 1
    out = run(Integrate1d, items, {**g, "npt": 300}).messages()
    assert [m.id for m in out] == [2, 3, 1]
    assert ["process" in m.metadata for m in out] == [True, False, True]


# -- options, through beampipe.testing ----------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "options"),
    [
        ({}, {"unit": "q_nm^-1", "error_model": "poisson"}),
        (
            {"unit": "2th_deg", "error_model": "azimuthal", "polarization_factor": -0.5},
            {"unit": "2th_deg", "error_model": "azimuthal", "polarization_factor": -0.5},
        ),
        (
            {"unit": "r_mm", "solid_angle": False, "method": ["no", "histogram", "cython"]},
            {
                "unit": "r_mm",
                "correctSolidAngle": False,
                "method": ("no", "histogram", "cython"),
                "error_model": "poisson",
            },
        ),
        (
            {"unit": "q_A^-1", "error_model": None, "method": ["full", "csr", "cython"]},
            {"unit": "q_A^-1", "method": ("full", "csr", "cython")},
        ),
    ],
    ids=["q_nm-poisson", "2th-azimuthal-polarization", "r-histogram-no-solid-angle", "q_A-full"],
)
def test_integrate1d_options_equal_pyfai(params, options):
    g, frames = geometry(), binned()
    results = run(Integrate1d, stream(frames), {**g, "npt": 300, **params}, name="azint")
    ai = direct(g)
    out = results.messages()
    assert [m.id for m in out] == [1, 2, 3]
    radial = options["unit"].split("_")[0]
    for msg, frame in zip(out, frames, strict=True):
        want = ai.integrate1d(frame, 300, **options)
        close(msg.data["intensity"], want.intensity)
        close(msg.data[radial], want.radial)
        if want.sigma is None:
            assert "sigma" not in msg.data
        else:
            close(msg.data["sigma"], want.sigma)
        assert msg.metadata["signal"] == "intensity" and msg.metadata["axes"] == [radial]
        assert msg.metadata["unit"] == options["unit"]


def test_integrate1d_dark_flat_and_mask_equal_pyfai(tmp_path):
    g, frames = geometry(), binned()
    rows = np.arange(512, dtype=np.float32)[:, None]
    dark = np.float32(20) + rows / 64 + np.zeros((1, 512), np.float32)
    flat = np.float32(1) + (rows - 256) / 2048 + np.zeros((1, 512), np.float32)
    mask = np.zeros((512, 512), np.uint8)
    mask[240:270, :] = 1  # a band across the rings, and one through the beam centre's column
    mask[:, 250:262] = 1
    for name, image in (("dark", dark), ("flat", flat), ("mask", mask)):
        np.save(tmp_path / f"{name}.npy", image)
    params = {**g, "npt": 250, "dark": "dark.npy", "flat": "flat.npy", "mask": "mask.npy"}
    results = run(Integrate1d, stream(frames), params, base_dir=tmp_path)
    ai = direct(g)
    for msg, frame in zip(results.messages(), frames, strict=True):
        want = ai.integrate1d(
            frame, 250, dark=dark, flat=flat, mask=mask, error_model="poisson", unit="q_nm^-1"
        )
        close(msg.data["intensity"], want.intensity)
        close(msg.data["sigma"], want.sigma)


def test_integrate2d_cake_equals_pyfai():
    g, frames = geometry(), binned()
    params = {**g, "npt": 200, "npt_azim": 72, "unit": "2th_deg", "polarization_factor": 0.99}
    results = run(Integrate2d, stream(frames), params)
    ai = direct(g)
    for msg, frame in zip(results.messages(), frames, strict=True):
        want = ai.integrate2d(
            frame, 200, 72, unit="2th_deg", polarization_factor=0.99, error_model="poisson"
        )
        assert msg.data["intensity"].shape == (72, 200)
        close(msg.data["intensity"], want.intensity)
        close(msg.data["sigma"], want.sigma)
        close(msg.data["2th"], want.radial)
        close(msg.data["chi"], want.azimuthal)
        assert msg.metadata["axes"] == ["chi", "2th"]
        assert msg.metadata["units"] == {"2th": "degree", "chi": "degree"}


@pytest.mark.parametrize(
    ("unit", "radial_range", "azimuth_range"),
    [
        ("q_A^-1", (2.0, 5.5), None),
        ("2th_deg", (10.0, 30.0), (-90.0, 45.0)),
        ("r_mm", None, (0, 180)),
    ],
    ids=["q-radial", "2th-both", "r-azimuth"],
)
def test_radial_and_azimuth_ranges_equal_pyfai(unit, radial_range, azimuth_range):
    g, frames = geometry(), binned()
    ranges = {"radial_range": radial_range, "azimuth_range": azimuth_range}
    params = {**g, "npt": 200, "unit": unit, **ranges}
    patterns = run(Integrate1d, stream(frames), params).messages()
    cakes = run(Integrate2d, stream(frames), {**params, "npt_azim": 36}).messages()
    ai = direct(g)
    radial = unit.split("_")[0]
    for pattern, cake, frame in zip(patterns, cakes, frames, strict=True):
        want = ai.integrate1d(frame, 200, unit=unit, error_model="poisson", **ranges)
        close(pattern.data["intensity"], want.intensity)
        close(pattern.data["sigma"], want.sigma)
        close(pattern.data[radial], want.radial)
        want = ai.integrate2d(frame, 200, 36, unit=unit, error_model="poisson", **ranges)
        close(cake.data["intensity"], want.intensity)
        close(cake.data[radial], want.radial)
        close(cake.data["chi"], want.azimuthal)
    if radial_range is not None:  # the range is honoured, not ignored
        assert radial_range[0] <= patterns[0].data[radial].min()
        assert patterns[0].data[radial].max() <= radial_range[1]
    if azimuth_range is not None:
        assert azimuth_range[0] <= cakes[0].data["chi"].min()
        assert cakes[0].data["chi"].max() <= azimuth_range[1]
    given = patterns[0].metadata["process"]["parameters"]
    assert given.get("radial_range") == (list(radial_range) if radial_range else None)


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"radial_range": [5, 2]}, "radial_range [5.0, 2.0] is not [low, high] with low < high"),
        ({"azimuth_range": [0, 0]}, "azimuth_range [0.0, 0.0] is not [low, high]"),
        ({"radial_range": [-1, 2]}, "radial_range [-1, 2] is in the units of unit 'q_nm^-1'"),
        (
            {"unit": "2th_deg", "radial_range": [10, 200]},
            "low must be >= 0 and at most 180",
        ),
        ({"azimuth_range": [-180, 270]}, "azimuth_range [-180, 270] is pyFAI's chi in degrees"),
    ],
    ids=["reversed", "empty", "negative-q", "2th-past-180", "azimuth-over-360"],
)
def test_ranges_that_cannot_be_are_refused_naming_the_param(params, error):
    with pytest.raises(ValueError, match=re.escape(error)):
        Integrate1d.Params(**geometry(), **params)


def no_opencl(monkeypatch: pytest.MonkeyPatch, devices: list) -> None:
    """pyFAI's method registry as on a machine whose OpenCL methods are ``devices``."""
    select = IntegrationMethod.select_method.__func__

    def select_method(cls, *args, **kw):
        if args[3:4] == ("opencl",):
            return devices
        return select(cls, *args, **kw)

    monkeypatch.setattr(IntegrationMethod, "select_method", classmethod(select_method))


def test_method_auto_without_an_opencl_device_runs_csr_on_the_cpu_and_says_so(monkeypatch, capsys):
    no_opencl(monkeypatch, [])  # as here: pyopencl is not installed
    g, frames = geometry(), binned()[:2]
    results = run(Integrate2d, stream(frames), {**g, "npt": 200, "npt_azim": 36}, name="azint")
    assert "azint: pyFAI method ['bbox', 'csr', 'cython'] on the CPU (method: auto)" in (
        capsys.readouterr().err
    )
    ai = direct(g)
    out = results.messages()
    for msg, frame in zip(out, frames, strict=True):
        assert msg.metadata["method"] == ["bbox", "csr", "cython"]
        want = ai.integrate2d(
            frame, 200, 36, method=("bbox", "csr", "cython"), error_model="poisson"
        )
        close(msg.data["intensity"], want.intensity)
    assert out[0].metadata["process"]["parameters"]["method"] == ["bbox", "csr", "cython"]


def test_method_auto_chooses_pyfais_first_opencl_device_that_is_not_a_cpu(monkeypatch):
    def device(kind: str, name: str) -> SimpleNamespace:
        return SimpleNamespace(target_type=kind, target_name=name, target=(0, len(name)))

    gpu = device("gpu", "NVIDIA CUDA / Tesla V100")
    no_opencl(monkeypatch, [device("cpu", "Portable Computing Language / cpu"), gpu])
    chosen = chosen_method("auto", 1)
    assert chosen.method is gpu and chosen.spec == ("bbox", "csr", "opencl")
    assert chosen.describe() == ["bbox", "csr", "opencl", "NVIDIA CUDA / Tesla V100"]
    no_opencl(monkeypatch, [device("cpu", "Portable Computing Language / cpu")])
    assert chosen_method("auto", 2).describe() == ["bbox", "csr", "cython"]
    given = chosen_method(("no", "histogram", "cython"), 1)  # a given method is taken as is
    assert given.method == ("no", "histogram", "cython") and given.device is None


def test_geometry_from_a_poni_file_equals_the_same_numbers_as_params():
    frame = ni()[0]
    from_poni = run(Integrate1d, stream([frame]), {"poni": str(PONI), "npt": 500}).messages()
    ai = AzimuthalIntegrator()
    ai.load(str(PONI))
    params = {
        "distance": ai.dist,
        **{k: float(getattr(ai, k)) for k in ("poni1", "poni2", "rot1", "rot2", "rot3")},
        "wavelength": ai.wavelength,
        "detector": "Perkin",
        "npt": 500,
    }
    from_params = run(Integrate1d, stream([frame]), params).messages()
    np.testing.assert_array_equal(from_poni[0].data["intensity"], from_params[0].data["intensity"])
    close(from_poni[0].data["intensity"], ai.integrate1d(frame, 500, error_model="poisson")[1])


# -- the monitor ---------------------------------------------------------------------------------


def test_monitor_from_metadata_divides_intensity_and_sigma():
    g, frames = geometry(), binned()
    i0 = {1: {"i0": 2.5e5}, 2: {"i0": 1.25e5}, 3: {"i0": 4e5}}
    results = run(Integrate1d, stream(frames, metadata=i0), {**g, "npt": 300, "monitor": "i0"})
    ai = direct(g)
    for msg, frame in zip(results.messages(), frames, strict=True):
        monitor = i0[msg.id]["i0"]
        want = ai.integrate1d(frame, 300, error_model="poisson")
        close(msg.data["intensity"], want.intensity / monitor)
        close(msg.data["sigma"], want.sigma / monitor)
        assert msg.metadata["normalization_factor"] == monitor


def test_monitor_from_the_event_of_a_counter_port_and_a_frame_without_one_is_a_dead_letter():
    g, frames = geometry(), binned()
    items = stream(frames)
    counters = [
        bp.Message(data={"i0": np.asarray(v)}, stream="scan", id=i, port="monitor")
        for i, v in ((1, 3e4), (3, 0.0))  # id 2 has none; id 3 has a zero monitor
    ]
    items[2:2] = counters[:1]
    items[-1:-1] = counters[1:]
    results = run(Integrate1d, items, {**g, "npt": 300, "monitor": "i0"}, name="azint")
    (msg,) = results.messages()
    want = direct(g).integrate1d(frames[0], 300, error_model="poisson")
    close(msg.data["intensity"], want.intensity / 3e4)
    close(msg.data["sigma"], want.sigma / 3e4)
    reasons = {item.id: str(reason) for item, reason in results.dead_letters}
    assert sorted(reasons) == [2, 3]
    assert "azint: stream 'scan', id 2: no monitor 'i0'" in reasons[2]
    assert "port(s) 'monitor' did not arrive" in reasons[2]
    assert "monitor 'i0' is 0.0: not a finite number > 0" in reasons[3]
    assert any("no monitor 'i0'" in text for text in results.warnings), results.warnings


def test_mean_reducer_on_integrate1d_output_is_the_mean_pattern():
    g, frames = geometry(), binned()
    patterns = run(Integrate1d, stream(frames), {**g, "npt": 300}).messages()
    items = [bp.StreamStart("scan", {}), *patterns, bp.EndOfStream("scan", 3)]
    (mean,) = run(Mean, items, {"fields": ["intensity", "q"]}).messages()
    ai = direct(g)
    want = [ai.integrate1d(f, 300, error_model="poisson") for f in frames]
    close(mean.data["intensity"], np.mean([w.intensity for w in want], axis=0))
    close(mean.data["q"], want[0].radial)


# -- geometry errors -----------------------------------------------------------------------------


def test_a_frame_that_does_not_fit_the_detector_is_an_error_naming_node_stream_id_and_shapes():
    frame = binned()[0]
    pattern = (
        r"azint: stream 'scan', id 1: the frame has shape \(512, 512\), the detector of the "
        r"PONI file .*Ni_poni_file\.poni.*\(2048, 2048\)"
    )
    with pytest.raises(GeometryError, match=pattern):
        run(Integrate1d, stream([frame]), {"poni": str(PONI)}, name="azint")


def test_validate_names_node_and_param_of_a_missing_poni_an_unknown_unit_method_detector(tmp_path):
    (tmp_path / "pipeline.yaml").write_text(
        textwrap.dedent("""\
        name: bad
        nodes:
          frames: {use: image_files, params: {paths: "*.tif", follow: true}}
          azint: {use: azint.integrate1d, params: {poni: nothere.poni, unit: q_Z^-1}}
          cake:
            use: azint.integrate2d
            params: {poni: nothere.poni, method: [bbox, histogram, python]}
          other:
            use: azint.integrate1d
            params: {distance: 0.2, poni1: 0.1, poni2: 0.1, detector: Pilatus7M}
        connections:
          - frames -> azint
          - frames -> cake
          - frames -> other
        """)
    )
    done = beampipe("validate", "pipeline.yaml", cwd=tmp_path)
    assert done.returncode != 0
    err = " ".join(done.stderr.split())
    assert "node 'azint': param 'poni': Value error, the PONI file" in err, err
    assert "nothere.poni' does not exist" in err
    assert "node 'azint': param 'unit': Input should be 'q_nm^-1'" in err
    assert "node 'cake': param 'method'" in err
    assert "pyFAI has no 2-D integration method ['bbox', 'histogram', 'python']" in err
    assert "node 'other': param 'detector'" in err and "no detector 'Pilatus7M'" in err


def test_params_need_one_geometry_and_a_wavelength_for_q(tmp_path):
    with pytest.raises(ValueError, match="no geometry: give poni"):
        Integrate1d.Params()
    with pytest.raises(ValueError, match="either as a PONI file or as params"):
        Integrate1d.Params(poni=str(PONI), distance=0.2)
    with pytest.raises(ValueError, match="unit 'q_nm\\^-1' needs a wavelength"):
        Integrate1d.Params(distance=0.2, poni1=0.1, poni2=0.1, detector="Pilatus1M")
    (tmp_path / "broken.poni").write_text("poni_version: 2\nDetector: Nonesuch\nDistance: x\n")
    with pytest.raises(ValueError, match=r"broken\.poni' does not parse"):
        Integrate1d.Params(poni=str(tmp_path / "broken.poni"))
    ok = Integrate1d.Params(
        distance=0.2, poni1=0.1, poni2=0.1, detector="Pilatus1M", unit="2th_deg"
    )
    assert ok.method == "auto"  # pyFAI's CSR on the CPU here, OpenCL on a GPU where pyFAI has one


def test_a_mask_of_another_shape_than_the_detector_is_an_error_when_the_node_starts(tmp_path):
    np.save(tmp_path / "mask.npy", np.zeros((512, 512), np.uint8))
    params = {"poni": str(PONI), "mask": "mask.npy"}
    wrong = r"azint: the mask .*mask\.npy' has shape \(512, 512\), the detector .* \(2048, 2048\)"
    with pytest.raises(PixelFileError, match=wrong):
        run(Integrate1d, [], params, base_dir=tmp_path, name="azint")


def test_a_given_detector_shape_is_checked_against_the_frames():
    g, frames = geometry(), binned()
    params = {**g, "shape": [512, 512], "npt": 300}
    (msg,) = run(Integrate1d, stream(frames[:1]), params).messages()
    close(msg.data["intensity"], direct(g).integrate1d(frames[0], 300, error_model="poisson")[1])
    wrong = r"id 1: the frame has shape \(256, 512\).*\(512, 512\)"
    with pytest.raises(GeometryError, match=wrong):
        run(Integrate1d, stream([frames[0][:256]]), params)


def test_pipeline_monitor_from_a_counter_port_frames_without_one_are_dead_letters(tmp_path):
    """Frames and I0 of one scan file replayed by two sources into the frame and monitor ports
    of 2 replicas, both routed by id so that the parts of an event meet: the node forms the
    events; the last frame has no I0 and is listed, counted and warned about; the others are
    the direct patterns divided by their I0."""
    g, frames = geometry(), binned()
    i0 = np.array([[2.5e4], [1.25e4]])  # one per row; the third frame has none
    with h5py.File(tmp_path / "scan.h5", "w") as f:
        f["entry/data/data"] = np.stack(frames)
        f["entry/monitor/i0"] = i0
    params = ", ".join(f"{k}: {v!r}" for k, v in g.items())
    (tmp_path / "pipeline.yaml").write_text(
        textwrap.dedent(f"""\
        name: azint-i0
        nodes:
          frames: {{use: hdf5_replay, params: {{paths: scan.h5, dataset: entry/data/data}}}}
          counters:
            use: hdf5_replay
            params: {{paths: scan.h5, dataset: entry/monitor/i0, key: i0, rows: true}}
          azint:
            use: azint.integrate1d
            replicas: 2
            events: {{timeout: 2.0}}
            params: {{{params}, npt: 300, monitor: i0}}
          nexus: {{use: nexus_writer, params: {{path: out/azint.nxs, xas: null}}}}
        connections:
          - {{connect: frames -> azint.in, routing: by_key, key: id}}
          - {{connect: counters -> azint.monitor, routing: by_key, key: id}}
          - azint -> nexus.pattern
        """)
    )
    done = beampipe("run", "pipeline.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    err = " ".join(done.stderr.split())
    assert "1 inputs dropped by nodes (azint: 1)" in err, err
    assert "azint: stream 'scan', id 3: no monitor 'i0'" in err, err
    (line,) = (tmp_path / "azint-i0.dead-letters.jsonl").read_text().splitlines()
    assert '"id": 3' in line
    ai = direct(g)
    with h5py.File(tmp_path / "out" / "azint.nxs") as f:
        pattern = f["scan/pattern"]
        assert sorted(pattern["id"]) == [1, 2]
        for row, i in enumerate(pattern["id"]):
            want = ai.integrate1d(frames[i - 1], 300, error_model="poisson")
            close(pattern["intensity"][row], want.intensity / i0[i - 1, 0])
            close(pattern["sigma"][row], want.sigma / i0[i - 1, 0])


def test_the_viewer_plots_each_stream_latest_i_of_q_against_q():
    from beampipe.viewer.previews import PortPreview

    g, frames = geometry(), binned()
    results = run(Integrate1d, stream(frames), {**g, "npt": 300, "unit": "q_A^-1"})
    preview = PortPreview()
    for item in results.items():
        preview.add(item)
    plot = preview.payload(None)
    assert (plot["kind"], plot["key"], plot["axis"]) == ("curves", "intensity", "q")
    (trace,) = plot["traces"]
    last = results.messages()[-1]
    np.testing.assert_array_equal(trace["x"], last.data["q"])
    np.testing.assert_array_equal(trace["y"], last.data["intensity"])


def test_nan_pixels_of_frame_correct_are_left_out_as_masked_pixels():
    g, frames = geometry(), binned()
    mask = np.zeros((512, 512), bool)
    mask[100:140, 300:420] = True
    marked = np.where(mask, np.float32(np.nan), frames[0])
    (msg,) = run(Integrate1d, stream([marked]), {**g, "npt": 300}, check_finite=True).messages()
    want = direct(g).integrate1d(frames[0], 300, mask=mask, error_model="poisson")
    assert np.isfinite(msg.data["intensity"]).all()
    close(msg.data["intensity"], want.intensity)
    close(msg.data["sigma"], want.sigma)
