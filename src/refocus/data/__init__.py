"""Data: find image planes on disk, pair them, split them, normalise them, crop them."""

from refocus.data.bbbc006 import Bbbc006Index, Field, Plane, scan_bbbc006
from refocus.data.normalize import PercentileNormalizer
from refocus.data.pairs import Pair, build_pairs, load_pairs, split_pairs
from refocus.data.split import split_by_well

__all__ = [
    "Bbbc006Index",
    "Field",
    "Pair",
    "PercentileNormalizer",
    "Plane",
    "build_pairs",
    "load_pairs",
    "scan_bbbc006",
    "split_by_well",
    "split_pairs",
]
