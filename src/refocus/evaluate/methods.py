"""The methods an evaluation compares: the trained model and the classical baselines.

Every method has one signature (:data:`Method`), so the model, Richardson-Lucy (with the
exact PSF, and blind), Wiener and doing nothing restore exactly the same fields and are
scored the same way. RL's iteration counts are tuned on validation fields
(:meth:`Deconvolution.tune`), never on scored ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from refocus import baselines
from refocus.errors import RefocusError
from refocus.evaluate.fields import EvalField
from refocus.simulate import BBBC006_OPTICS, Optics, defocus_psf, plane_defocus_um

if TYPE_CHECKING:
    from rich.progress import Progress

    from refocus.inference.refocuser import Refocuser
    from refocus.inference.trust import Trust

#: A method restores one plane given its z; ``None`` means it does not apply (no PSF known).
Method = Callable[[np.ndarray, int | None], np.ndarray | None]


class Deconvolution:
    """Richardson-Lucy and unsupervised Wiener with the simulator's PSF for each plane, and
    blind Richardson-Lucy, which never sees z.

    With the exact PSF (``optics``: a simulated folder's own) RL is an oracle on simulated
    data; blind RL (:func:`refocus.baselines.blind_psf`, nominal BBBC006 optics) is what a
    user without that knowledge gets. RL's iteration count is chosen per z on validation
    fields (:meth:`tune`); a plane whose z was not tuned uses the count of the tuned z with
    the nearest defocus. Blind RL's count is tuned the same way on the same fields, with
    each field's blind PSF, and keyed by the distance it estimated: a plane gets the count
    of the nearest estimated distance.
    """

    def __init__(self, optics: Optics | None = None) -> None:
        self.optics = optics if optics is not None else Optics()
        self.iterations: dict[int, int] = {}
        self.tuning: dict[int, dict[int, float]] = {}
        self.blind_optics = BBBC006_OPTICS
        #: mean blind |defocus| (um) of a tuned z's validation fields -> iteration count
        self.blind_iterations: dict[float, int] = {}
        self.blind_tuning: dict[int, dict[int, float]] = {}

    def psf(self, z: int) -> np.ndarray:
        return defocus_psf(plane_defocus_um(z, self.optics), self.optics)

    def tune(self, fields: Sequence[EvalField],
             candidates: Sequence[int] = baselines.RL_CANDIDATES, progress: bool = False
             ) -> None:
        """Choose RL's iterations (exact and blind PSF) for every z among ``fields`` by mean
        PSNR."""
        zs = sorted({f.z for f in fields if f.z is not None and f.target is not None})
        with _progress(progress) as bar:
            task = bar.add_task("tuning Richardson-Lucy", total=len(zs))
            for z in zs:
                bar.update(task, description=f"tuning Richardson-Lucy z={z}")
                group = [f for f in fields if f.z == z and f.target is not None]
                inputs, targets = [f.input for f in group], [f.target for f in group]
                best, means = baselines.choose_rl_iterations(inputs, targets, self.psf(z),
                                                             candidates)
                self.iterations[z], self.tuning[z] = best, means
                blind = [baselines.blind_psf(x, self.blind_optics) for x in inputs]
                best, means = baselines.choose_rl_iterations(
                    inputs, targets, [b.psf for b in blind], candidates)
                distance = round(float(np.mean([abs(b.defocus_um) for b in blind])), 3)
                self.blind_iterations[distance], self.blind_tuning[z] = best, means
                bar.advance(task)

    def rl_iterations(self, z: int) -> int:
        if not self.iterations:
            raise RefocusError(None, "Richardson-Lucy has no tuned iteration count "
                                     "(no validation fields were given)")
        if z in self.iterations:
            return self.iterations[z]
        nearest = min(self.iterations, key=lambda t: abs(
            abs(plane_defocus_um(t, self.optics)) - abs(plane_defocus_um(z, self.optics))))
        return self.iterations[nearest]

    def richardson_lucy(self, image: np.ndarray, z: int | None) -> np.ndarray | None:
        if z is None:
            return None
        return baselines.richardson_lucy(image, self.psf(z), self.rl_iterations(z))

    def wiener(self, image: np.ndarray, z: int | None) -> np.ndarray | None:
        return None if z is None else baselines.wiener(image, self.psf(z))

    def richardson_lucy_blind(self, image: np.ndarray, z: int | None) -> np.ndarray:
        """Blind RL: ``z`` is ignored (the PSF and the iteration count come from the image)."""
        if not self.blind_iterations:
            raise RefocusError(None, "blind Richardson-Lucy has no tuned iteration count "
                                     "(no validation fields were given)")
        chosen = baselines.blind_psf(image, self.blind_optics)
        nearest = min(self.blind_iterations, key=lambda d: abs(d - abs(chosen.defocus_um)))
        return baselines.richardson_lucy(image, chosen.psf, self.blind_iterations[nearest])


class ModelMethod:
    """The trained model as a :data:`Method` (it needs no z) that can also say how far its
    output can be trusted (:meth:`trust`, with ``trust_flips`` predictions; 0 = never).

    Its output is what ``refocus predict`` writes: the input's units and dtype, so the
    scores are those of the files users get.
    """

    def __init__(self, refocuser: Refocuser, trust_flips: int = 0) -> None:
        self.refocuser, self.trust_flips = refocuser, trust_flips

    def __call__(self, image: np.ndarray, z: int | None) -> np.ndarray:
        return self.refocuser.predict(image)

    def trust(self, image: np.ndarray, output: np.ndarray) -> Trust | None:
        """The output's :class:`~refocus.inference.trust.Trust`, None when switched off."""
        if not self.trust_flips:
            return None
        from refocus.inference.trust import trust_map

        return trust_map(self.refocuser, image, output, flips=self.trust_flips)


def model_method(model: str | Path | Refocuser, device: str | None = None,
                 trust_flips: int = 0, variant: str = "auto") -> ModelMethod:
    """The trained model (a file, run as ``variant``, or one already loaded) as a
    :class:`ModelMethod`."""
    from refocus.inference.refocuser import Refocuser

    refocuser = (model if isinstance(model, Refocuser)
                 else Refocuser.from_file(model, device, mode=variant))
    return ModelMethod(refocuser, trust_flips)


def baseline_methods(deconvolution: Deconvolution) -> dict[str, Method]:
    """identity, richardson_lucy, richardson_lucy_blind and wiener, in the order the report
    shows them."""
    return {
        "identity": lambda image, z: baselines.identity(image),
        "richardson_lucy": deconvolution.richardson_lucy,
        "richardson_lucy_blind": deconvolution.richardson_lucy_blind,
        "wiener": deconvolution.wiener,
    }


def _progress(enabled: bool) -> Progress:
    """A transient rich progress bar, hidden when ``enabled`` is false."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    return Progress("[progress.description]{task.description}", BarColumn(),
                    MofNCompleteColumn(), TimeRemainingColumn(), disable=not enabled,
                    transient=True)


def restore_all(fields: Sequence[EvalField], methods: Mapping[str, Method],
                progress: bool = False, label: str = "restoring"
                ) -> Iterator[tuple[EvalField, str, np.ndarray]]:
    """(field, method name, output) for every method that applies to every field."""
    with _progress(progress) as bar:
        task = bar.add_task(label, total=len(fields) * len(methods))
        for f in fields:
            for name, method in methods.items():
                bar.update(task, description=f"{label} {f.name} z={f.z} {name}")
                output = method(f.input, f.z)
                bar.advance(task)
                if output is not None:
                    yield f, name, output


def model_name(path: str | Path, taken: Iterable[str]) -> str:
    """``model_2`` style name for a second model, or its file stem when that is distinct."""
    stem = Path(path).stem
    return stem if stem not in {*taken, "model", "identity"} else "model_2"
