"""Image I/O: single planes, whole images with their metadata, OME-Zarr, and the output
policy every writer follows (nothing overwritten without asking, nothing half-written)."""

from refocus.images.formats import (
    SPATIAL,
    ZARR_SUFFIXES,
    Image,
    OmeZarr,
    build_pyramid,
    check_pixels,
    create_like,
    is_image_path,
    is_zarr,
    open_ome_zarr,
    read_image,
    write_like,
)
from refocus.images.output import (
    atomic_output,
    atomic_output_dir,
    ensure_writable_folder,
    prepare_destination,
    refuse_used_folder,
)
from refocus.images.planes import (
    IMAGE_SUFFIXES,
    PNG_SUFFIXES,
    TIFF_SUFFIXES,
    check_pixel_type,
    read_or_raise,
    read_plane,
    write_tiff,
)

__all__ = [
    "IMAGE_SUFFIXES", "PNG_SUFFIXES", "SPATIAL", "TIFF_SUFFIXES", "ZARR_SUFFIXES", "Image",
    "OmeZarr", "atomic_output", "atomic_output_dir", "build_pyramid", "check_pixel_type",
    "check_pixels", "create_like", "ensure_writable_folder", "is_image_path", "is_zarr",
    "open_ome_zarr", "prepare_destination", "read_image", "read_or_raise", "read_plane",
    "refuse_used_folder", "write_like", "write_tiff",
]
