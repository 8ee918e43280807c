"""``xrf.fit`` with ``mode: fast`` (PyMca's ``FastXRFLinearFit`` on the spectra of a batch as one
stack): peak areas, their uncertainties and mass fractions equal ``fitMultipleSpectra`` called
directly on the same stack of real spectra (PyMca's two spectra, Poisson draws of them at
several scales, and the 19 spectra of examples/xrf-map), rtol 1e-6; the same whatever the batch
size (1, 7, all); the refit of negative areas equals PyMca's on each spectrum alone; and the
errors for configurations the fast fit cannot take."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import beampipe as beampipe_cli
from pydantic import ValidationError
from test_xrf_fit import DATA, SPECTRA, read_spectrum

import beampipe
from beampipe.nodes.xrf.fit import SpectrumMismatch, XrfConfigError, XrfFit
from beampipe.nodes.xrf.stackfit import StackFit
from beampipe.testing import run

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "xrf-map"
SCALES = [1.0, 0.5, 0.1, 0.02, 2.0, 0.05, 0.3, 1.5]


def snip_config(name: str, tmp_path: Path) -> Path:
    """The configuration of spectrum ``name`` with the SNIP background that the fast fit needs
    (``[fit] stripalgorithm = 1`` instead of 0; nothing else changed)."""
    text = (DATA / SPECTRA[name][1]).read_text()
    assert "\nstripalgorithm = 0\n" in text
    path = tmp_path / f"snip-{SPECTRA[name][1]}"
    path.write_text(text.replace("\nstripalgorithm = 0\n", "\nstripalgorithm = 1\n"))
    return path


def real_stack(name: str) -> np.ndarray:
    """The real spectrum ``name`` and Poisson draws of it at several scales (seeded), (n, ch)."""
    y = read_spectrum(name).astype(np.float64)
    rng = np.random.default_rng(20)
    draws = [rng.poisson(y * s) for s in SCALES for _ in range(2)]
    return np.stack([y, *draws]).astype(np.float64)


def example_stack() -> np.ndarray:
    """The 19 spectra of examples/xrf-map/data/scan.mca, (19, 2048)."""
    from PyMca5.PyMcaIO import specfilewrapper

    scan = specfilewrapper.Specfile(str(EXAMPLE / "data" / "scan.mca"))[0]
    return np.stack([np.asarray(scan.mca(j + 1)) for j in range(scan.nbmca())]).astype(float)


def direct(config: Path, stack: np.ndarray, **kwargs: Any) -> Any:
    """PyMca's ``FastXRFLinearFit.fitMultipleSpectra`` called directly on ``stack``."""
    from PyMca5.PyMcaPhysics.xrf import FastXRFLinearFit

    fit = FastXRFLinearFit.FastXRFLinearFit()
    fit.setFitConfigurationFile(str(config))
    return fit.fitMultipleSpectra(y=stack, **kwargs)


def node_fit(config: Path, stack: np.ndarray, batch: int, **params: Any) -> list[beampipe.Message]:
    items = [
        beampipe.Message(data={"spectrum": s}, metadata={"x": i}, stream="scan", id=i + 1)
        for i, s in enumerate(stack)
    ]
    params = {"config": str(config), "mode": "fast", "max_batch": batch, **params}
    out = run(XrfFit, items, params=params, name="fit").messages()
    assert [m.id for m in out] == [i + 1 for i in range(len(stack))]
    assert [m.metadata["x"] for m in out] == list(range(len(stack)))
    return out


def cases(tmp_path: Path) -> list[tuple[Path, np.ndarray]]:
    snip = snip_config("Steel.spe", tmp_path)
    found = [(snip_config(name, tmp_path), real_stack(name)) for name in SPECTRA]
    return [*found, (snip, example_stack())]


def test_fast_equals_pymca_stack_fit(tmp_path: Path) -> None:
    for config, stack in cases(tmp_path):
        ref = direct(config, stack, refit=False, concentrations=True)
        labels = list(ref.labels("parameters"))
        out = node_fit(config, stack, batch=7, refit=False, concentrations=True)
        lines = out[0].metadata["lines"]
        assert labels[-len(lines) :] == lines and len(lines) >= 13
        first = len(labels) - len(lines)  # the background's parameters come first
        area = np.stack([m.data["area"] for m in out])
        np.testing.assert_allclose(area, ref["parameters"][first:].T, rtol=1e-6)
        sigma = np.stack([m.data["area_sigma"] for m in out])
        np.testing.assert_allclose(sigma, ref["uncertainties"][first:].T, rtol=1e-6)
        assert (area < 0).any()  # without refit, negative areas stay
        fractions = np.stack([m.data["mass_fraction"] for m in out])
        for row, label in zip(ref["massfractions"], ref.labels("massfractions"), strict=True):
            np.testing.assert_allclose(fractions[:, lines.index(label)], row, rtol=1e-6)
        scatter = [g.startswith("Scatter") for g in lines]
        assert np.isnan(fractions[:, scatter]).all() and np.isfinite(fractions[:, 0]).all()
        assert "chisq" not in out[0].data and out[0].metadata["mode"] == "fast"


def test_refit_is_pymcas_on_each_spectrum(tmp_path: Path) -> None:
    refitted = kept = 0
    for config, stack in cases(tmp_path):
        out = node_fit(config, stack, batch=len(stack))
        first = len(direct(config, stack[0]).labels("parameters")) - len(out[0].data["area"])
        assert all((msg.data["area"] >= 0).all() for msg in out)
        # the spectra without a negative area in the first solve: as PyMca's refit on the stack
        plain = direct(config, stack, refit=False)["parameters"][first:]
        whole = direct(config, stack, refit=True)["parameters"][first:]
        clean = (plain >= 0).all(axis=0)
        kept, refitted = kept + clean.sum(), refitted + (~clean).sum()
        area = np.stack([m.data["area"] for m in out]).T
        np.testing.assert_allclose(area[:, clean], whole[:, clean], rtol=1e-6)
        # the real spectrum and the first three refitted: as PyMca's refit on that spectrum
        # alone (PyMca configures itself on each call, ~1 s: not for every spectrum)
        for k in {0, *np.flatnonzero(~clean)[:3]}:
            alone = direct(config, stack[k], refit=True)
            np.testing.assert_allclose(
                out[k].data["area"], alone["parameters"][first:, 0], rtol=1e-6
            )
            np.testing.assert_allclose(
                out[k].data["area_sigma"], alone["uncertainties"][first:, 0], rtol=1e-6
            )
    assert kept > 0 and refitted > 0


@pytest.mark.parametrize("refit", [True, False])
def test_batch_size_does_not_change_the_results(
    tmp_path: Path, refit: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # each spectrum is solved alone against the same model (the configuration's own weights,
    # refit spectrum by spectrum), so the results agree to the last bits of the linear algebra
    stacks: list[int] = []
    fit = StackFit.fit
    monkeypatch.setattr(StackFit, "fit", lambda self, s: stacks.append(len(s)) or fit(self, s))
    for config, stack in cases(tmp_path):
        fits = []
        for b in (1, 7, len(stack)):
            stacks.clear()
            fits.append(node_fit(config, stack, batch=b, refit=refit))
            n = len(stack)
            assert stacks == [b] * (n // b) + ([n % b] if n % b else [])  # really in stacks
        for name in ("area", "area_sigma"):
            one, seven, full = (np.stack([m.data[name] for m in f]) for f in fits)
            np.testing.assert_allclose(seven, one, rtol=1e-12, atol=1e-9)
            np.testing.assert_allclose(full, one, rtol=1e-12, atol=1e-9)


def test_spectra_per_element(tmp_path: Path) -> None:
    config = snip_config("Steel.spe", tmp_path)
    stack = real_stack("Steel.spe")
    per_element = [stack[0:3], stack[3:6], stack[6:9]]  # (elements, channels) per message
    items = [
        beampipe.Message(data={"spectrum": s}, stream="scan", id=i + 1)
        for i, s in enumerate(per_element)
    ]
    params = {"config": str(config), "mode": "fast", "max_batch": 2, "refit": False}
    out = run(XrfFit, items, params=params, name="fit").messages()
    ref = direct(config, stack[:9], refit=False)
    first = len(ref.labels("parameters")) - len(out[0].metadata["lines"])
    area = np.concatenate([m.data["area"] for m in out])
    assert out[0].data["area"].shape == (3, len(out[0].metadata["lines"]))
    np.testing.assert_allclose(area, ref["parameters"][first:].T, rtol=1e-6)


def test_strip_background_is_refused(tmp_path: Path) -> None:
    # the configurations as PyMca ships them use the strip background, which the fast fit lacks
    params = {"config": str(DATA / "Steel.cfg"), "mode": "fast"}
    with pytest.raises(ValidationError, match=r"param 'config': .*Steel\.cfg'?: .* needs the SNIP"):
        run(XrfFit, [], params=params, name="fit")
    with pytest.raises(XrfConfigError, match=r"fit: .*Steel\.cfg'?: PyMca's fast fit .*SNIP"):
        XrfFit(XrfFit.Params.model_construct(**params), name="fit")  # params not validated
    # and at beampipe validate, with the file's line and the node
    pipeline = tmp_path / "fast.yaml"
    pipeline.write_text(
        "name: fast\nnodes:\n  src: {use: mca_files, params: {paths: [x.mca]}}\n"
        f"  fit: {{use: xrf.fit, params: {{config: '{DATA / 'Steel.cfg'}', mode: fast}}}}\n"
        "connections:\n  - src.out -> fit.in\n"
    )
    done = beampipe_cli("validate", str(pipeline), cwd=tmp_path)
    assert done.returncode == 2
    assert "fast.yaml:4: node 'fit'" in done.stderr and "SNIP" in done.stderr, done.stderr


def test_automatic_reference_is_refused(tmp_path: Path) -> None:
    config = snip_config("XRFSpectrum.mca", tmp_path)  # usematrix = 1, reference = Co
    config.write_text(config.read_text().replace("\nreference = Co\n", "\nreference = Auto\n"))
    params = {"config": str(config), "mode": "fast", "concentrations": True}
    with pytest.raises(ValidationError, match=r"param 'config': .*reference = Auto"):
        run(XrfFit, [], params=params, name="fit")
    run(XrfFit, [], params={**params, "concentrations": False}, name="fit")  # without: fine


def test_short_spectrum_in_a_batch_is_named(tmp_path: Path) -> None:
    config = snip_config("Steel.spe", tmp_path)
    stack = real_stack("Steel.spe")[:4]
    items = [
        beampipe.Message(data={"spectrum": s}, stream="scan7", id=i + 1)
        for i, s in enumerate([stack[0], stack[1], stack[2][:1024], stack[3]])
    ]
    params = {"config": str(config), "mode": "fast", "max_batch": 4}
    with pytest.raises(SpectrumMismatch) as info:
        run(XrfFit, items, params=params, name="fit")
    text = str(info.value)
    for part in ("fit:", "stream 'scan7'", "id 3", "snip-Steel.cfg", "(1024,)", "200 to 1432"):
        assert part in text, text
