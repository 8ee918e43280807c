"""The one registry of backends (beampipe.launch.backends) and the names the rest accept."""

from __future__ import annotations

import pytest

from beampipe.config import BACKENDS
from beampipe.launch.backends import PLACEMENTS, make_placement
from beampipe.launch.nomad import NomadPlacement
from beampipe.launch.placement import LocalPlacement
from beampipe.launch.slurm import SlurmPlacement


def test_every_backend_name_has_its_placement():
    assert tuple(PLACEMENTS) == BACKENDS == ("local", "slurm", "nomad")
    local = make_placement("local", {})
    assert isinstance(local, LocalPlacement) and local.transport == "tcp"  # deployed: loopback
    assert make_placement("local", {"transport": "ipc"}).transport == "ipc"
    assert isinstance(make_placement("slurm", {"partition": "maxwell"}), SlurmPlacement)
    nomad = make_placement("nomad", {"address": "http://127.0.0.1:4646"})
    assert isinstance(nomad, NomadPlacement)


def test_an_unknown_backend_or_option_names_what_there_is():
    with pytest.raises(
        ValueError, match=r"unknown backend 'k8s' \(backends: local, slurm, nomad\)"
    ):
        make_placement("k8s", {})
    with pytest.raises(
        ValueError, match=r"backend 'local': unknown option 'partition' \(options: transport\)"
    ):
        make_placement("local", {"partition": "x"})
