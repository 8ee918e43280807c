"""Simulated instruments: ``detector_sim``."""
