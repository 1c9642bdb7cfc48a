"""Training: the method's two one-cycle stages, with checkpoints a run can be trusted with.

Stage one trains the decoder on a frozen ImageNet encoder (its BatchNorm layers still
adapt), stage two unfreezes everything with discriminative learning rates (early encoder
layers move 100x slower than the decoder), both with AdamW and a one-cycle schedule, as in
the published fastai method. Every epoch is validated on held-out wells; the best epoch is
``--out`` and the last one ``NAME.last.pt`` beside it, which also holds the optimizer,
scheduler, RNG and position so that ``--resume`` continues exactly where a run stopped
(Ctrl-C included). The same command runs on several GPUs under ``torchrun``.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    track,
)
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from refocus import metrics
from refocus.data import PercentileNormalizer, build_pairs, split_pairs
from refocus.data.bbbc006 import BEST_FOCUS_Z, TRAIN_Z
from refocus.data.dataset import CropDataset
from refocus.device import select_device
from refocus.errors import RefocusError
from refocus.loss import LOSSES, build_loss
from refocus.archs.resnet_unet import ARCHS, RefocusUNet, build_unet
from refocus.modelfile import read_model_file, replace_history, save_model

RUNTIME_FIELDS = ("device", "workers", "overwrite", "resume")
FROZEN_LR_FACTOR = 10.0  # the method: slice(lr * 10) with the encoder frozen
DISCRIMINATIVE = (0.01, 0.1, 1.0)  # the method: slice(lr / 100, lr) over three groups


@dataclass
class TrainConfig:
    """Everything that defines a training run (``RUNTIME_FIELDS`` only say how to run it)."""

    data: str
    out: str
    layout: str = "bbbc006"
    input_z: list[int] = field(default_factory=lambda: list(TRAIN_Z))
    target_z: int = BEST_FOCUS_Z
    channel: str = "w1"
    arch: str = "resnet34"
    weights: str | None = "imagenet"
    self_attention: bool = False
    loss: str = "feature"
    vgg_weights: str | None = "imagenet"
    size: int = 128
    batch: int = 8
    epochs: int = 10
    frozen_epochs: int | None = None
    lr: float = 1e-3
    weight_decay: float = 1e-3
    crops_per_pair: int = 8
    val_crops: int = 4
    fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    seed: int = 0
    device: str | None = None
    workers: int | None = None
    overwrite: bool = False
    resume: bool = False

    def run_settings(self) -> dict[str, Any]:
        """The settings a resumed run must share with the interrupted one (plain data)."""
        d = asdict(self)
        for key in RUNTIME_FIELDS:
            d.pop(key)
        d["data"] = str(Path(self.data).resolve())
        d["out"] = str(Path(self.out).resolve())
        d["input_z"] = [int(z) for z in self.input_z]
        d["fractions"] = [float(f) for f in self.fractions]
        d["frozen_epochs"] = self.n_frozen
        d["channels"] = [self.channel]  # what prediction picks from multi-channel input
        return d

    @property
    def n_frozen(self) -> int:
        """Frozen-encoder epochs: half the run with a pretrained encoder, none from scratch
        (a random encoder has nothing worth protecting)."""
        if self.frozen_epochs is not None:
            return self.frozen_epochs
        return self.epochs // 2 if self.weights is not None else 0


@dataclass
class TrainResult:
    """Where the run's files are and what it measured."""

    out: Path
    last: Path
    history: list[dict[str, Any]]
    best_epoch: int


@dataclass(frozen=True)
class _Stage:
    index: int
    start: int
    end: int
    frozen: bool


@dataclass
class _Dist:
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def last_path(out: str | os.PathLike[str]) -> Path:
    """The last-epoch checkpoint beside the model file: ``model.pt`` -> ``model.last.pt``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.last{out.suffix or '.pt'}")


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 on GPUs that have it, fp16 (with loss scaling) on older ones, none elsewhere."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _check_config(config: TrainConfig) -> None:
    if config.arch not in ARCHS:
        raise RefocusError(None, f"unknown --arch {config.arch!r} (choose {', '.join(ARCHS)})")
    if config.loss not in LOSSES:
        raise RefocusError(None, f"unknown --loss {config.loss!r} (choose {', '.join(LOSSES)})")
    if config.epochs < 1:
        raise RefocusError(None, f"--epochs must be at least 1, got {config.epochs}")
    if not 0 <= config.n_frozen <= config.epochs:
        raise RefocusError(None, f"--frozen-epochs must be within 0..{config.epochs}")
    if config.size < 32:
        raise RefocusError(None, f"--size must be at least 32, got {config.size}")
    if config.batch < 1 or config.batch * (config.size // 32) ** 2 < 2:
        raise RefocusError(
            None, "--batch 1 needs --size 64 or more (BatchNorm needs two values per channel)"
        )
    if not config.lr > 0 or config.weight_decay < 0:
        raise RefocusError(None, "--lr must be positive and --weight-decay non-negative")


def _stages(config: TrainConfig) -> list[_Stage]:
    n = config.n_frozen
    stages = []
    if n:
        stages.append(_Stage(0, 0, n, frozen=True))
    if n < config.epochs:
        stages.append(_Stage(len(stages), n, config.epochs, frozen=False))
    return stages


def _prepare_data(config: TrainConfig) -> tuple[dict[str, list], dict[str, Any]]:
    pairs = build_pairs(
        config.data, config.layout, config.input_z, config.target_z, (config.channel,)
    )
    fractions = tuple(config.fractions)
    if len(fractions) != 3:
        raise RefocusError(None, "split fractions must be three numbers (train, val, test)")
    splits = split_pairs(pairs, fractions, config.seed)  # type: ignore[arg-type]
    for name in ("train", "val"):
        if not splits[name]:
            raise RefocusError(
                config.data,
                f"no {name} images after splitting by well/file: training needs at least two "
                "wells (or files) so one can be held out for validation",
            )
    provenance: dict[str, Any] = {
        "data": str(Path(config.data).resolve()),
        "layout": config.layout,
        "split_seed": config.seed,
        "fractions": [float(f) for f in fractions],
        "groups": {k: sorted({p.group for p in v}) for k, v in splits.items()},
        "n_pairs": {k: len(v) for k, v in splits.items()},
    }
    if config.layout == "bbbc006":
        provenance.update(
            channel=config.channel, input_z=list(config.input_z), target_z=config.target_z
        )
    return splits, provenance


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state(legacy=False)
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _optimizer(
    model: RefocusUNet, config: TrainConfig, stage: _Stage, steps: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.OneCycleLR]:
    groups = model.param_groups()
    if stage.frozen:
        max_lrs = [config.lr * FROZEN_LR_FACTOR] * len(groups)
    elif config.weights is not None:
        max_lrs = [config.lr * f for f in DISCRIMINATIVE]
    else:
        max_lrs = [config.lr] * len(groups)
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(
        [{"params": g} for g in groups],
        lr=config.lr,
        betas=(0.9, 0.99),
        weight_decay=config.weight_decay,
        fused=device.type in ("cpu", "cuda"),  # one kernel: 4x faster than foreach on CPU
    )
    # fastai's fit_one_cycle: 30% warm-up, lr/25 start, momentum 0.95 -> 0.85 -> 0.95
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=max_lrs,
        total_steps=steps * (stage.end - stage.start),
        pct_start=0.3,
        div_factor=25.0,
        final_div_factor=1e4,
        base_momentum=0.85,
        max_momentum=0.95,
    )
    return optimizer, scheduler


def _train_step(
    net: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None,
    x: torch.Tensor,
    y: torch.Tensor,
    amp: torch.dtype | None,
) -> tuple[list[str], torch.Tensor]:
    """One optimisation step; returns the term names (``loss`` first) and their detached
    values as one tensor, so logging costs a single device sync when it is read."""
    with torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
        pred = net(x)
        terms = loss_fn(pred.float(), y)
    values = list(terms.values())
    total = torch.stack(values).sum()
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        total.backward()
        optimizer.step()
    scheduler.step()
    return ["loss", *terms], torch.stack([total, *values]).detach()


@torch.no_grad()
def _evaluate(
    predict: Callable[[torch.Tensor], torch.Tensor],
    loader: DataLoader,
    device: torch.device,
    amp: torch.dtype | None,
    prefix: str = "val",
) -> dict[str, float]:
    """Mean L1 (on normalised pixels, what the loss sees) and PSNR/SSIM as
    ``refocus evaluate`` scores them (:mod:`refocus.metrics`), over the validation crops."""
    l1, psnr, ssim = [], [], []
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            pred = predict(x)
        pred_np = pred.float().cpu().numpy()[:, 0]
        for p, t in zip(pred_np, y.numpy()[:, 0], strict=True):
            l1.append(float(np.abs(p - t).mean()))
            psnr.append(metrics.psnr(t, p))
            ssim.append(metrics.ssim(t, p))
    return {
        f"{prefix}_l1": float(np.mean(l1)),
        f"{prefix}_psnr": float(np.mean(psnr)),
        f"{prefix}_ssim": float(np.mean(ssim)),
    }


class _StopRequest:
    """Turn the first Ctrl-C into a request honoured between steps (so the checkpoint holds
    a consistent step); a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    @contextlib.contextmanager
    def installed(self) -> Iterator[_StopRequest]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        self._previous = signal.signal(signal.SIGINT, self._handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, self._previous)

    def agreed(self, ctx: _Dist, device: torch.device) -> bool:
        """Whether any process was asked to stop (all must stop at the same step)."""
        if ctx.world == 1:
            return self.requested
        flag = torch.tensor([float(self.requested)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


def _dist_context() -> tuple[_Dist, bool]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(), False
    started = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        started = True
    ctx = _Dist(dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size())
    return ctx, started


def _wrap(model: nn.Module, ctx: _Dist, device: torch.device) -> nn.Module:
    if ctx.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def _check_outputs(config: TrainConfig) -> dict[str, Any] | None:
    """Refuse to clobber an earlier run; with ``--resume`` return its checkpoint."""
    out, last = Path(config.out), last_path(config.out)
    if config.resume:
        if not last.is_file():
            raise RefocusError(
                last, "no checkpoint to resume from (one is written after each epoch)"
            )
        checkpoint = read_model_file(last)
        if "training_state" not in checkpoint:
            raise RefocusError(last, "not a training checkpoint (no training state)")
        saved, now = checkpoint["train_config"], config.run_settings()
        changed = [k for k in now if k != "out" and saved.get(k) != now[k]]  # a moved run resumes
        if changed:
            k = changed[0]
            raise RefocusError(
                last,
                f"--resume needs the interrupted run's settings, but {k} was {saved.get(k)!r} "
                f"and is now {now[k]!r}",
            )
        return checkpoint
    if not config.overwrite:
        for path in (out, last):
            if path.exists():
                raise RefocusError(
                    path, "exists already (use --resume to continue, --overwrite to replace it)"
                )
    return None


def _terms_text(names: list[str], means: list[float]) -> str:
    return "  ".join(f"{n} {v:.4g}" for n, v in zip(names, means, strict=True))


def train(config: TrainConfig, console: Console | None = None) -> TrainResult:
    """Run (or, with ``config.resume``, continue) a training run.

    Raises ``KeyboardInterrupt`` after saving a checkpoint when stopped with Ctrl-C.
    """
    _check_config(config)
    ctx, started_dist = _dist_context()
    try:
        return _Run(config, console or Console(), ctx).run()
    finally:
        if started_dist:
            dist.destroy_process_group()


class _Run:
    """One training run's state: what a checkpoint must hold to continue it exactly."""

    def __init__(self, config: TrainConfig, console: Console, ctx: _Dist) -> None:
        self.config, self.ctx = config, ctx
        self.console = console if ctx.main else Console(quiet=True)  # one voice under torchrun
        self.device = select_device(config.device, ctx.local_rank)
        self.amp = autocast_dtype(self.device)
        checkpoint = _check_outputs(config)
        self.out, self.last = Path(config.out), last_path(config.out)

        splits, self.provenance = _prepare_data(config)
        self.normalizer = PercentileNormalizer()
        self.train_set = CropDataset(
            splits["train"], self.normalizer, config.size, config.crops_per_pair, True, config.seed
        )
        val_set = CropDataset(
            splits["val"], self.normalizer, config.size, config.val_crops, False, config.seed
        )
        cuda = self.device.type == "cuda"
        workers = config.workers if config.workers is not None else (4 if cuda else 0)
        self.loader_kw: dict[str, Any] = {"num_workers": workers, "pin_memory": cuda}
        self.val_loader = DataLoader(val_set, batch_size=config.batch, **self.loader_kw)
        self.steps = len(self.train_set) // ctx.world // config.batch
        if self.steps == 0:
            on = f" on {ctx.world} processes" if ctx.world > 1 else ""
            n = len(self.train_set)
            msg = f"only {n} training crops for --batch {config.batch}{on}"
            raise RefocusError(config.data, msg)
        # decode every plane once, here: forked DataLoader workers then share the cache
        for dataset in (self.train_set, val_set):
            for pair in track(
                dataset.pairs, "reading images", console=self.console, transient=True
            ):
                dataset.planes(pair)

        _seed_everything(config.seed)
        self.model = build_unet(
            config.arch, None if checkpoint else config.weights, config.self_attention
        )
        self.loss_fn = build_loss(config.loss, config.vgg_weights)
        if checkpoint:
            self.model.load_state_dict(checkpoint["state_dict"])
        self.model.to(self.device).train()
        self.loss_fn.to(self.device).train()
        if cuda:
            torch.backends.cudnn.benchmark = True

        self.settings = config.run_settings()
        self.settings["runtime"] = {
            "device": str(self.device),
            "autocast": str(self.amp).removeprefix("torch.") if self.amp else None,
            "world_size": ctx.world,
            "torch": str(torch.__version__),
        }
        self.state: dict[str, Any] | None = None
        if checkpoint is None:
            self.history: list[dict[str, Any]] = [
                {
                    "epoch": 0,
                    **self.validate(),
                    **_evaluate(lambda x: x, self.val_loader, self.device, None, "input"),
                }
            ]
            self.best: dict[str, Any] = {"epoch": 0, "val_psnr": -float("inf")}
        else:
            self.state = checkpoint["training_state"]
            self.history = list(checkpoint["history"])
            self.best = dict(self.state["best"])
            _set_rng_state(self.state["rng"])
        self.stop = _StopRequest()
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[terms]}"),
            console=self.console,
            disable=not ctx.main,
        )

    def validate(self) -> dict[str, float]:
        self.model.eval()
        try:
            return _evaluate(self.model, self.val_loader, self.device, self.amp)
        finally:
            self.model.train()

    def save(self, path: Path, training_state: dict[str, Any] | None = None) -> None:
        if self.ctx.main:
            save_model(
                path,
                self.model,
                arch=self.model.config,
                normalizer=self.normalizer,
                train_config=self.settings,
                provenance=self.provenance,
                history=self.history,
                overwrite=True,
                training_state=training_state,
            )

    def checkpoint(self, epoch: int, step: int, sums: torch.Tensor, seconds: float) -> None:
        """Save everything beyond the weights that an exact ``--resume`` needs."""
        self.save(
            self.last,
            {
                "epoch": epoch,
                "step": step,
                "stage": self.stage.index,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else {},
                "sums": sums.cpu(),
                "seconds": seconds,
                "rng": _rng_state(),
                "best": self.best,
            },
        )

    def stopped(self, where: str) -> KeyboardInterrupt:
        if self.ctx.world > 1:
            dist.barrier()  # let rank 0 finish writing before torchrun ends the others
        self.console.print(
            f"stopped {where}; checkpoint saved to {self.last}: "
            "run the same command with --resume to continue"
        )
        return KeyboardInterrupt()

    def run(self) -> TrainResult:
        start = (self.state["epoch"], self.state["step"]) if self.state else (0, 0)
        if start[0] >= self.config.epochs:
            self.console.print(f"{self.last}: this run is complete already")
        else:
            with self.stop.installed(), self.progress:
                for stage in _stages(self.config):
                    if stage.end > start[0]:
                        self.run_stage(stage, start)
            if self.ctx.main and self.out.is_file():
                replace_history(self.out, self.history)  # it was saved mid-run
        if self.best["epoch"] == 0:
            raise RefocusError(
                self.out, "no epoch reached a finite validation PSNR (diverged?): lower --lr"
            )
        best = self.history[int(self.best["epoch"])]
        start = self.history[0]
        self.console.print(
            f"best epoch {best['epoch']}: val PSNR {best['val_psnr']:.2f} dB, SSIM "
            f"{best['val_ssim']:.3f} (the input itself: {start['input_psnr']:.2f} dB, "
            f"{start['input_ssim']:.3f})\nmodel: {self.out}\nlast epoch: {self.last}",
            highlight=False,
        )
        return TrainResult(self.out, self.last, self.history, int(self.best["epoch"]))

    def run_stage(self, stage: _Stage, start: tuple[int, int]) -> None:
        self.stage = stage
        self.model.freeze_pretrained(stage.frozen)
        self.optimizer, self.scheduler = _optimizer(self.model, self.config, stage, self.steps)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        if self.state is not None and self.state["stage"] == stage.index:
            self.optimizer.load_state_dict(self.state["optimizer"])
            self.scheduler.load_state_dict(self.state["scheduler"])
            if self.scaler is not None and self.state["scaler"]:
                self.scaler.load_state_dict(self.state["scaler"])
        net = _wrap(self.model, self.ctx, self.device)
        for epoch in range(max(stage.start, start[0]), stage.end):
            resumed = self.state if epoch == start[0] and start[1] > 0 else None
            self.run_epoch(net, epoch, resumed)

    def run_epoch(self, net: nn.Module, epoch: int, resumed: dict[str, Any] | None) -> None:
        config, ctx = self.config, self.ctx
        skip = resumed["step"] if resumed else 0
        sums = resumed["sums"].to(self.device) if resumed else None
        elapsed = float(resumed["seconds"]) if resumed else 0.0
        self.train_set.set_epoch(epoch)
        sampler = DistributedSampler(
            self.train_set, ctx.world, ctx.rank, shuffle=True, seed=config.seed, drop_last=True
        )
        sampler.set_epoch(epoch)
        loader = DataLoader(
            self.train_set,
            batch_size=config.batch,
            sampler=list(sampler)[skip * config.batch : self.steps * config.batch],
            drop_last=True,
            generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch),
            **self.loader_kw,
        )
        label = "frozen encoder" if self.stage.frozen else "all layers"
        task = self.progress.add_task(
            f"epoch {epoch + 1}/{config.epochs} ({label})",
            total=self.steps,
            completed=skip,
            terms="",
        )
        started = time.perf_counter()
        step, names = skip, []
        for x, y in loader:
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            names, values = _train_step(
                net, self.loss_fn, self.optimizer, self.scheduler, self.scaler, x, y, self.amp
            )
            sums = values if sums is None else sums + values
            step += 1
            fields = {}
            if ctx.main and (step % 10 == 0 or step == skip + 1):
                fields["terms"] = _terms_text(names, (sums / step).tolist())
            self.progress.update(task, completed=step, **fields)
            if step < self.steps and self.stop.agreed(ctx, self.device):
                self.checkpoint(epoch, step, sums, elapsed + time.perf_counter() - started)
                raise self.stopped(f"at epoch {epoch + 1} step {step}")
        assert sums is not None
        means = sums / self.steps
        if ctx.world > 1:
            dist.all_reduce(means)
            means = means / ctx.world
        entry = {
            "epoch": epoch + 1,
            "stage": "frozen" if self.stage.frozen else "unfrozen",
            **{f"train_{n}": v for n, v in zip(names, means.tolist(), strict=True)},
            **self.validate(),
            "seconds": elapsed + time.perf_counter() - started,
        }
        self.history.append(entry)
        self.progress.update(task, terms=_terms_text(names, means.tolist()))
        self.console.print(
            f"epoch {epoch + 1}: train loss {entry['train_loss']:.4g}  "
            f"val L1 {entry['val_l1']:.4g}  PSNR {entry['val_psnr']:.2f} dB  "
            f"SSIM {entry['val_ssim']:.3f}",
            highlight=False,
        )
        if entry["val_psnr"] > self.best["val_psnr"]:
            self.best = {"epoch": epoch + 1, "val_psnr": entry["val_psnr"]}
            self.save(self.out)
        self.checkpoint(epoch + 1, 0, torch.zeros(0), 0.0)
        if self.stop.agreed(ctx, self.device):
            raise self.stopped(f"after epoch {epoch + 1}")
