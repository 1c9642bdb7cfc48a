"""What a data folder holds, read from file names and image headers (no pixel decoding).

Answers the first question a user has about a download: is everything there?
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from refocus.data.bbbc006 import Bbbc006Index, Field, scan_bbbc006
from refocus.errors import RefocusError
from refocus.images import TIFF_SUFFIXES


@dataclass
class Inventory:
    root: Path
    fields: list[Field]
    wells: list[str]
    channels: list[str]
    fields_per_z: dict[str, dict[int, int]]  # channel -> z -> number of fields
    fields_by_channel: dict[str, int]  # channel -> fields imaged in it
    shapes: Counter[tuple[int, int]]
    dtypes: Counter[str]
    missing: dict[str, list[tuple[Field, int]]]  # channel -> (field, z) absent


def image_header(path: Path) -> tuple[tuple[int, ...], str]:
    """Shape and dtype of an image file from its header; a damaged file is a RefocusError."""
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages.first
                return tuple(page.shape), str(np.dtype(page.dtype))
        from PIL import Image

        with Image.open(path) as im:
            dtype = {"I;16": "uint16", "I;16B": "uint16", "L": "uint8", "I": "int32"}.get(
                im.mode, im.mode
            )
            shape = (
                (im.height, im.width)
                if im.mode in ("I;16", "I;16B", "L", "I")
                else (im.height, im.width, len(im.getbands()))
            )
            return shape, dtype
    except Exception as exc:
        raise RefocusError(path, f"cannot read image header ({type(exc).__name__}: {exc})") from exc


def take_inventory(root: str | Path) -> Inventory:
    """Fields, wells, channels, planes per z, image sizes and dtypes, and missing planes."""
    index: Bbbc006Index = scan_bbbc006(root)
    shapes: Counter[tuple[int, int]] = Counter()
    dtypes: Counter[str] = Counter()
    for plane in index.planes.values():
        shape, dtype = image_header(plane.path)
        shapes[shape] += 1
        dtypes[dtype] += 1
    z_all = index.z_values
    return Inventory(
        root=Path(root),
        fields=index.fields,
        wells=sorted({f.well for f in index.fields}),
        channels=index.channels,
        fields_per_z={ch: index.fields_per_z(ch) for ch in index.channels},
        fields_by_channel={
            ch: len({f for f, c, _ in index.planes if c == ch}) for ch in index.channels
        },
        shapes=shapes,
        dtypes=dtypes,
        missing={ch: index.missing(z_all, ch) for ch in index.channels},
    )
