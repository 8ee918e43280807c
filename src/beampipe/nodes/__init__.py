"""The built-in nodes, one package per technique or format; their ``use:`` names are the entry
points of the group ``beampipe.nodes`` (see ``pyproject.toml`` and ``docs/nodes.md``).

* :mod:`~beampipe.nodes.xas`: ``xdi_replay``, ``spec_replay``, ``xas.transmission``,
  ``xas.calibrate``, ``xas.deglitch``, ``xas.normalize``, ``xas.exafs``, ``xas.merge``,
  ``xdi_writer`` (all but ``xas.transmission``, ``xas.merge`` and ``xdi_writer`` need the ``xas``
  extra).
* :mod:`~beampipe.nodes.files`: ``hdf5_replay``.
* :mod:`~beampipe.nodes.images`: ``image_files`` (extra ``images``).
* :mod:`~beampipe.nodes.record`: ``recorder`` and ``replay``.
* :mod:`~beampipe.nodes.nexus`: ``nexus_writer``.
* :mod:`~beampipe.nodes.dectris`: ``dectris_stream`` (extra ``dectris``).
* :mod:`~beampipe.nodes.asapo`: ``asapo_source``, ``asapo_sink`` (extra ``asapo``).
* :mod:`~beampipe.nodes.epics`: ``epics_source``, ``epics_sink`` (extra ``epics``).
* :mod:`~beampipe.nodes.sim`: ``detector_sim``.
* :mod:`~beampipe.nodes.reduce`: ``sum``, ``mean``, ``max`` (their shared :mod:`fold`),
  ``map`` (values on a raster).
* :mod:`~beampipe.nodes.frame`: ``frame.stats``, ``frame.roi``, ``frame.correct``, ``frame.bin``
  (extra ``frames``).
* :mod:`~beampipe.nodes.xrf`: ``mca_files``, ``xrf.fit`` (extra ``xrf``).
* :mod:`~beampipe.nodes.columns`: reading named numeric arrays from a message, for the workers.

The packages import nothing on their own, so a pipeline needs only the dependencies of the nodes
it uses. Built-in nodes import only :mod:`beampipe` (the SDK), :mod:`beampipe.message` and each
other.
"""
