"""How ``nexus_writer`` compresses a group's arrays: the HDF5 filters of each choice."""

from __future__ import annotations

from typing import Any, Literal

Compression = Literal["none", "bitshuffle_lz4", "lz4", "gzip"]
"""How a group's arrays (not its 0-d values) are compressed: bitshuffle-LZ4 (as DECTRIS EIGER
writes its frames) and LZ4 through the HDF5 filters of ``hdf5plugin``, or HDF5's own gzip."""


def filter_options(compression: Compression) -> dict[str, Any]:
    """The ``create_dataset`` options for ``compression``.

    Raises:
        ImportError: ``hdf5plugin`` is needed and not installed (``pip install
            'beampipe[hdf5]'``).
    """
    if compression == "none":
        return {}
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    try:
        import hdf5plugin
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"compression {compression!r} needs hdf5plugin (pip install 'beampipe[hdf5]'): {exc}"
        ) from exc
    if compression == "lz4":
        return dict(hdf5plugin.LZ4())
    return dict(hdf5plugin.Bitshuffle(cname="lz4"))
