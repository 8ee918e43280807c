"""``xrf.fit`` on PyMca's two real spectra (tests/data/xrf) with their fit configurations: peak
areas, their uncertainties and chi-square equal PyMca's ``ClassMcaTheory`` run directly on the
same spectrum with the same configuration (rtol 1e-6), in linear and full mode, with one fit
object reused over several spectra; and the errors for bad configurations and spectra."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import beampipe
from beampipe.nodes.xrf.fit import SpectrumMismatch, XrfConfigError, XrfFit
from beampipe.testing import run

DATA = Path(__file__).resolve().parent / "data" / "xrf"
# spectrum file -> (its scan number in PyMca's specfile reader, its fit configuration)
SPECTRA = {"XRFSpectrum.mca": (1, "XRFSpectrum.cfg"), "Steel.spe": (0, "Steel.cfg")}
MODES = {"linear": 1, "full": 0}


def read_spectrum(name: str) -> np.ndarray:
    """The counts of ``name``, read with PyMca's own reader."""
    from PyMca5.PyMcaIO import specfilewrapper

    scan = SPECTRA[name][0]
    return np.asarray(specfilewrapper.Specfile(str(DATA / name))[scan].mca(1))


def direct_fit(name: str, mode: str, y: np.ndarray, keep: bool = False) -> Any:
    """PyMca called directly on ``y``: a fresh fit object, as PyMca's own tests do; its digested
    result, or with ``keep`` the fit object (its ``result`` set to that)."""
    from PyMca5.PyMcaIO import ConfigDict
    from PyMca5.PyMcaPhysics.xrf import ClassMcaTheory

    config = ConfigDict.ConfigDict()
    config.read(str(DATA / SPECTRA[name][1]))
    config["fit"]["linearfitflag"] = MODES[mode]
    fit = ClassMcaTheory.ClassMcaTheory()
    config = fit.configure(config)
    x = np.arange(y.size, dtype=np.float64)
    fit.setData(x, y, xmin=config["fit"]["xmin"], xmax=config["fit"]["xmax"])
    fit.estimate()
    result = fit.startfit(digest=1)[1]
    if keep:
        fit.result = result
        return fit
    return result


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", SPECTRA)
def test_fit_equals_pymca_directly(name: str, mode: str) -> None:
    y = read_spectrum(name)
    # the same fit object fits every spectrum: the real one, a rescaled one, the real one again
    spectra = [y, np.round(0.5 * y), y]
    items = [
        beampipe.Message(data={"spectrum": s}, metadata={"x": i, "y": 0}, stream="scan", id=i + 1)
        for i, s in enumerate(spectra)
    ]
    params = {"config": str(DATA / SPECTRA[name][1]), "mode": mode}
    out = run(XrfFit, items, params=params, name="fit").messages()
    assert [m.id for m in out] == [1, 2, 3]
    for msg, s in zip(out, spectra, strict=True):
        ref = direct_fit(name, mode, s)
        assert msg.metadata["lines"] == list(ref["groups"]) and len(ref["groups"]) >= 5
        np.testing.assert_allclose(
            msg.data["area"], [ref[g]["fitarea"] for g in ref["groups"]], rtol=1e-6
        )
        np.testing.assert_allclose(
            msg.data["area_sigma"], [ref[g]["sigmaarea"] for g in ref["groups"]], rtol=1e-6
        )
        np.testing.assert_allclose(msg.data["chisq"], ref["chisq"], rtol=1e-6)
        assert msg.metadata["x"] == msg.id - 1 and msg.metadata["mode"] == mode
    big = np.argmax(out[0].data["area"])  # the fit follows the data
    assert out[1].data["area"][big] == pytest.approx(0.5 * out[0].data["area"][big], rel=0.02)


@pytest.mark.parametrize("name", SPECTRA)
def test_mass_fractions_equal_pymca_directly(name: str) -> None:
    from PyMca5.PyMcaPhysics.xrf import ConcentrationsTool

    y = read_spectrum(name)
    params = {"config": str(DATA / SPECTRA[name][1]), "concentrations": True}
    msg = beampipe.Message(data={"spectrum": y}, stream="scan", id=1)
    out = run(XrfFit, [msg, msg.replace(id=2)], params=params, name="fit").messages()
    fit = direct_fit(name, "linear", y, keep=True)
    tool = ConcentrationsTool.ConcentrationsTool()
    config = tool.configure()
    config.update(fit.config["concentrations"])
    ref = tool.processFitResult(
        config=config,
        fitresult={"result": fit.result},
        elementsfrommatrix=False,
        fluorates=fit._fluoRates,
        addinfo=False,
    )["mass fraction"]
    lines = out[0].metadata["lines"]
    want = [ref.get(g, np.nan) for g in lines]
    for m in out:
        np.testing.assert_allclose(m.data["mass_fraction"], want, rtol=1e-6)
    assert np.isnan(want).sum() == sum(g.startswith("Scatter") for g in lines)
    if name == "XRFSpectrum.mca":  # Co is the internal standard at 500 ppm (PyMca's own test)
        assert out[0].data["mass_fraction"][lines.index("Co K")] == pytest.approx(0.0005, abs=1e-7)
    settings = out[0].metadata["process"]["concentrations"]  # the settings used, for NeXus
    assert settings == {k: v for k, v in config.items() if k in settings}
    assert {"flux", "time", "area", "distance", "reference"} <= set(settings)


def test_process_metadata_names_pymca_and_holds_the_cfg_text() -> None:
    import PyMca5

    path = DATA / "Steel.cfg"
    msg = beampipe.Message(data={"spectrum": read_spectrum("Steel.spe")}, stream="s", id=1)
    out = run(XrfFit, [msg], params={"config": str(path), "mode": "full"}, name="fit")
    process = out.messages()[0].metadata["process"]
    assert (process["name"], process["program"]) == ("xrf_fit", "PyMca")
    assert process["version"] == PyMca5.version()
    note = process["notes"]["config"]
    assert note["data"].encode() == path.read_bytes() and note["type"].endswith("utf-8")
    assert note["file_name"] == str(path)
    parameters = process["parameters"]
    assert parameters["mode"] == "full" and parameters["concentrations"] is False
    fit = direct_fit("Steel.spe", "full", read_spectrum("Steel.spe"), keep=True)
    for key in ("xmin", "xmax"):
        assert parameters[key] == fit.config["fit"][key]
    for key in ("zero", "gain"):
        assert parameters[key] == fit.config["detector"][key]
    assert parameters["energy"] == fit.config["fit"]["energy"][0] == 16.0


def test_config_that_does_not_parse(tmp_path: Path) -> None:
    bad = tmp_path / "broken.cfg"
    bad.write_text("[fit]\nxmin = 10\n[[[ not a section\n")
    with pytest.raises(
        XrfConfigError,
        match=r"fit: fit configuration '.*broken\.cfg' does not "
        r"parse as a PyMca \.cfg file: .*line\s+3",
    ):
        run(XrfFit, [], params={"config": str(bad)}, name="fit")


def test_config_without_element_lines() -> None:
    # PyMca's McaTheory.cfg is a template: detector and peak shape, but no elements to fit
    with pytest.raises(XrfConfigError, match=r"fit: .*McaTheory\.cfg'?: \[peaks\] names no "):
        run(XrfFit, [], params={"config": str(DATA / "McaTheory.cfg")}, name="fit")


def test_config_missing(tmp_path: Path) -> None:
    with pytest.raises(XrfConfigError, match=r"fit: .*nothere\.cfg'?: no such file"):
        run(XrfFit, [], params={"config": str(tmp_path / "nothere.cfg")}, name="fit")


def test_spectrum_shorter_than_the_fit_range() -> None:
    y = read_spectrum("Steel.spe")[:1024]  # Steel.cfg fits channels 200 to 1432
    msg = beampipe.Message(data={"spectrum": y}, stream="scan7", id=12)
    with pytest.raises(SpectrumMismatch) as info:
        run(XrfFit, [msg], params={"config": str(DATA / "Steel.cfg")}, name="fit")
    text = str(info.value)
    for part in ("fit:", "stream 'scan7'", "id 12", "Steel.cfg", "(1024,)", "200 to 1432"):
        assert part in text, text


def test_concentrations_without_their_section(tmp_path: Path) -> None:
    text = (DATA / "Steel.cfg").read_text()
    start = text.index("[concentrations]")
    end = text.index("\n[", start + 1)
    cfg = tmp_path / "noconc.cfg"
    cfg.write_text(text[:start] + text[end + 1 :])
    params = {"config": str(cfg), "concentrations": True}
    with pytest.raises(XrfConfigError, match=r"fit: .*noconc\.cfg'?: no \[concentrations\]"):
        run(XrfFit, [], params=params, name="fit")
    run(XrfFit, [], params={"config": str(cfg)}, name="fit")  # without: fine


def test_process_rides_on_a_streams_first_result_only() -> None:
    """The ~12 kB description goes once per stream (and replica), not with every spectrum; an
    upstream node's ``process`` on the others is not passed on as this node's."""
    y = read_spectrum("Steel.spe")
    msgs = [
        beampipe.Message(data={"spectrum": y}, metadata={"process": {"name": "up"}}, stream=s, id=i)
        for s, i in (("a", 2), ("a", 3), ("b", 1), ("a", 1))
    ]
    out = run(XrfFit, msgs, params={"config": str(DATA / "Steel.cfg")}, name="fit").messages()
    carried = [(m.stream, m.id, m.metadata.get("process", {}).get("name")) for m in out]
    assert carried == [
        ("a", 2, "xrf_fit"),
        ("a", 3, None),
        ("b", 1, "xrf_fit"),
        ("a", 1, "xrf_fit"),
    ]
