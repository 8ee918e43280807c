"""X-ray absorption spectroscopy: ``xdi_replay``, ``xas.transmission``, ``xas.normalize`` and
``xas.merge``."""
