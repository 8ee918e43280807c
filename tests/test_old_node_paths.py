"""The module paths of the built-in nodes before ``beampipe.nodes`` (``beampipe.connectors.*``,
``beampipe.workers.*``) still import for one release: with a ``DeprecationWarning`` that names
the new path, giving the very same classes, in Python and in a pipeline file's ``use:``."""

from __future__ import annotations

import importlib
import sys
import warnings

import pytest

from beampipe.config import parse_pipeline
from beampipe.worker.registry import resolve

OLD_CLASS_PATHS = {  # the entry points before the move: use name -> old class path
    "xdi_replay": "beampipe.connectors.xdi:XdiReplay",
    "nexus_writer": "beampipe.connectors.nexus:NexusWriter",
    "detector_sim": "beampipe.connectors.detector_sim:DetectorSim",
    "dectris_stream": "beampipe.connectors.dectris_stream:DectrisStream",
    "epics_source": "beampipe.connectors.epics_source:EpicsSource",
    "epics_sink": "beampipe.connectors.epics_sink:EpicsSink",
    "asapo_source": "beampipe.connectors.asapo_source:AsapoSource",
    "asapo_sink": "beampipe.connectors.asapo_sink:AsapoSink",
    "xas.transmission": "beampipe.workers.xas:Transmission",
    "xas.normalize": "beampipe.workers.xas:Normalize",
    "sum": "beampipe.workers.reduce:Sum",
    "xas.merge": "beampipe.workers.xas:Merge",
    "hdf5_replay": "beampipe.connectors.hdf5_replay:Hdf5Replay",
    "recorder": "beampipe.connectors.recorder:Recorder",
    "replay": "beampipe.connectors.replay:Replay",
}


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget the old modules already imported, so that importing one warns again."""
    for name in list(sys.modules):
        if name.startswith(("beampipe.connectors.", "beampipe.workers.")):
            monkeypatch.delitem(sys.modules, name)


def test_an_old_module_imports_warns_and_gives_the_same_class(fresh):
    from beampipe.nodes.xas.xdi import XdiReplay

    with pytest.warns(DeprecationWarning) as caught:
        import beampipe.connectors.xdi
    assert beampipe.connectors.xdi.XdiReplay is XdiReplay
    assert [str(w.message) for w in caught] == [
        "beampipe.connectors.xdi has moved to beampipe.nodes.xas.xdi; the old path will be "
        "removed in the next release"
    ]
    assert caught[0].filename == __file__  # the warning points at the import


def test_from_import_of_a_split_module_names_every_new_module(fresh):
    from beampipe.nodes.columns import MissingColumn
    from beampipe.nodes.xas.merge import Merge
    from beampipe.nodes.xas.normalize import Normalize
    from beampipe.nodes.xas.transmission import Transmission

    with pytest.warns(DeprecationWarning, match="beampipe.workers.xas has moved to") as caught:
        from beampipe.workers.xas import Merge as OldMerge
        from beampipe.workers.xas import MissingColumn as OldMissingColumn
        from beampipe.workers.xas import Normalize as OldNormalize
        from beampipe.workers.xas import Transmission as OldTransmission
    assert len(caught) == 1
    assert "beampipe.nodes.xas.transmission, beampipe.nodes.xas.normalize and " in str(
        caught[0].message
    )
    assert OldTransmission is Transmission
    assert OldNormalize is Normalize
    assert OldMerge is Merge
    assert OldMissingColumn is MissingColumn


@pytest.mark.parametrize("use", sorted(OLD_CLASS_PATHS))
def test_every_old_class_path_resolves_to_the_registered_class(fresh, use):
    with pytest.warns(DeprecationWarning, match="has moved to beampipe.nodes."):
        assert resolve(OLD_CLASS_PATHS[use]) is resolve(use)


def test_an_old_class_path_in_a_pipeline_file(fresh, tmp_path):
    (tmp_path / "a.xdi").write_text("# energy mu\n1 2\n")
    text = (
        "nodes:\n"
        "  scan:\n"
        "    use: beampipe.connectors.xdi:XdiReplay\n"
        f"    params: {{paths: ['{tmp_path}/*.xdi']}}\n"
        "  write:\n"
        "    use: beampipe.connectors.nexus:NexusWriter\n"
        f"    params: {{path: '{tmp_path}/out.nxs'}}\n"
        "connections:\n"
        "  - scan.out -> write.points\n"
    )
    with pytest.warns(DeprecationWarning) as caught:
        pipeline = parse_pipeline(text)
    assert sorted(str(w.message).split(" has moved to ")[0] for w in caught) == [
        "beampipe.connectors.nexus",
        "beampipe.connectors.xdi",
    ]
    assert [spec.use for spec in pipeline.nodes.values()] == [
        "beampipe.connectors.xdi:XdiReplay",
        "beampipe.connectors.nexus:NexusWriter",
    ]


def test_every_public_name_of_an_old_module_is_the_new_one(fresh):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = importlib.import_module("beampipe.connectors.hdf5_replay")
    new = importlib.import_module("beampipe.nodes.files.hdf5_replay")
    layout = importlib.import_module("beampipe.nodes.files.hdf5_layout")
    assert set(old.__all__) == set(new.__all__) | set(layout.__all__)
    for name in old.__all__:
        assert getattr(old, name) is getattr(new, name, getattr(layout, name, None))
    assert old.jsonable is layout.jsonable  # moved to the split-off module


def test_a_name_the_new_modules_lack_is_an_attribute_error_of_the_old_module(fresh):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = importlib.import_module("beampipe.workers.reduce")
    missing = r"module 'beampipe\.workers\.reduce' has no attribute 'Mean'"
    with pytest.raises(AttributeError, match=missing):
        old.Mean  # noqa: B018
