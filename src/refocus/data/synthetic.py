"""Training pairs simulated on the fly from in-focus fields: any defocus, both sides of focus.

BBBC006 holds planes at fixed z; a network trained on z=1, 5, 10 has never seen focus nor
the other side of it. Here each crop gets its own defocus, drawn from a continuous range on
both sides of focus (a fraction exactly in focus, so in-focus input learns to come back
unchanged), its own optics (defocus scale, spherical aberration) and camera (offset, gain,
read noise, background haze, brightness) jittered around the calibrated values of
:mod:`refocus.simulate` (docs/simulator.md), and the physics of
:func:`refocus.simulate.simulate_plane`: bias off, blur with the Gibson-Lanni PSF
(mirrored borders), bias and haze on, shot and read noise, 12-bit ADC. Nothing is written.

Speed: the PSFs come from a bank over a 1-um defocus grid per aberration variant,
interpolated linearly between grid points, and only the crop plus the PSF's half-width is
blurred (FFT), a few ms per 128-px crop. Normalisation is what training on files does
(:class:`~refocus.data.dataset.CropDataset`): each *whole* plane by its own percentiles.
The target is a real plane, so its percentiles are exact; the input's are those of the
whole simulated plane without noise, tabulated per field and aberration over a defocus
grid (one FFT per entry, computed on first use) and interpolated, with the brightness,
haze and offset of the crop applied (percentiles commute with those) and the shift that
camera noise gives them (measured once per entry); within 1% of a whole simulated plane's.

With a ``guide`` (:mod:`refocus.guides`) each input gets a second channel, computed on the
crop with CONTEXT px of image around it and a PSF at the crop's defocus, jittered.

Exactly in focus, the input is the recorded plane itself (as in ``simulate_plane``), so it
equals its target. Just beside focus the blurred plane keeps most of the recording's own
noise and gets fresh noise on top: such crops are noisier than a real camera's (the
thin-object caveat of docs/simulator.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from scipy import fft
from torch.utils.data import Dataset

from refocus.data.normalize import PercentileNormalizer
from refocus.errors import RefocusError
from refocus.guides import CONTEXT, get_guide
from refocus.images import read_plane
from refocus.samples import in_focus_paths
from refocus.simulate.camera import BBBC006_CAMERA, Camera
from refocus.simulate.optics import BBBC006_OPTICS, Optics
from refocus.simulate.psf import defocus_psf, kernel_spectrum, psf_size

BIAS = BBBC006_CAMERA.offset  # of the recorded in-focus fields

Range = tuple[float, float]
#: defocus points (um, both signs) of the percentile table: 1 um near focus, where the
#: plane's brightest pixels change fastest, then 2 um (linear interpolation between them
#: is within 0.5% of the exact high percentile; at 5 um spacing it was off by 2%)
_TABLE_UM = (*range(0, 8), *range(8, 81, 2))


@dataclass(frozen=True)
class SyntheticConfig:
    """What varies between crops, as ranges drawn uniformly (brightness: log-uniformly).

    ``z_range``: continuous plane position (16 = focus, 2 um per plane times the drawn
    ``defocus_scale``); ``z_planes``, if given, draws whole planes from that list instead
    (:meth:`paper`). ``bottom_mismatch_um``: the aberration variants (the calibration's
    acceptable basin is 375-450). ``background``: extra haze in ADU (denser real fields
    have a higher floor), ``brightness``: factor on the photons. ``guide_jitter``: relative
    sd of the defocus a guide channel's PSF is computed at (:mod:`refocus.guides`; at
    inference that PSF is estimated, so it is never exact).
    """

    z_range: Range = (0.0, 32.0)
    z_planes: tuple[int, ...] | None = None
    in_focus_fraction: float = 0.1
    defocus_scale: Range = (0.97, 1.21)
    bottom_mismatch_um: tuple[float, ...] = (300.0, 375.0, 450.0)
    offset: Range = (100.0, 120.0)
    gain: Range = (0.25, 0.45)
    read_noise: Range = (1.5, 3.0)
    background: Range = (0.0, 40.0)
    brightness: Range = (0.5, 2.0)
    psf_step_um: float = 1.0
    guide_jitter: float = 0.02

    def __post_init__(self) -> None:
        if not 0 <= self.in_focus_fraction <= 1:
            raise RefocusError(None, f"in_focus_fraction must lie in 0..1, not "
                               f"{self.in_focus_fraction}")
        ranges = ("z_range", "defocus_scale", "offset", "gain", "read_noise", "background",
                  "brightness")
        for name in ranges:
            low, high = getattr(self, name)
            if low > high:
                raise RefocusError(None, f"{name}: low end {low} above high end {high}")
        if min(self.gain) <= 0 or min(self.brightness) <= 0 or min(self.defocus_scale) <= 0:
            raise RefocusError(None, "gain, brightness and defocus scale must be positive")
        if not 0 <= self.guide_jitter < 1:
            raise RefocusError(None, f"guide_jitter must lie in 0..1, not {self.guide_jitter}")
        if not self.bottom_mismatch_um:
            raise RefocusError(None, "need at least one aberration variant (bottom_mismatch_um)")
        per_um = 1 / self.psf_step_um if self.psf_step_um > 0 else 0.0
        if not (per_um >= 1 and abs(per_um - round(per_um)) < 1e-9):
            # the percentile table sits on whole um, which must be grid points
            raise RefocusError(None, f"psf_step_um must be 1/n um, got {self.psf_step_um}")
        if self.z_planes is not None and not self.z_planes:
            raise RefocusError(None, "z_planes is empty (use None for the continuous range)")

    @classmethod
    def paper(cls) -> SyntheticConfig:
        """The paper's protocol: planes z=1, 5, 10 only (one side of focus, never in
        focus), to test what a network trained that way does at z=32 and z=16."""
        return cls(z_planes=(1, 5, 10), in_focus_fraction=0.0)

    def max_defocus_um(self, optics: Optics) -> float:
        zs = self.z_range if self.z_planes is None else self.z_planes
        planes = max(abs(z - optics.focus_z) for z in zs)
        return planes * optics.z_step_um * max(self.defocus_scale)


@dataclass(frozen=True)
class CropSpec:
    """Everything one training pair is made from (:meth:`SyntheticPairs.draw`)."""

    field: int
    top: int
    left: int
    rotation: int
    flip: bool
    defocus_um: float
    variant: int
    camera: Camera
    background: float
    brightness: float
    noise_seed: int
    guide_defocus_um: float = 0.0


class PsfBank:
    """Defocus PSFs per aberration variant on a grid, computed once per process, and
    linear interpolation between neighbouring grid kernels (float32)."""

    def __init__(self, variants: Sequence[Optics], step_um: float) -> None:
        self.variants = list(variants)
        self.step = step_um
        self._kernels: dict[tuple[int, int], np.ndarray] = {}

    def grid_kernel(self, variant: int, index: int) -> np.ndarray:
        key = (variant, index)
        if key not in self._kernels:
            psf = defocus_psf(index * self.step, self.variants[variant])
            self._kernels[key] = psf.astype(np.float32)
        return self._kernels[key]

    def kernel(self, variant: int, defocus_um: float) -> np.ndarray:
        position = defocus_um / self.step
        low = int(np.floor(position))
        frac = position - low
        a = self.grid_kernel(variant, low)
        if frac < 1e-6:
            return a
        b = self.grid_kernel(variant, low + 1)
        size = max(a.shape[0], b.shape[0])
        out = np.zeros((size, size), np.float32)
        for weight, k in ((1 - frac, a), (frac, b)):
            pad = (size - k.shape[0]) // 2
            out[pad : pad + k.shape[0], pad : pad + k.shape[1]] += weight * k
        return out


class _Field:
    """One in-focus field: photons (counts above the nominal bias), mirrored by the widest
    PSF's half-width, its FFT for whole-plane blurs, and its normalisation percentiles."""

    def __init__(self, image: np.ndarray, margin: int, normalizer: PercentileNormalizer) -> None:
        self.image = np.asarray(image, dtype=np.float32)
        if self.image.ndim != 2:
            raise RefocusError(None, f"in-focus field has shape {self.image.shape}, not 2-D")
        self.margin = margin
        photons = self.image - BIAS
        self.padded = np.pad(photons, margin, mode="reflect")
        self.shape = tuple(fft.next_fast_len(n, real=True) for n in self.padded.shape)
        self._spectrum: np.ndarray | None = None
        self.percentiles = normalizer.percentiles(self.image)

    def whole_blur(self, kernel: np.ndarray) -> np.ndarray:
        """The whole field's photons blurred (noise-free, mirrored borders) via one FFT."""
        if self._spectrum is None:
            self._spectrum = fft.rfft2(self.padded, self.shape, workers=1)
        full = fft.irfft2(self._spectrum * kernel_spectrum(kernel, self.shape), self.shape,
                          workers=1)
        m, (h, w) = self.margin, self.image.shape
        return full[m : m + h, m : m + w]


class SyntheticPairs(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """``crops_per_field`` simulated (defocused, in-focus) crops of each field per epoch.

    Like :class:`~refocus.data.dataset.CropDataset`: item ``i`` of epoch ``e`` is drawn
    from a generator seeded by (seed, epoch, i), so it is reproducible and DataLoader
    workers need no shared state; ``augment=False`` keeps items fixed across epochs and
    in their original pose (validation).
    """

    def __init__(
        self,
        fields: Sequence[np.ndarray | str | Path] | None = None,
        config: SyntheticConfig | None = None,
        normalizer: PercentileNormalizer | None = None,
        size: int = 128,
        crops_per_field: int = 8,
        augment: bool = True,
        seed: int = 0,
        optics: Optics = BBBC006_OPTICS,
        guide: str | None = None,
    ) -> None:
        sources = list(in_focus_paths() if fields is None else fields)
        if not sources:
            raise RefocusError(None, "no in-focus fields to simulate from")
        self.config = config or SyntheticConfig()
        self.normalizer = normalizer or PercentileNormalizer()
        self.optics = optics
        variants = [replace(optics, bottom_mismatch_um=m) for m in self.config.bottom_mismatch_um]
        self.bank = PsfBank(variants, self.config.psf_step_um)
        # a guide's PSF is the nominal optics' (as blind estimation at inference assumes),
        # computed with CONTEXT px of image around the crop
        self.guide = get_guide(guide, "guide")
        self.guide_bank = PsfBank([optics], self.config.psf_step_um)
        self.window = size + 2 * CONTEXT if self.guide else size
        self.max_defocus = self.config.max_defocus_um(optics)
        self.table_um = _table_points(self.max_defocus + self.config.psf_step_um)
        # the widest kernel: the table's last point (beyond the bank's last grid point)
        widest = max(psf_size(self.table_um[-1] + self.config.psf_step_um, v) for v in variants)
        self.fields = [self._load(src, widest // 2 + 1) for src in sources]
        self._table: dict[tuple[int, int, int], np.ndarray] = {}
        self.size, self.crops_per_field, self.augment, self.seed = (
            size, crops_per_field, augment, seed)
        self.epoch = 0
        small = [i for i, f in enumerate(self.fields) if min(f.image.shape) < self.window]
        if small:
            where = sources[small[0]]
            context = f" plus its guide's context ({self.window} px)" if self.guide else ""
            raise RefocusError(f"field {small[0]}" if isinstance(where, np.ndarray) else where,
                               f"field smaller than crop size {size}{context}")

    def _load(self, source: np.ndarray | str | Path, margin: int) -> _Field:
        image = source if isinstance(source, np.ndarray) else read_plane(source)
        return _Field(image, margin, self.normalizer)

    def warm_up(self) -> None:
        """Compute every PSF and percentile-table entry now (seconds), e.g. before
        DataLoader workers fork, so that no worker computes its own copies."""
        for field in range(len(self.fields)):
            for variant in range(len(self.bank.variants)):
                for d in self.table_um:
                    for sign in (1, -1):
                        self._table_entry(field, variant, sign * int(d))
        steps = int(np.ceil((self.max_defocus + self.config.psf_step_um) / self.config.psf_step_um))
        banks = (self.bank, self.guide_bank) if self.guide else (self.bank,)
        for bank in banks:
            for variant in range(len(bank.variants)):
                for index in range(-steps - 1, steps + 2):  # a guide's jitter reaches beyond
                    bank.grid_kernel(variant, index)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.fields) * self.crops_per_field

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.render(self.draw(i))
        return torch.from_numpy(x if x.ndim == 3 else x[None]), torch.from_numpy(y)[None]

    def draw(self, i: int) -> CropSpec:
        """The random choices of item ``i`` (this epoch), without any pixel work."""
        cfg, rng = self.config, np.random.default_rng([self.seed, self.epoch * self.augment, i])
        field = i // self.crops_per_field
        h, w = self.fields[field].image.shape
        top = int(rng.integers(h - self.window + 1))
        left = int(rng.integers(w - self.window + 1))
        rotation, flip = (int(rng.integers(4)), bool(rng.integers(2))) if self.augment else (0, 0)
        scale = rng.uniform(*cfg.defocus_scale)
        if cfg.z_planes is not None:
            z = float(cfg.z_planes[rng.integers(len(cfg.z_planes))])
        else:
            z = rng.uniform(*cfg.z_range)
        in_focus = rng.random() < cfg.in_focus_fraction
        defocus = 0.0 if in_focus else (z - self.optics.focus_z) * self.optics.z_step_um * scale
        camera = Camera(offset=rng.uniform(*cfg.offset), gain=rng.uniform(*cfg.gain),
                        read_noise=rng.uniform(*cfg.read_noise),
                        bit_depth=BBBC006_CAMERA.bit_depth)
        return CropSpec(
            field=field, top=top, left=left, rotation=rotation, flip=bool(flip),
            defocus_um=float(defocus), variant=int(rng.integers(len(self.bank.variants))),
            camera=camera, background=float(rng.uniform(*cfg.background)),
            brightness=float(np.exp(rng.uniform(*np.log(cfg.brightness)))),
            noise_seed=int(rng.integers(2**63)),
            guide_defocus_um=float(defocus * (1 + cfg.guide_jitter * rng.standard_normal())),
        )

    def render(self, spec: CropSpec) -> tuple[np.ndarray, np.ndarray]:
        """(input, target) float32 crops, normalised, in the spec's pose; with a guide the
        input is (2, size, size): the crop, then its guide."""
        f = self.fields[spec.field]
        n = self.window
        target = self.normalizer.apply(f.image[spec.top : spec.top + n, spec.left : spec.left + n],
                                       *f.percentiles)
        if spec.defocus_um == 0.0:  # the real in-focus plane itself, as simulate_plane does
            x = target.copy()
        else:
            x = self._defocused(spec)
        if self.guide is not None:  # in focus too: inference's estimate is never exactly 0
            x = self.guide.stack(x, self.guide_bank.kernel(0, spec.guide_defocus_um))
        c = (n - self.size) // 2  # the guide's context, if any
        inner = slice(c, c + self.size)
        return _pose(x[..., inner, inner], spec), _pose(target[inner, inner], spec)

    def photons(self, spec: CropSpec) -> np.ndarray:
        """The crop's photons (ADU above the bias, before brightness) blurred by its PSF,
        without noise: the whole plane's blur (mirrored borders) cut to the crop."""
        if abs(spec.defocus_um) > self.max_defocus + self.config.psf_step_um:
            raise RefocusError(None, f"defocus {spec.defocus_um} um outside the PSF bank "
                               f"(+-{self.max_defocus:.1f} um)")
        f = self.fields[spec.field]
        kernel = self.bank.kernel(spec.variant, spec.defocus_um)
        half = kernel.shape[0] // 2
        top, left = f.margin + spec.top - half, f.margin + spec.left - half
        region = f.padded[top : top + self.window + 2 * half, left : left + self.window + 2 * half]
        # scipy's own transform sizes: the shipped weights' recipe reproduces bit for bit
        from scipy import signal  # (imported here: training only, seconds off every start)

        return signal.fftconvolve(region, kernel, mode="valid")

    def _defocused(self, spec: CropSpec) -> np.ndarray:
        cam = spec.camera
        expected = cam.offset + spec.background + spec.brightness * self.photons(spec)
        recorded = cam.expose(expected, np.random.default_rng(spec.noise_seed))
        return self.normalizer.apply(recorded, *self._input_percentiles(spec))

    def _input_percentiles(self, spec: CropSpec) -> tuple[float, float]:
        """Whole-plane (low, high) percentiles of this crop's simulated plane."""
        d = abs(spec.defocus_um)
        sign = 1 if spec.defocus_um >= 0 else -1
        j = min(int(np.searchsorted(self.table_um, d, side="right")) - 1, len(self.table_um) - 2)
        a, b = self.table_um[j], self.table_um[j + 1]
        frac = (d - a) / (b - a)
        entry = (1 - frac) * self._table_entry(spec.field, spec.variant, sign * int(a))
        entry = entry + frac * self._table_entry(spec.field, spec.variant, sign * int(b))
        clean = spec.background + spec.brightness * entry[:2]
        lo, hi = spec.camera.offset + clean + entry[2:] * _noise_sd(spec.camera, clean)
        return float(lo), float(hi)

    def _table_entry(self, field: int, variant: int, defocus_um: int) -> np.ndarray:
        """(low, high, low shift, high shift) of a whole plane's photons (ADU above the
        bias): percentiles without noise, and how far noise moves each, in units of the
        noise's sd there (measured once with the nominal camera)."""
        key = (field, variant, defocus_um)
        if key not in self._table:
            f = self.fields[field]
            if defocus_um == 0:  # never blurred nor re-exposed: the recorded plane itself
                self._table[key] = np.array([*f.percentiles, 0.0, 0.0]) - [*[BIAS] * 2, 0, 0]
                return self._table[key]
            index = round(defocus_um / self.config.psf_step_um)
            blurred = f.whole_blur(self.bank.grid_kernel(variant, index))
            clean = np.array(self.normalizer.percentiles(blurred))
            rng = np.random.default_rng([field, variant, index % 2**16])
            noise = _noise_sd(BBBC006_CAMERA, blurred) * rng.standard_normal(blurred.shape)
            noisy = np.array(self.normalizer.percentiles(blurred + noise))
            shift = (noisy - clean) / _noise_sd(BBBC006_CAMERA, clean)
            self._table[key] = np.concatenate([clean, shift])
        return self._table[key]


def _noise_sd(camera: Camera, above_bias: np.ndarray) -> np.ndarray:
    """Shot and read noise (ADU rms) of pixels ``above_bias`` ADU above the bias."""
    return np.sqrt(camera.gain * np.clip(above_bias, 0, None) + camera.read_noise**2)


def _table_points(max_um: float) -> np.ndarray:
    """Table defocus points up to the first one beyond ``max_um`` (integers, um)."""
    points = [p for p in _TABLE_UM if p < max_um]
    extra = [p for p in _TABLE_UM if p >= max_um][:1]
    if not extra:
        raise RefocusError(None, f"defocus up to {max_um:.0f} um is beyond the simulator's "
                           f"table ({_TABLE_UM[-1]} um)")
    return np.array(points + extra, dtype=float)


def _pose(image: np.ndarray, spec: CropSpec) -> np.ndarray:
    """The crop (Y, X or C, Y, X) in the spec's dihedral pose (as CropDataset's
    augmentation), C-ordered."""
    image = np.rot90(image, spec.rotation, axes=(-2, -1))
    return np.ascontiguousarray(image[..., ::-1] if spec.flip else image)
