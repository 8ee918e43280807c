"""``mca_files``: PyMca's real ``.mca`` and ``.spe`` files and the example's SPEC mesh scan give
one message per spectrum, equal to what PyMca's reader reads, with the scan's positions; a file
PyMca cannot read, or without a spectrum, is an error naming node and file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from PyMca5.PyMcaIO import specfilewrapper

import beampipe
from beampipe.nodes.xrf.mcafiles import McaFiles, McaFormatError, scan_date
from beampipe.testing import run

DATA = Path(__file__).resolve().parent / "data" / "xrf"
SCAN = REPO / "examples" / "xrf-map" / "data" / "scan.mca"


def test_real_files_one_message_per_spectrum() -> None:
    paths = [str(DATA / "XRFSpectrum.mca"), str(DATA / "Steel.spe"), str(SCAN)]
    streams = run(McaFiles, params={"paths": paths}, name="mca").streams
    assert list(streams) == ["XRFSpectrum.mca", "Steel.spe", "scan.mca"]
    want = {
        "XRFSpectrum.mca": [specfilewrapper.Specfile(paths[0])[1].mca(1)],
        "Steel.spe": [specfilewrapper.Specfile(paths[1])[0].mca(1)],
        "scan.mca": [specfilewrapper.Specfile(paths[2])[0].mca(j) for j in range(1, 20)],
    }
    for stream, spectra in want.items():
        got = streams[stream]
        assert [m.id for m in got] == list(range(1, len(spectra) + 1))
        for msg, counts in zip(got, spectra, strict=True):
            np.testing.assert_array_equal(msg.data["spectrum"], counts)
    last = streams["scan.mca"][-1]
    assert last.metadata["positions"] == {
        "ix": 4.0,
        "iy": 3.0,
        "samx": 2.0,
        "samy": 1.5,
        "I0": 100000.0,
    }
    assert last.metadata["index"] == 18 and last.metadata["scan"] == 1
    assert "positions" not in streams["Steel.spe"][0].metadata


def test_unreadable_file_and_file_without_spectrum(tmp_path: Path) -> None:
    binary = tmp_path / "noise.mca"
    binary.write_bytes(bytes(range(256)) * 4)
    empty = tmp_path / "empty.dat"
    empty.write_text("#S 1 ascan\n#L a b\n1 2\n3 4\n")
    for path, cause in (
        (binary, "PyMca cannot read it|no MCA spectrum"),
        (empty, r"no MCA spectrum in it \(1 scan"),
    ):
        with pytest.raises(McaFormatError, match=rf"mca: '.*{path.name}': ({cause})"):
            run(McaFiles, params={"paths": [str(path)]}, name="mca")


def test_realtime_pace_is_refused() -> None:
    with pytest.raises(ValueError, match="mca: pace realtime: MCA files hold no times"):
        run(McaFiles, params={"paths": [str(DATA / "Steel.spe")], "pace": "realtime"}, name="mca")


def test_spectra_fit_downstream() -> None:
    from beampipe.nodes.xrf.fit import XrfFit

    items = run(McaFiles, params={"paths": [str(DATA / "Steel.spe")]}, name="mca").items()
    out = run(XrfFit, items, params={"config": str(DATA / "Steel.cfg")}, name="fit").messages()
    assert len(out) == 1 and isinstance(out[0], beampipe.Message)
    assert out[0].metadata["file"].endswith("Steel.spe") and "Fe K" in " ".join(
        out[0].metadata["lines"]
    )


def test_start_time_from_the_spec_date_line(tmp_path: Path) -> None:
    """SPEC's #D (C ctime format) becomes the stream's ISO 8601 start_time; another format is
    kept as text in ``date``; a file without #D has neither."""
    spec = "#F x\n\n#S 1 ct\n#D Sat Dec  5 14:03:12 2026\n#N 1\n#L I0\n1\n@A 1 2 3\n"
    (tmp_path / "a.mca").write_text(spec)
    (tmp_path / "b.mca").write_text(spec.replace("Sat Dec  5 14:03:12 2026", "2026-12-05"))
    assert scan_date(tmp_path / "a.mca") == {"start_time": "2026-12-05T14:03:12"}
    assert scan_date(tmp_path / "b.mca") == {"date": "2026-12-05"}
    assert scan_date(DATA / "Steel.spe") == {}
    items = run(McaFiles(McaFiles.Params(paths=str(tmp_path / "a.mca")))).items()
    assert isinstance(items[0], beampipe.StreamStart)
    assert items[0].metadata["start_time"] == "2026-12-05T14:03:12"
