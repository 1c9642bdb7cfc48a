"""The methods an evaluation compares: the trained model and the classical baselines.

Every method has one signature (:data:`Method`), so the model, Richardson-Lucy, Wiener and
doing nothing restore exactly the same fields and are scored the same way. RL's iteration
count is tuned on validation fields (:meth:`Deconvolution.tune`), never on scored ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from refocus import baselines
from refocus.errors import RefocusError
from refocus.evaluate.fields import EvalField
from refocus.simulate import Optics, defocus_psf, plane_defocus_um

if TYPE_CHECKING:
    from rich.progress import Progress

    from refocus.inference.refocuser import Refocuser

#: A method restores one plane given its z; ``None`` means it does not apply (no PSF known).
Method = Callable[[np.ndarray, int | None], np.ndarray | None]


class Deconvolution:
    """Richardson-Lucy and unsupervised Wiener with the simulator's PSF for each plane.

    RL's iteration count is chosen per z on validation fields (:meth:`tune`); a plane whose
    z was not tuned uses the count of the tuned z with the nearest defocus.
    """

    def __init__(self, optics: Optics | None = None) -> None:
        self.optics = optics if optics is not None else Optics()
        self.iterations: dict[int, int] = {}
        self.tuning: dict[int, dict[int, float]] = {}

    def psf(self, z: int) -> np.ndarray:
        return defocus_psf(plane_defocus_um(z, self.optics), self.optics)

    def tune(self, fields: Sequence[EvalField],
             candidates: Sequence[int] = baselines.RL_CANDIDATES, progress: bool = False
             ) -> None:
        """Choose RL's iterations for every z among ``fields`` by mean PSNR."""
        zs = sorted({f.z for f in fields if f.z is not None and f.target is not None})
        with _progress(progress) as bar:
            task = bar.add_task("tuning Richardson-Lucy", total=len(zs))
            for z in zs:
                bar.update(task, description=f"tuning Richardson-Lucy z={z}")
                group = [f for f in fields if f.z == z and f.target is not None]
                best, means = baselines.choose_rl_iterations(
                    [f.input for f in group], [f.target for f in group], self.psf(z), candidates)
                self.iterations[z], self.tuning[z] = best, means
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


def model_method(model: str | Path | Refocuser, device: str | None = None) -> Method:
    """The trained model (a file, or one already loaded) as a :data:`Method` (it needs no z).

    Its output is what ``refocus predict`` writes: the input's units and dtype, so the
    scores are those of the files users get.
    """
    from refocus.inference.refocuser import Refocuser

    refocuser = model if isinstance(model, Refocuser) else Refocuser.from_file(model, device)

    def restore(image: np.ndarray, z: int | None) -> np.ndarray:
        return refocuser.predict(image)

    return restore


def baseline_methods(deconvolution: Deconvolution) -> dict[str, Method]:
    """identity, richardson_lucy and wiener, in the order the report shows them."""
    return {
        "identity": lambda image, z: baselines.identity(image),
        "richardson_lucy": deconvolution.richardson_lucy,
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
