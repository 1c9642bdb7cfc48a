"""Focus quality control: how far each image (and each tile) is from focus.

measure (tile spectra, noise floor, focus score), templates (calibrated defocus spectra
from the simulator), estimate (distance, side, tile map, best plane of a stack), plate
(well heat map PNG and HTML page), results (CSV rows, one run over many files).
"""

from refocus.focus.estimate import FocusEstimate, best_focus_plane, estimate_focus

__all__ = ["FocusEstimate", "best_focus_plane", "estimate_focus"]
