"""DECTRIS EIGER / PILATUS4 detectors (SIMPLON stream v1 and v2): ``dectris_stream``."""
