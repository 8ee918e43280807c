"""``spec_replay`` on real SPEC files (ESRF SNBL, 2 scans; APS 9-BM, 1 scan): one stream per
``#S`` scan, every column equal to silx's ``SpecFile`` and to xraylarch's ``read_specfile`` (which
keeps float32 copies) of that scan."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import beampipe
from beampipe.nodes.xas.spec import SpecReplay, XdiFormatError
from beampipe.testing import run

DATA = Path(__file__).resolve().parent / "data" / "xas"
SNBL = DATA / "ESRF_SNBL_2013.dat"
APS9BM = DATA / "APS9BM_2006.dat"


def larch_scan(path: Path, scan: int):
    from larch.io import read_specfile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_specfile(str(path), scan=scan)


def silx_scan(path: Path, scan: int) -> np.ndarray:
    from silx.io.specfile import SpecFile

    return np.asarray(SpecFile(str(path))[f"{scan}.1"].data, dtype=np.float64)


@pytest.mark.parametrize(
    ("path", "energy", "units", "scans"),
    [(SNBL, "ZapEnergy", "keV", [1, 2]), (APS9BM, "energy", "eV", [1])],
    ids=["ESRF_SNBL", "APS9BM"],
)
def test_one_stream_per_scan_equal_to_larch(path, energy, units, scans):
    params = {"paths": [str(path)], "energy": energy, "energy_units": units}
    items = run(SpecReplay, params=params, name="spec").items()
    starts = [i for i in items if isinstance(i, beampipe.StreamStart)]
    ends = [i for i in items if isinstance(i, beampipe.EndOfStream)]
    assert [s.stream for s in starts] == [f"{path.name}:{n}.1" for n in scans]
    assert [e.next_stream for e in ends] == [s.stream for s in starts[1:]] + [None]
    for start, end, n in zip(starts, ends, scans, strict=True):
        group = larch_scan(path, n)
        labels = list(group.array_labels)
        msgs = [i for i in items if isinstance(i, beampipe.Message) and i.stream == start.stream]
        columns = start.metadata["columns"]
        assert [c for c in columns if c in labels] == labels  # larch drops repeated names
        if path == APS9BM:
            assert columns[-2:] == ["Seconds", "Seconds_2"]
        assert start.metadata["scan"] == f"{n}.1"
        assert start.metadata["n_points"] == group.data.shape[1] == end.last_id == len(msgs)
        silx_data = silx_scan(path, n)
        for j, label in enumerate(columns):
            got = np.array([m.data[label] for m in msgs])
            np.testing.assert_array_equal(got, silx_data[j], err_msg=f"{path.name} {label}")
        for j, label in enumerate(labels):
            got = np.array([m.data[label] for m in msgs])
            # larch's read_specfile keeps float32 copies of silx's values
            np.testing.assert_array_equal(got.astype(np.float32), group.data[j], err_msg=label)
        got = np.array([m.data["energy"] for m in msgs])
        scale = 1000.0 if units == "keV" else 1.0
        np.testing.assert_array_equal(got, silx_data[columns.index(energy)] * scale)


def test_a_plain_column_file_is_not_a_spec_file():
    path = DATA / "SSRL1_2006.dat"
    with pytest.raises(XdiFormatError) as err:
        run(SpecReplay, params={"paths": [str(path)]}, name="spec").items()
    assert str(err.value) == f"{path}: no '#S' scan: not a SPEC file (use xdi_replay)"


def test_columns_rename_every_scan_and_labels_line_is_refused():
    names = [f"c{j}" for j in range(18)]
    items = run(SpecReplay, params={"paths": [str(SNBL)], "columns": names}, name="spec").items()
    starts = [i for i in items if isinstance(i, beampipe.StreamStart)]
    assert [s.metadata["columns"] for s in starts] == [names, names]
    with pytest.raises(ValueError, match="spec: spec_replay takes the names from each scan"):
        SpecReplay(SpecReplay.Params(paths=[str(SNBL)], labels_line=3), name="spec")
    with pytest.raises(XdiFormatError, match=r"scan 1\.1: params\.columns gives 2 names for 18"):
        run(SpecReplay, params={"paths": [str(SNBL)], "columns": ["a", "b"]}, name="spec").items()
