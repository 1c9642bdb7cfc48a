"""Data: find image planes and z-stacks on disk, pair them, split them, normalise them,
crop them."""

from refocus.data.bbbc006 import Bbbc006Index, Field, Plane, scan_bbbc006
from refocus.data.normalize import PercentileNormalizer
from refocus.data.pairs import LAYOUTS, Pair, build_pairs, load_pairs, split_pairs
from refocus.data.split import split_by_well
from refocus.data.zstacks import ZStack, find_zstacks, read_zstack, read_zstacks, stack_pairs

__all__ = [
    "LAYOUTS",
    "Bbbc006Index",
    "Field",
    "Pair",
    "PercentileNormalizer",
    "Plane",
    "ZStack",
    "build_pairs",
    "find_zstacks",
    "load_pairs",
    "read_zstack",
    "read_zstacks",
    "scan_bbbc006",
    "split_by_well",
    "split_pairs",
    "stack_pairs",
]
