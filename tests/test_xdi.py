"""The ``xdi_replay`` source on the real P65 files and on small made-up ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import FakeClock

import beampipe
from beampipe.nodes.xas.xdi import NoFilesMatched, XdiFormatError, XdiReplay, parse_header
from beampipe.testing import run

DATA = Path(__file__).resolve().parents[1] / "examples" / "xas-p65" / "data"
FILES = sorted(DATA.glob("*.xdi"))

SMALL = """\
# PETRA III Extension Beamline P65
# XAS CONTINUOUS MODE
# Scan started at 01-02-2021 03:04:05, finished at 01-02-2021 03:05:06
# DCM Theta(p64/motor/oh.09) = 5.97487507737 degrees
# DCM Crystal: Si311
#energy time_pp I0 It
7000.0 0.5 1.0 2.0
7001.0 0.25 1.5 2.5
7002.0 1.0 1.25 2.25
7003.0 2.0 1.0 2.0
"""


def replay(base_dir: str = "", **params) -> XdiReplay:
    """The node, with relative paths resolved against ``base_dir`` as the pipeline loader does."""
    context = {"base_dir": base_dir} if base_dir else None
    return XdiReplay(XdiReplay.Params.model_validate(params, context=context), name="scan")


def data_lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip() and line[0] != "#")


@pytest.fixture(scope="module")
def items() -> list:
    return run(replay(paths=["*.xdi"], base_dir=str(DATA), pace="max")).items()


def test_streams_messages_and_values(items):
    starts = [i for i in items if isinstance(i, beampipe.StreamStart)]
    assert [s.stream for s in starts] == [f.name.removesuffix(".xdi") for f in FILES]
    assert starts[0].stream == "20K_GOE_Fe_K_240.00000"
    for path in FILES:
        stream = path.name.removesuffix(".xdi")
        msgs = [i for i in items if isinstance(i, beampipe.Message) and i.stream == stream]
        assert len(msgs) == data_lines(path)
        assert [m.id for m in msgs] == list(range(1, len(msgs) + 1))
        columns = next(s for s in starts if s.stream == stream).metadata["columns"]
        expected = np.loadtxt(path)
        assert expected.shape == (len(msgs), len(columns))
        got = np.array([[m.data[c] for c in columns] for m in msgs])
        np.testing.assert_array_equal(got, expected)  # exact
        first = msgs[0]
        assert first.metadata == {}
        assert all(v.shape == () and v.dtype == np.float64 for v in first.data.values())


def test_item_order_and_end_of_stream_chaining(items):
    names = [f.name.removesuffix(".xdi") for f in FILES]
    ends = [i for i in items if isinstance(i, beampipe.EndOfStream)]
    assert [e.stream for e in ends] == names
    assert [e.next_stream for e in ends] == [*names[1:], None]
    assert [e.last_id for e in ends] == [data_lines(f) for f in FILES]
    # each stream is StreamStart, its messages, EndOfStream, one after the other
    current = None
    for item in items:
        if isinstance(item, beampipe.StreamStart):
            assert current is None
            current = item.stream
        elif isinstance(item, beampipe.Message):
            assert item.stream == current
        else:
            assert item.stream == current
            current = None


def test_stream_start_metadata(items):
    meta = items[0].metadata
    assert meta["file"] == str(FILES[0])
    assert meta["columns"][:2] == ["enc_energy", "mono_energy"]
    assert meta["columns"][10:14] == ["vfc01", "vfc02", "vfc03", "vfc04"]
    assert len(meta["columns"]) == 16
    assert meta["start_time"] == "2020-11-22T01:47:54"
    assert meta["end_time"] == "2020-11-22T01:52:57"
    assert meta["beamline"] == "P65"
    assert meta["facility"] == "PETRA III"
    assert meta["mono_crystal"] == "Si111"
    assert meta["title"] == "20K_GOE_Fe_K_240.00000 (XAS CONTINUOUS MODE)"
    assert meta["n_points"] == data_lines(FILES[0])
    assert meta["fields"]["DCM Theta(p64/motor/oh.09)"] == "14.1097686813 degrees"
    assert meta["fields"]["Channel 4"] == "gain 1E10V/A"
    assert meta["header"][0] == "PETRA III Extension Beamline P65"
    assert len(meta["header"]) == 42
    json.dumps(meta)  # JSON-able


def test_xdi_1_0_header():
    comments = [
        " XDI/1.0 GSE/1.0",
        " Column.1: energy eV",
        " Column.2: i0",
        " Column.3: itrans",
        " Element.symbol: Fe",
        " Mono.name: Si 111",
        " Scan.start_time: 2001-06-26T22:27:31",
        " Beamline.name: 13-ID-C",
        " Facility.name: APS",
        " ///",
        " comment",
        "----",
        " energy i0 itrans",
    ]
    meta = parse_header(comments, "/x/fe.xdi")
    assert meta["fields"]["Element.symbol"] == "Fe"
    assert meta["mono_crystal"] == "Si 111"
    assert meta["start_time"] == "2001-06-26T22:27:31"
    assert meta["end_time"] is None
    assert (meta["beamline"], meta["facility"]) == ("13-ID-C", "APS")


def test_small_file_metadata_and_single_pattern(tmp_path):
    (tmp_path / "s.xdi").write_text(SMALL)
    items = run(replay(paths=str(tmp_path / "s.xdi"))).items()
    start = items[0]
    assert start.stream == "s"
    assert start.metadata["columns"] == ["energy", "time_pp", "i0", "it"]  # larch's names
    assert start.metadata["start_time"] == "2021-02-01T03:04:05"
    assert start.metadata["mono_crystal"] == "Si311"
    assert start.metadata["fields"]["DCM Theta(p64/motor/oh.09)"] == "5.97487507737 degrees"
    assert [m.id for m in items[1:-1]] == [1, 2, 3, 4]
    assert items[-1] == beampipe.EndOfStream(stream="s", last_id=4, next_stream=None)


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("7001.0 0.25 1.5\n", "3 values where the last data line has 4 (a short or long row)"),
        (
            "7001.0 0.25 abc 2.5\n",
            "'7001.0 0.25 abc 2.5' is not a row of 4 numbers but has data rows above it: larch "
            "would take it and the 7 lines above as the header and drop their data (remove or "
            "fix the line)",
        ),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, bad, problem):
    lines = SMALL.splitlines(keepends=True)
    lines[7] = bad  # the second data line: line 8 of the file
    path = tmp_path / "bad.xdi"
    path.write_text("".join(lines))
    gen = replay(paths=[str(path)]).generate()
    with pytest.raises(XdiFormatError) as err:  # the file is checked before it is sent
        next(gen)
    assert str(err.value) == f"{path}:8: {problem}"
    assert isinstance(err.value, ValueError)
    assert (err.value.path, err.value.line) == (str(path), 8)


def test_pattern_matching_nothing(tmp_path):
    with pytest.raises(NoFilesMatched, match=r"nothing/\*\.xdi' matches no file"):
        replay(paths=["nothing/*.xdi"], base_dir=str(tmp_path))
    with pytest.raises(ValueError, match="matches no file"):
        replay(paths=[str(DATA / "*.xdi"), str(tmp_path / "*.xdi")])


def test_relative_paths_resolve_against_pipeline_folder_or_cwd(tmp_path, monkeypatch):
    (tmp_path / "b.xdi").write_text(SMALL)
    (tmp_path / "a.xdi").write_text(SMALL)
    assert [f.name for f in replay(paths=["*.xdi"], base_dir=str(tmp_path)).files] == [
        "a.xdi",
        "b.xdi",
    ]
    monkeypatch.chdir(tmp_path)
    node = replay(paths=["b.xdi", "*.xdi"])  # pattern order kept, duplicates dropped
    assert [f.name for f in node.files] == ["b.xdi", "a.xdi"]
    assert all(f.is_absolute() for f in node.files)


def test_params_validation():
    with pytest.raises(ValueError):
        XdiReplay.Params(paths=["x"], pace="fast")
    with pytest.raises(ValueError):
        XdiReplay.Params(paths=["x"], pace=0)
    with pytest.raises(ValueError):
        XdiReplay.Params(paths=["x"], speedup=-1)
    assert XdiReplay.Params(paths=["x"], pace=5).pace == 5.0
    assert XdiReplay.Params(paths=["x"], pace="realtime").pace == "realtime"


def paced(tmp_path, **params) -> tuple[XdiReplay, FakeClock]:
    (tmp_path / "s.xdi").write_text(SMALL)
    node = replay(paths=[str(tmp_path / "s.xdi")], **params)
    fake = FakeClock()
    node.pacer = fake.pacer()
    return node, fake


def test_realtime_pacing_schedule(tmp_path):
    node, fake = paced(tmp_path, pace="realtime", speedup=10.0)
    items = list(node.generate())
    assert len(items) == 6
    # waits before messages 2, 3, 4: their own time_pp (0.25, 1.0, 2.0 s) / speedup
    assert fake.sleeps == pytest.approx([0.025, 0.1, 0.2])


def test_realtime_pacing_does_not_drift(tmp_path):
    node, fake = paced(tmp_path, pace="realtime")
    gen = node.generate()
    next(gen), next(gen)  # StreamStart, message 1 at t0
    fake.now += 0.1  # downstream took 0.1 s
    next(gen)
    fake.now += 5.0  # a long backpressure stall: behind schedule, no wait
    next(gen)
    next(gen)
    # message 2: deadline t0 + 0.25, 0.1 s already gone -> waits 0.15 s; messages 3 and 4
    # (deadlines t0 + 1.25, t0 + 3.25) are overdue after the stall: sent at once
    assert fake.sleeps == pytest.approx([0.15])
    assert isinstance(next(gen), beampipe.EndOfStream)


def test_fixed_rate_and_max_pacing(tmp_path):
    node, fake = paced(tmp_path, pace=4.0, speedup=100.0)  # Hz; speedup is for realtime only
    list(node.generate())
    assert fake.sleeps == pytest.approx([0.25, 0.25, 0.25])
    node, fake = paced(tmp_path, pace="max")
    list(node.generate())
    assert fake.sleeps == []


def test_realtime_needs_time_column(tmp_path):
    node, _ = paced(tmp_path, pace="realtime", time_column="seconds")
    with pytest.raises(XdiFormatError, match="needs time column 'seconds'"):
        next(node.generate())


def test_file_without_header_names_columns_col1_etc(tmp_path):
    (tmp_path / "bare.xdi").write_text("1 2 3\n\n4 5 6\n7 8 9\n")
    items = run(replay(paths=[str(tmp_path / "bare.xdi")])).items()
    assert items[0].metadata["columns"] == ["col1", "col2", "col3"]
    assert items[0].metadata["n_points"] == 3
    assert [float(m.data["col3"]) for m in items[1:-1]] == [3.0, 6.0, 9.0]
    assert items[-1].last_id == 3


def test_comment_between_data_rows_is_named_not_dropped(tmp_path):
    """larch's read_ascii would take the comment and the rows above it as header."""
    path = tmp_path / "bare.xdi"
    path.write_text("1 2 3\n\n4 5 6\n# a comment among the data\n7 8 9\n")
    with pytest.raises(XdiFormatError) as err:
        run(replay(paths=[str(path)])).items()
    assert str(err.value) == (
        f"{path}:4: a comment line between data rows: larch would take it and the 2 lines above "
        "as the header and drop their data (remove or fix the line)"
    )
