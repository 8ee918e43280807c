"""Per-frame workers for 2-D detector frames: ``frame.stats``, ``frame.roi``, ``frame.correct``,
``frame.bin`` (see docs/nodes.md)."""
