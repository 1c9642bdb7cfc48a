"""Training: the method's two one-cycle stages, with checkpoints a run can be trusted with.

The schedule is :mod:`refocus.train.schedule`'s. Every epoch is validated on held-out wells;
the best epoch is ``--out`` and the last one ``NAME.last.pt`` beside it, which also holds
the optimizer, scheduler, RNG and position so that ``--resume`` continues exactly where a
run stopped (Ctrl-C included; :mod:`refocus.train.state`). The same command runs on several
GPUs under ``torchrun`` (:mod:`refocus.train.distributed`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import nn

from refocus.allocator import retain_freed_memory
from refocus.archs import build_network, freeze_pretrained
from refocus.device import select_device
from refocus.errors import RefocusError
from refocus.loss import build_loss
from refocus.modelfile import replace_history, save_model
from refocus.train.config import SELECT, TrainConfig
from refocus.train.data import prepare_data
from refocus.train.distributed import DistContext, StopRequest, autocast_dtype, dist_context, wrap
from refocus.train.schedule import Stage, make_optimizer, stages
from refocus.train.state import (
    check_outputs,
    initial_weights,
    last_path,
    rng_state,
    seed_everything,
    set_rng_state,
)
from refocus.train.step import evaluate, train_step

#: Progress-bar refreshes of the running loss, in steps (each costs a device sync).
LOG_EVERY = 10


@dataclass
class TrainResult:
    """Where the run's files are and what it measured."""

    out: Path
    last: Path
    history: list[dict[str, Any]]
    best_epoch: int


def train(config: TrainConfig, console: Console | None = None) -> TrainResult:
    """Run (or, with ``config.resume``, continue) a training run.

    Raises ``KeyboardInterrupt`` after saving a checkpoint when stopped with Ctrl-C.
    """
    retain_freed_memory()
    ctx, started_dist = dist_context()
    try:
        return _Run(config, console or Console(), ctx).run()
    finally:
        if started_dist:
            dist.destroy_process_group()


def _terms_text(names: list[str], means: list[float]) -> str:
    return "  ".join(f"{n} {v:.4g}" for n, v in zip(names, means, strict=True))


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[terms]}"),
        console=console,
        disable=not enabled,
    )


class _Run:
    """One training run's state: what a checkpoint must hold to continue it exactly."""

    def __init__(self, config: TrainConfig, console: Console, ctx: DistContext) -> None:
        self.config, self.ctx = config, ctx
        self.console = console if ctx.main else Console(quiet=True)  # one voice under torchrun
        self.device = select_device(config.device, ctx.local_rank)
        self.amp = autocast_dtype(self.device)
        checkpoint = check_outputs(config)
        self.out, self.last = Path(config.out), last_path(config.out)
        # a wrong --init is refused before the data's half-minute of preparation
        initial = (initial_weights(config.init, config.network_spec(), config.guide)
                   if config.init is not None and not checkpoint else None)
        self.data = prepare_data(config, ctx, self.device, self.console)
        self.build(checkpoint, initial)
        self.settings = config.run_settings()
        self.settings["runtime"] = {
            "device": str(self.device),
            "autocast": str(self.amp).removeprefix("torch.") if self.amp else None,
            "world_size": ctx.world,
            "torch": str(torch.__version__),
        }
        self.select = f"val_{config.select_by}"
        self.start(checkpoint)
        self.stop = StopRequest()
        self.progress = _progress(self.console, ctx.main)

    def build(self, checkpoint: dict[str, Any] | None,
              initial: dict[str, torch.Tensor] | None) -> None:
        """The network (the checkpoint's weights, the ``--init`` model's, or the pretrained
        part loaded) and the loss."""
        config = self.config
        seed_everything(config.seed)
        self.spec = config.network_spec()
        self.model = build_network(self.spec)
        if checkpoint:
            self.model.load_state_dict(checkpoint["state_dict"])
        elif initial is not None:
            self.model.load_state_dict(initial)
        elif config.pretrained:
            load = config.architecture.load_pretrained
            assert load is not None  # config.pretrained says so
            load(self.model, str(config.weights))
        self.loss_fn = build_loss(config.loss, config.vgg_weights)
        self.model.to(self.device).train()
        self.loss_fn.to(self.device).train()
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def start(self, checkpoint: dict[str, Any] | None) -> None:
        """A fresh history (epoch 0: the untrained network and the input itself), or the
        interrupted run's history, position and RNG."""
        self.state: dict[str, Any] | None = None
        if checkpoint is None:
            scores = self.validate()
            baseline = evaluate(lambda x: x, self.data.val_loader, self.device, None, "input")
            self.history: list[dict[str, Any]] = [{"epoch": 0, **scores, **baseline}]
            self.best: dict[str, Any] = {"epoch": 0, self.select: SELECT[self.select]}
        else:
            self.state = checkpoint["training_state"]
            self.history = list(checkpoint["history"])
            self.best = dict(self.state["best"])
            set_rng_state(self.state["rng"])

    def validate(self) -> dict[str, float]:
        self.model.eval()
        try:
            return evaluate(self.model, self.data.val_loader, self.device, self.amp)
        finally:
            self.model.train()

    def save(self, path: Path, training_state: dict[str, Any] | None = None) -> None:
        if self.ctx.main:
            save_model(
                path,
                self.model,
                arch=self.spec,
                normalizer=self.data.normalizer,
                train_config=self.settings,
                provenance=self.data.provenance,
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
                "rng": rng_state(),
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
                for stage in stages(self.config):
                    if stage.end > start[0]:
                        self.run_stage(stage, start)
            if self.ctx.main and self.out.is_file():
                replace_history(self.out, self.history)  # it was saved mid-run
        return self.result()

    def result(self) -> TrainResult:
        """The best epoch, reported beside what the input itself scores."""
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

    def run_stage(self, stage: Stage, start: tuple[int, int]) -> None:
        self.stage = stage
        freeze_pretrained(self.model, stage.frozen)
        self.optimizer, self.scheduler = make_optimizer(
            self.model, self.config, stage, self.data.steps
        )
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        if self.state is not None and self.state["stage"] == stage.index:
            self.optimizer.load_state_dict(self.state["optimizer"])
            self.scheduler.load_state_dict(self.state["scheduler"])
            if self.scaler is not None and self.state["scaler"]:
                self.scaler.load_state_dict(self.state["scaler"])
        net = wrap(self.model, self.ctx, self.device)
        for epoch in range(max(stage.start, start[0]), stage.end):
            resumed = self.state if epoch == start[0] and start[1] > 0 else None
            self.run_epoch(net, epoch, resumed)

    def run_epoch(self, net: nn.Module, epoch: int, resumed: dict[str, Any] | None) -> None:
        """Train one epoch (the rest of it when ``resumed``), validate, save."""
        skip = resumed["step"] if resumed else 0
        sums = resumed["sums"].to(self.device) if resumed else None
        elapsed, started = (float(resumed["seconds"]) if resumed else 0.0), time.perf_counter()
        label = "frozen encoder" if self.stage.frozen else "all layers"
        task = self.progress.add_task(
            f"epoch {epoch + 1}/{self.config.epochs} ({label})",
            total=self.data.steps,
            completed=skip,
            terms="",
        )

        def seconds() -> float:
            return elapsed + time.perf_counter() - started

        names, sums = self.train_steps(net, epoch, skip, sums, task, seconds)
        means = sums / self.data.steps
        if self.ctx.world > 1:
            dist.all_reduce(means)
            means = means / self.ctx.world
        self.progress.update(task, terms=_terms_text(names, means.tolist()))
        self.end_epoch(epoch, names, means, seconds())

    def train_steps(
        self,
        net: nn.Module,
        epoch: int,
        skip: int,
        sums: torch.Tensor | None,
        task: TaskID,
        seconds: Callable[[], float],
    ) -> tuple[list[str], torch.Tensor]:
        """The epoch's steps from ``skip`` on; a Ctrl-C checkpoints and stops after a step.
        Returns the loss term names and their sums over the epoch's steps."""
        step, names = skip, []
        for x, y in self.data.epoch_loader(epoch, skip):
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            names, values = train_step(
                net, self.loss_fn, self.optimizer, self.scheduler, self.scaler, x, y, self.amp
            )
            sums = values if sums is None else sums + values
            step += 1
            fields = {}
            if self.ctx.main and (step % LOG_EVERY == 0 or step == skip + 1):
                fields["terms"] = _terms_text(names, (sums / step).tolist())
            self.progress.update(task, completed=step, **fields)
            if step < self.data.steps and self.stop.agreed(self.ctx, self.device):
                self.checkpoint(epoch, step, sums, seconds())
                raise self.stopped(f"at epoch {epoch + 1} step {step}")
        assert sums is not None
        return names, sums

    def end_epoch(self, epoch: int, names: list[str], means: torch.Tensor, seconds: float) -> None:
        """Validate, record, keep the best epoch and checkpoint the last one."""
        entry = {
            "epoch": epoch + 1,
            "stage": "frozen" if self.stage.frozen else "unfrozen",
            **{f"train_{n}": v for n, v in zip(names, means.tolist(), strict=True)},
            **self.validate(),
            "seconds": seconds,
        }
        self.history.append(entry)
        self.console.print(
            f"epoch {epoch + 1}: train loss {entry['train_loss']:.4g}  "
            f"val L1 {entry['val_l1']:.4g}  PSNR {entry['val_psnr']:.2f} dB  "
            f"SSIM {entry['val_ssim']:.3f}",
            highlight=False,
        )
        worst = SELECT[self.select]
        if (entry[self.select] - self.best[self.select]) * (-1 if worst > 0 else 1) > 0:
            self.best = {"epoch": epoch + 1, self.select: entry[self.select]}
            self.save(self.out)
        self.checkpoint(epoch + 1, 0, torch.zeros(0), 0.0)
        if self.stop.agreed(self.ctx, self.device):
            raise self.stopped(f"after epoch {epoch + 1}")
