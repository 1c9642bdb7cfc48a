"""Why does the shipped model trail Richardson-Lucy beyond z = 10? A probe (issue 13).

    python benchmarks/bench_guides.py train --guide none|defocus|wiener --steps 1500 \\
        --out runs/guides/wiener.pt
    python benchmarks/bench_guides.py score runs/guides/*.pt \\
        --out benchmarks/results/guides.md

Exact-PSF RL gains 10-15 dB at z = 22 where the shipped model gains 1-4. There the PSF is
a wide smooth disc (``bench_gap.py``), and inverting it takes its radius: RL handed a
defocus 11% off (the ends of the training jitter of ``defocus_scale``) loses much of its
lead. Is the network short of that distance, of an explicit inversion, or of training?
Each probe continues training the shipped weights for ``--steps`` more steps (same wells,
same simulated crops, AdamW 2e-4, L1) with one guide channel beside the image, so only the
guide differs between runs:

- ``none``: no guide (the control: the same extra training alone);
- ``defocus``: the crop's signed defocus / 40 um as a constant plane (the true value in
  training; in scoring, the blind estimate);
- ``wiener``: the crop deconvolved by a Wiener filter with the nominal PSF at its defocus
  (2% jitter in training; in scoring, the PSF blind RL chooses, :func:`baselines.blind_psf`).

``score`` reports PSNR on whole planes of the shipped model's held-out wells (a03, a07),
beside the input, the shipped model and RL with the exact PSF and with the defocus off by
the ends of the training jitter (iterations chosen on the validation well a06). Probe
files are experiments, not model files.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from bench_pretrained import machine
from bench_trust import held_out_paths as well_paths  # the shipped fields of these wells

from refocus.archs.compact import CompactUNet
from refocus.baselines import blind_psf, choose_rl_iterations, richardson_lucy
from refocus.data.synthetic import SyntheticConfig, SyntheticPairs
from refocus.guides import CONTEXT, wiener_filter
from refocus.images import read_plane
from refocus.metrics import psnr
from refocus.modelfile import load_model
from refocus.simulate import BBBC006_OPTICS, plane_defocus_um, simulate_plane
from refocus.simulate.psf import defocus_psf
from refocus.zoo import resolve_model

GUIDES = ("none", "defocus", "wiener")
#: the model the probes went on from (the default when they ran; nuclei-widefield-v2 is
#: the Wiener guide trained from scratch)
PROBED = "nuclei-widefield-v1"
Z_VALUES = (1, 5, 10, 13, 16, 19, 22, 27, 32)
DEFOCUS_UNIT_UM, DEFOCUS_JITTER = 40.0, 0.02
SIZE, BATCH, NOMINAL_VARIANT = 128, 8, 1  # variant 1: 375 um, the nominal optics
RL_ITERATIONS = (5, 10, 20, 40, 80)
#: RL with the exact PSF, and with the defocus at the ends of the training jitter of
#: ``defocus_scale`` (what a network that must infer the distance is up against)
_RL_SCALES = {"RL exact": 1.0, **{
    f"RL, defocus x{end / BBBC006_OPTICS.defocus_scale:.2f}": end / BBBC006_OPTICS.defocus_scale
    for end in SyntheticConfig().defocus_scale}}


def guide_plane(guide: str, image: np.ndarray, defocus_um: float, psf: np.ndarray | None
                ) -> np.ndarray | None:
    """The guide channel for ``image`` (normalised) at ``defocus_um`` with ``psf``."""
    if guide == "none":
        return None
    if guide == "defocus":
        return np.full_like(image, defocus_um / DEFOCUS_UNIT_UM)
    return image if psf is None else wiener_filter(image, psf)


def probe_network(guide: str) -> tuple[CompactUNet, object, dict]:
    """The shipped network, its input widened by the guide channel (zero weights: the
    probe starts as the shipped model), its normaliser and its split."""
    loaded = load_model(resolve_model(PROBED))
    spec = {k: v for k, v in loaded.arch.items() if k != "arch"}
    net = CompactUNet(**spec, in_channels=1 if guide == "none" else 2)
    state = loaded.model.state_dict()
    weight = torch.zeros_like(net.intro.weight)
    weight[:, :1] = state["intro.weight"]
    net.load_state_dict({**state, "intro.weight": weight})
    return net, loaded.normalizer, loaded.provenance["groups"]


def _batch(data: SyntheticPairs, guide: str, rng: np.random.Generator
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """BATCH crops with CONTEXT px around them (for the Wiener filter), cut to SIZE."""
    inputs, targets = [], []
    inner = slice(CONTEXT, CONTEXT + SIZE)
    for i in rng.integers(len(data), size=BATCH):
        spec = data.draw(int(i))
        x, y = data.render(spec)
        jittered = spec.defocus_um * (1 + DEFOCUS_JITTER * rng.standard_normal())
        psf = data.bank.kernel(NOMINAL_VARIANT, jittered) if spec.defocus_um else None
        g = guide_plane(guide, x, spec.defocus_um, psf)
        planes = [x] if g is None else [x, g]
        inputs.append(np.stack([p[inner, inner] for p in planes]))
        targets.append(y[None, inner, inner])
    return torch.from_numpy(np.stack(inputs)), torch.from_numpy(np.stack(targets))


def train(guide: str, steps: int, seed: int, out: Path, init: Path | None = None) -> None:
    """``steps`` more steps from the shipped weights, or from probe ``init`` (same guide:
    the learning curve goes on, ``steps`` counts both)."""
    torch.manual_seed(seed)
    net, normalizer, groups = probe_network(guide)
    before = 0
    if init is not None:
        saved = torch.load(init, weights_only=True)
        if saved["guide"] != guide:
            raise SystemExit(f"{init}: a {saved['guide']!r} probe, not {guide!r}")
        net.load_state_dict(saved["state_dict"])
        before = saved["steps"]
    fields = well_paths(groups["train"])
    data = SyntheticPairs(fields, normalizer=normalizer, size=SIZE + 2 * CONTEXT,
                          crops_per_field=10**6, seed=seed)
    data.warm_up()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-4, weight_decay=1e-3)
    rng, start, losses = np.random.default_rng(seed), time.time(), []
    net.train()
    for step in range(1, steps + 1):
        x, y = _batch(data, guide, rng)
        loss = (net(x) - y).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if step % 100 == 0:
            print(f"{guide} step {step} {time.time() - start:.0f} s "
                  f"L1 {np.mean(losses[-100:]):.5f}", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"guide": guide, "steps": before + steps, "added_steps": steps, "seed": seed,
                "wall_s": time.time() - start, "init": str(init) if init else None,
                "state_dict": net.state_dict()}, out)


def _fields(wells: list[str]) -> list[np.ndarray]:
    return [read_plane(p).astype(np.float32) for p in well_paths(wells)]


def _planes(fields: list[np.ndarray], z: int) -> list[np.ndarray]:
    """Plane ``z`` of each field, the noise seeded by (z, field)."""
    return [simulate_plane(f, z, rng=[z, i]).astype(np.float32) for i, f in enumerate(fields)]


def _restore(net: CompactUNet, guide: str, image: np.ndarray, normalizer: object) -> np.ndarray:
    x = normalizer(image)
    blind = blind_psf(image) if guide != "none" else None
    g = guide_plane(guide, x, blind.defocus_um if blind else 0.0,
                    blind.psf.astype(np.float32) if blind and blind.defocus_um else None)
    planes = [x] if g is None else [x, g]
    with torch.no_grad():
        return net(torch.from_numpy(np.stack(planes))[None])[0, 0].numpy()


def _load_probes(probes: list[Path]) -> tuple[dict[str, tuple[str, CompactUNet]], list[str]]:
    """Each probe's network by name, and the command that trained it."""
    nets, made = {}, []
    for path in probes:
        saved = torch.load(path, weights_only=True)
        net = probe_network(saved["guide"])[0]
        net.load_state_dict(saved["state_dict"])
        nets[f"{path.stem} (+{saved['steps']} steps)"] = (saved["guide"], net.eval())
        init = saved["init"]
        made.append(f"- `python benchmarks/bench_guides.py train --guide {saved['guide']} "
                    f"--steps {saved['added_steps']} --seed {saved['seed']}"
                    + (f" --init {init}" if init else "") + f" --out {path}` "
                    f"({saved['wall_s'] / 60:.0f} min wall)")
    return nets, made


def score(probes: list[Path], out: Path | None, z_values: tuple[int, ...] = Z_VALUES) -> None:
    shipped, normalizer, groups = probe_network("none")
    nets, made = _load_probes(probes)
    nets = {"shipped": ("none", shipped.eval()), **nets}
    test, val = _fields(groups["test"]), _fields(groups["val"])
    rows = []
    for z in z_values:
        x_test, row = _planes(test, z), {"z": z}
        if z != 16:  # in focus the input is the target itself
            row["input"] = np.mean([psnr(t, x) for t, x in zip(test, x_test, strict=True)])
            x_val = _planes(val, z)
            for label, factor in _RL_SCALES.items():
                psf = defocus_psf(plane_defocus_um(z) * factor)
                n, _ = choose_rl_iterations(x_val, val, psf, RL_ITERATIONS)
                row[label] = np.mean([psnr(t, richardson_lucy(x, psf, n))
                                      for t, x in zip(test, x_test, strict=True)])
        for name, (guide, net) in nets.items():
            row[name] = np.mean([psnr(t, _restore(net, guide, x, normalizer))
                                 for t, x in zip(test, x_test, strict=True)])
        print({k: v if k == "z" else round(float(v), 2) for k, v in row.items()}, flush=True)
        rows.append(row)
    _write_table(rows, probes, made, groups, out)


def _write_table(rows: list[dict], probes: list[Path], made: list[str], groups: dict,
                 out: Path | None) -> None:
    names = list(dict.fromkeys(k for row in rows for k in row if k != "z"))
    lines = [f"# Guide channels: `python benchmarks/bench_guides.py score "
             f"{' '.join(map(str, probes))}`", "", "Probes (each continues the shipped "
             "weights on the same simulated crops):", "", *made, "",
             f"PSNR (dB), mean of the held-out wells {', '.join(groups['test'])} (one site "
             "each, whole 696x520 planes simulated with the nominal optics).", "",
             f"Machine: {machine()}.", "",
             "| z | " + " | ".join(names) + " |", "|" + " --- |" * (len(names) + 1)]
    for row in rows:
        cells = [f"{row[n]:.2f}" if n in row else "" for n in names]
        lines.append(f"| {row['z']} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if out is not None:
        out.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--guide", choices=GUIDES, required=True)
    t.add_argument("--steps", type=int, default=1500)
    t.add_argument("--seed", type=int, default=5)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--init", type=Path, help="a probe file to go on from (same guide)")
    s = sub.add_parser("score")
    s.add_argument("probes", type=Path, nargs="*")
    s.add_argument("--out", type=Path)
    s.add_argument("--z", type=int, nargs="+", default=list(Z_VALUES))
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.command == "train":
        train(args.guide, args.steps, args.seed, args.out, args.init)
    else:
        score(args.probes, args.out, tuple(args.z))


if __name__ == "__main__":
    main()
