"""The BBBC006 microscope as numbers: objective, sample, camera pixel and z spacing.

Defaults describe the ImageXpress Micro that recorded BBBC006 (20x/0.45 air objective,
2x2 binning -> 0.645 um pixels, Hoechst emission, 2 um between planes, z=16 in focus);
``defocus_scale`` and ``bottom_mismatch_um`` were fitted against the real z=00 fields by
``scripts/calibrate_simulator.py`` (see docs/simulator.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from refocus.data.bbbc006 import BEST_FOCUS_Z


@dataclass(frozen=True)
class Optics:
    """Widefield optics of one microscope; frozen so it can key the PSF cache.

    ``ns`` is the sample's refractive index: fixed U2OS cells in buffer sit between water
    (1.33) and nuclei (about 1.36-1.38); 1.36 is taken because the Hoechst light comes from
    the nuclei. ``source_depth_um`` is how far above the plate bottom the nuclei's middle
    lies. Both set the spherical aberration of the air->sample refractive-index mismatch,
    which makes the PSF above focus differ from the PSF below it. At NA 0.45 that alone is
    small (PSF radius differs by 0.2% between -32 and +32 um); the real z=00 fields need
    more: ``bottom_mismatch_um``, the plate bottom's thickness minus
    the thickness the objective's correction collar is set for (glass-equivalent um),
    carries the fitted spherical aberration. ``defocus_scale`` turns the nominal plane
    spacing into the effective stage movement.
    """

    na: float = 0.45
    ni: float = 1.0
    ns: float = 1.36
    emission_um: float = 0.46
    pixel_um: float = 0.645
    z_step_um: float = 2.0
    focus_z: int = BEST_FOCUS_Z
    source_depth_um: float = 4.0
    bottom_mismatch_um: float = 375.0
    defocus_scale: float = 1.09

    def __post_init__(self) -> None:
        if not 0 < self.na < self.ni:
            raise ValueError(f"NA {self.na} must lie between 0 and the immersion index {self.ni}")
        for name in ("emission_um", "pixel_um", "z_step_um", "defocus_scale", "ns"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


BBBC006_OPTICS = Optics()


def plane_defocus_um(z: float, optics: Optics = BBBC006_OPTICS) -> float:
    """Stage defocus of plane ``z`` from best focus in um (negative below ``focus_z``)."""
    return (z - optics.focus_z) * optics.z_step_um * optics.defocus_scale
