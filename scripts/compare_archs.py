"""Which small network refocuses best for the same CPU time? (issue 13)

    python scripts/compare_archs.py --arch '{"arch": "care"}' --minutes 5 --json care.json
    python scripts/compare_archs.py --table care.json nafnet.json ...

Each run trains one architecture from scratch on crops simulated on the fly
(:class:`refocus.data.synthetic.SyntheticPairs`, both sides of focus) from 6 of the 8
shipped in-focus fields, for a budget of *CPU* seconds spent in forward, backward and
optimiser steps on one thread (data generation is not counted: it costs every network the
same per crop), with L1 loss, AdamW and a cosine learning-rate decay over the budget. It
then scores whole 696x520 planes simulated from the 2 held-out fields at planes on both
sides of focus, focus included (PSNR/SSIM after the affine fit of :mod:`refocus.metrics`,
and L1 in the normalised units the loss sees). ``--table`` prints the runs side by side,
with the unrestored input as the first row.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from refocus.archs import build_network
from refocus.data.normalize import PercentileNormalizer
from refocus.data.synthetic import SyntheticPairs
from refocus.images import read_plane
from refocus.metrics import psnr, ssim
from refocus.samples import in_focus_paths
from refocus.simulate import simulate_plane

EVAL_Z = (0, 5, 10, 16, 22, 27, 32)
N_TRAIN = 6


def train(
    spec: dict, seconds: float, lr: float, batch: int, seed: int
) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(seed)
    net = build_network(spec)
    data = SyntheticPairs(in_focus_paths()[:N_TRAIN], crops_per_field=10**5, seed=seed)
    data.warm_up()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    spent, step, losses = 0.0, 0, []
    pick = np.random.default_rng(seed)
    while spent < seconds:
        items = [data[int(pick.integers(len(data)))] for _ in range(batch)]
        x = torch.stack([a for a, _ in items])
        y = torch.stack([b for _, b in items])
        for group in opt.param_groups:
            cosine = 0.5 * (1 + math.cos(math.pi * min(spent / seconds, 1.0)))
            group["lr"] = lr * (0.01 + 0.99 * cosine)
        start = time.process_time()
        net.train()
        loss = (net(x) - y).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        spent += time.process_time() - start
        losses.append(float(loss.detach()))
        step += 1
    return net, {"steps": step, "crops": step * batch, "final_loss": statistics.mean(losses[-50:])}


def evaluate(net: torch.nn.Module | None, seed: int) -> dict[str, dict[str, float]]:
    """Scores per plane z on the held-out fields (``net=None``: the input itself)."""
    norm = PercentileNormalizer()
    scores: dict[str, dict[str, float]] = {}
    fields = [read_plane(p) for p in in_focus_paths()[N_TRAIN:]]
    for z in EVAL_Z:
        rows = []
        for i, field in enumerate(fields):
            plane = simulate_plane(field, z, rng=np.random.default_rng([seed, i, z]))
            x = norm(plane)
            if net is None:
                pred = x
            else:
                net.eval()
                with torch.no_grad():
                    pred = net(torch.from_numpy(x)[None, None])[0, 0].numpy()
            l1 = float(np.abs(pred - norm(field)).mean())
            rows.append((psnr(field, pred), ssim(field, pred), l1))
        means = np.mean(rows, axis=0)
        scores[str(z)] = {k: float(m) for k, m in zip(("psnr", "ssim", "l1"), means, strict=True)}
    return scores


def forward_cpu_s(net: torch.nn.Module) -> float:
    x = torch.zeros(1, 1, 520, 696)
    net.eval()
    with torch.no_grad():
        net(x)
        start = time.process_time()
        net(x)
        return time.process_time() - start


def table(paths: list[Path]) -> None:
    runs = [json.loads(p.read_text()) for p in paths]
    base = runs[0]["input_scores"]
    head = f"{'model':34s} {'steps':>6s} {'fwd s':>6s} " + " ".join(f"z={z:<5d}" for z in EVAL_Z)
    for metric in ("psnr", "ssim", "l1"):
        print(f"\n{metric} (held-out fields, mean of 2)\n{head}")
        print(f"{'input (no restoration)':34s} {'':>6s} {'':>6s} "
              + " ".join(f"{base[str(z)][metric]:7.3f}" for z in EVAL_Z))
        for run in runs:
            name = json.dumps(run["spec"], separators=(",", ":"))[:34]
            print(f"{name:34s} {run['steps']:6d} {run['forward_cpu_s']:6.2f} "
                  + " ".join(f"{run['scores'][str(z)][metric]:7.3f}" for z in EVAL_Z))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", help='architecture spec as JSON, e.g. \'{"arch": "care"}\'')
    parser.add_argument("--minutes", type=float, default=5.0, help="CPU minutes of training")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the run's results here")
    parser.add_argument("--table", type=Path, nargs="+", help="print these runs' results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.table:
        table(args.table)
        return
    spec = json.loads(args.arch)
    net, info = train(spec, args.minutes * 60, args.lr, args.batch, args.seed)
    result = {"spec": spec, "minutes": args.minutes, "lr": args.lr, "batch": args.batch, **info,
              "forward_cpu_s": forward_cpu_s(net), "scores": evaluate(net, args.seed),
              "input_scores": evaluate(None, args.seed)}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
