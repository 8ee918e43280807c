"""``xas.transmission`` with a multi-element fluorescence detector: the dead-time-corrected sum
of the channels equals xraylarch's ``sum_fluor_channels`` on two real files (NSLS X-23A2, 4
channels with ICR/OCR; NSLS-II 4-BM, 8 channels with dead-time factors)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import beampipe
from beampipe.nodes.xas.transmission import Transmission
from beampipe.nodes.xas.xdi import XdiReplay
from beampipe.testing import run

DATA = Path(__file__).resolve().parent / "data" / "xas"


def larch_read(path: Path):
    from larch.io import read_ascii, read_xdi

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_xdi(str(path)) if path.suffix == ".xdi" else read_ascii(str(path))


def fluorescence(path: Path, energy: str, params: dict) -> np.ndarray:
    items = run(XdiReplay, params={"paths": [str(path)], "energy": energy}, name="scan").items()
    out = run(Transmission, items, params=params, name="mu").messages()
    assert all(isinstance(o, beampipe.Message) for o in out)
    return np.array([o.data["if"] for o in out]), np.array([o.data["fluorescence"] for o in out])


def test_four_channels_with_icr_and_ocr_equal_larch():
    from larch.io import sum_fluor_channels

    path = DATA / "NSLS_XDAC_2011.dat"
    group = larch_read(path)
    labels = list(group.array_labels)
    roi, icr, ocr = ([f"{k}{n}" for n in range(1, 5)] for k in ("ifch", "iffast", "ifslow"))
    params = {
        "energy": "energy",
        "i0": "i0",
        "it": "it",
        "iref": "iref",
        "if": roi,
        "icr": icr,
        "ocr": ocr,
    }
    got, fluo = fluorescence(path, "energy", params)
    _, expected = sum_fluor_channels(
        group,
        [labels.index(c) for c in roi],
        icr=[labels.index(c) for c in icr],
        ocr=[labels.index(c) for c in ocr],
        add_data=False,
    )
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(fluo, expected / group.i0)
    # the correction matters: the plain sum differs
    assert not np.allclose(got, sum(getattr(group, c) for c in roi), rtol=1e-3)


def test_eight_channels_with_dead_time_factors_equal_larch():
    from larch.io import sum_fluor_channels

    path = DATA / "fe_xanes_8ch.xdi"
    group = larch_read(path)
    labels = list(group.array_labels)
    roi = [f"Fe_Ka_mca{n}" for n in range(1, 9)]
    dtf = [f"DTFactor_mca{n}" for n in range(1, 9)]
    params = {"energy": "Energy", "i0": "I0", "it": "IT", "iref": None, "if": roi, "dtfactor": dtf}
    got, _ = fluorescence(path, "Energy", params)
    # larch's roi * icr / (ocr * ltime) with the factors as icr is roi * factor
    _, expected = sum_fluor_channels(
        group, [labels.index(c) for c in roi], icr=[labels.index(c) for c in dtf], add_data=False
    )
    np.testing.assert_array_equal(got, expected)


def test_channel_lists_must_match():
    with pytest.raises(ValueError, match="ocr lists 1 columns, 'if' 2: one per channel"):
        Transmission.Params.model_validate({"if": ["a", "b"], "ocr": ["c"]})
    with pytest.raises(ValueError, match="icr need 'if' to be a list of ROI columns"):
        Transmission.Params.model_validate({"if": "a", "icr": ["c"]})
    with pytest.raises(ValueError, match="dtfactor or icr/ocr/ltime, not both"):
        Transmission.Params.model_validate({"if": ["a"], "icr": ["c"], "dtfactor": ["d"]})
