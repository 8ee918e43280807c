"""ASAP::O (DESY's data streaming platform): ``asapo_source`` and ``asapo_sink``."""
