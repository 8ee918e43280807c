"""Deprecated: the built-in sources and sinks moved to :mod:`beampipe.nodes` (one package per
technique or format). ``beampipe.connectors.MODULE`` still imports, for one release, with a
``DeprecationWarning`` naming the new path (see :mod:`beampipe._moved`); ``use:`` names are
unchanged.
"""

from beampipe._moved import alias_modules

alias_modules(
    __name__,
    {
        "asapo_client": ["beampipe.nodes.asapo.client"],
        "asapo_payload": ["beampipe.nodes.asapo.payload"],
        "asapo_sink": ["beampipe.nodes.asapo.sink"],
        "asapo_source": ["beampipe.nodes.asapo.source"],
        "dectris_codecs": ["beampipe.nodes.dectris.codecs"],
        "dectris_messages": ["beampipe.nodes.dectris.messages"],
        "dectris_stream": ["beampipe.nodes.dectris.stream"],
        "dectris_v1": ["beampipe.nodes.dectris.v1"],
        "dectris_v2": ["beampipe.nodes.dectris.v2"],
        "detector_sim": ["beampipe.nodes.sim.detector"],
        "epics_ca": ["beampipe.nodes.epics.ca"],
        "epics_sink": ["beampipe.nodes.epics.sink"],
        "epics_source": ["beampipe.nodes.epics.source"],
        "file_streams": ["beampipe.nodes.files.base"],
        "hdf5_replay": ["beampipe.nodes.files.hdf5_replay", "beampipe.nodes.files.hdf5_layout"],
        "nexus": ["beampipe.nodes.nexus.writer"],
        "nexus_files": [
            "beampipe.nodes.nexus.files",
            "beampipe.nodes.nexus.master",
            "beampipe.nodes.nexus.columns",
        ],
        "nexus_meta": ["beampipe.nodes.nexus.meta"],
        "recorder": ["beampipe.nodes.record.recorder"],
        "replay": ["beampipe.nodes.record.replay"],
        "xdi": ["beampipe.nodes.xas.xdi"],
    },
)
