"""EPICS Channel Access: ``epics_source`` and ``epics_sink``."""
