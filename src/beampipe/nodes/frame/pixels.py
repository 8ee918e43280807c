"""Pixel images from files: masks, darks and flats read with fabio, h5py or numpy.

A file is named by its path, with ``::/path/in/file`` after it for a dataset of an HDF5 file
(the silx ``DataUrl`` spelling, ``mask.h5::/entry/mask``). Without a dataset, an HDF5 file's
NeXus/EIGER pixel mask is taken (:data:`PIXEL_MASKS`). ``.npy`` files are read with numpy,
``.h5``/``.hdf5``/``.nxs``/``.nx5`` with h5py (and the filters of hdf5plugin when installed),
anything else with fabio (EDF, CBF, TIFF, MarCCD, ...; https://fabio.readthedocs.io), whose
first frame is taken.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

__all__ = ["PIXEL_MASKS", "PixelFileError", "read_image", "read_mask"]

PIXEL_MASKS = (
    "entry/instrument/detector/pixel_mask",
    "entry/instrument/detector/detectorSpecific/pixel_mask",
)
"""Where NeXus (NXdetector ``pixel_mask``) and DECTRIS EIGER master files keep the pixel mask:
uint32 bit flags, 0 = good; bit 0 gap, 1 dead, 2 under-responding, 3 over-responding, 4 noisy
(https://manual.nexusformat.org/classes/base_classes/NXdetector.html)."""

_HDF5 = (".h5", ".hdf5", ".hdf", ".nxs", ".nx5", ".nx")


class PixelFileError(ValueError):
    """A mask, dark or flat file cannot be read, holds no 2-D image, or does not fit."""


def read_image(spec: str, what: str) -> np.ndarray:
    """The 2-D image of ``spec`` (``path`` or ``path::dataset``), as stored (dtype kept).

    ``what`` ("mask", "dark", ...) names the image in errors.

    Raises:
        PixelFileError: the file is missing or unreadable, the dataset is absent, or the image
            is not 2-D (a 3-D stack of one frame is taken as its frame); the text names the file.
    """
    path, _, dataset = spec.partition("::")
    if not Path(path).is_file():
        raise PixelFileError(f"{what} file {path!r} does not exist")
    try:
        if path.endswith(".npy"):
            image = np.load(path, allow_pickle=False)
        elif path.lower().endswith(_HDF5):
            image = _read_hdf5(path, dataset, what)
        else:
            import fabio

            with fabio.open(path) as img:
                image = np.asarray(img.data)
    except PixelFileError:
        raise
    except Exception as exc:
        raise PixelFileError(f"cannot read the {what} file {spec!r}: {exc}") from exc
    if image.ndim == 3 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 2 or image.dtype.kind not in "biuf":
        raise PixelFileError(
            f"the {what} file {spec!r} holds a {image.ndim}-D {image.dtype} array "
            f"{image.shape}, not a 2-D numeric image"
        )
    return image


def read_mask(spec: str, bits: int | None = None) -> np.ndarray:
    """The pixel mask of ``spec`` as a bool array, ``True`` = masked (excluded).

    A pixel is masked when its value is not 0 (the pyFAI and NeXus convention), or, with
    ``bits``, when it has any of these bits set (``bits: 0b11`` masks EIGER gap and dead pixels
    only).

    Raises:
        PixelFileError: see :func:`read_image`; ``bits`` with a non-integer mask.
    """
    image = read_image(spec, "mask")
    if bits is None:
        return image != 0
    if image.dtype.kind not in "biu":
        raise PixelFileError(f"mask_bits needs an integer mask; {spec!r} is {image.dtype}")
    return (image.astype(np.uint64) & np.uint64(bits)) != 0


def _read_hdf5(path: str, dataset: str, what: str) -> np.ndarray:
    import h5py

    with contextlib.suppress(ImportError):
        import hdf5plugin  # noqa: F401  (registers the compression filters)
    with h5py.File(path, "r") as f:
        names = [dataset] if dataset else [p for p in PIXEL_MASKS if p in f]
        if not names or names[0] not in f:
            looked = dataset or " or ".join(PIXEL_MASKS)
            raise PixelFileError(
                f"no {what} in {path!r}: no dataset {looked} (name it as {path}::/path/to/it)"
            )
        item = f[names[0]]
        if not isinstance(item, h5py.Dataset):
            raise PixelFileError(f"{path}::{names[0]} is a group, not the {what} dataset")
        return item[()]
