"""Image I/O: single planes, whole images with their metadata, OME-Zarr, and the output
policy every writer follows (nothing overwritten without asking, nothing half-written).

Formats are registered by suffix in :data:`READERS` / :data:`WRITERS`
(:mod:`refocus.images.formats`); OME-Zarr lives in :mod:`refocus.images.omezarr`, the
checks every reader applies in :mod:`refocus.images.planes`, the output policy in
:mod:`refocus.images.output`.
"""

from refocus.images.formats import (
    IMAGE_SUFFIXES,
    PNG_SUFFIXES,
    READERS,
    SPATIAL,
    TIFF_SUFFIXES,
    WRITERS,
    Image,
    ImageReader,
    ImageWriter,
    is_image_path,
    read_image,
    read_plane,
    write_like,
)
from refocus.images.omezarr import (
    ZARR_SUFFIXES,
    OmeZarr,
    build_pyramid,
    create_like,
    is_zarr,
    open_ome_zarr,
)
from refocus.images.output import (
    atomic_output,
    atomic_output_dir,
    ensure_writable_folder,
    prepare_destination,
    refuse_used_folder,
)
from refocus.images.planes import (
    DEFAULT_MAX_IMAGE_GIB,
    MAX_IMAGE_GIB_ENV,
    check_image_size,
    check_pixel_type,
    check_pixels,
    check_plane,
    max_image_gib,
    read_or_raise,
    set_max_image_gib,
    write_tiff,
)

__all__ = [
    "DEFAULT_MAX_IMAGE_GIB", "IMAGE_SUFFIXES", "MAX_IMAGE_GIB_ENV", "PNG_SUFFIXES", "READERS",
    "SPATIAL", "TIFF_SUFFIXES", "WRITERS", "ZARR_SUFFIXES", "Image", "ImageReader",
    "ImageWriter", "OmeZarr", "atomic_output", "atomic_output_dir", "build_pyramid",
    "check_image_size", "check_pixel_type", "check_pixels", "check_plane", "create_like",
    "ensure_writable_folder", "is_image_path", "is_zarr", "max_image_gib", "open_ome_zarr",
    "prepare_destination", "read_image", "read_or_raise", "read_plane", "refuse_used_folder",
    "set_max_image_gib", "write_like", "write_tiff",
]
