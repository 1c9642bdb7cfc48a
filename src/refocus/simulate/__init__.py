"""Physically-based defocus simulator: real in-focus fields -> BBBC006-like z-planes.

optics (microscope numbers), psf (Gibson-Lanni widefield PSF, FFT blur), camera (noise and
one simulated plane), layout (the Broad's folder layout on disk), stacks (one OME-TIFF
z-stack per field). Calibrated against the real z=00 fields: docs/simulator.md.
"""

from refocus.simulate.camera import BBBC006_CAMERA, Camera, simulate_plane
from refocus.simulate.layout import (
    SimulationPlan,
    in_focus_planes,
    plan_simulation,
    simulate_bbbc006,
)
from refocus.simulate.optics import BBBC006_OPTICS, Optics, plane_defocus_um
from refocus.simulate.psf import blur, defocus_psf
from refocus.simulate.stacks import simulate_stacks

__all__ = [
    "BBBC006_CAMERA",
    "BBBC006_OPTICS",
    "Camera",
    "Optics",
    "blur",
    "defocus_psf",
    "in_focus_planes",
    "SimulationPlan",
    "plan_simulation",
    "plane_defocus_um",
    "simulate_bbbc006",
    "simulate_plane",
    "simulate_stacks",
]
