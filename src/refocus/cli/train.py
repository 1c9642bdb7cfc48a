"""``refocus train``: train a refocusing model (also under ``torchrun`` on several GPUs)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from refocus.cli.app import app, console, plane_numbers
from refocus.data.bbbc006 import BEST_FOCUS_Z, TRAIN_Z
from refocus.errors import RefocusError


@app.command("train", context_settings={"allow_extra_args": True})
def train_cmd(
    ctx: typer.Context,
    data: Path = typer.Option(
        ..., "--data", help="BBBC006 folder, or a folder with input/ and target/."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Model file for the best epoch; the last epoch goes to NAME.last.pt."
    ),
    layout: Literal["bbbc006", "pairs"] = typer.Option("bbbc006", help="Data folder layout."),
    input_z: list[str] | None = typer.Option(
        None,
        "--input-z",
        help=f"Defocused planes to learn from (default: {' '.join(map(str, TRAIN_Z))}).",
    ),
    target_z: int = typer.Option(
        BEST_FOCUS_Z, "--target-z", help="In-focus plane used as the target."
    ),
    channel: str = typer.Option("w1", help="BBBC006 channel (w1 nuclei, w2 actin)."),
    arch: Literal["resnet18", "resnet34", "resnet50"] = typer.Option(
        "resnet34", help="Encoder (the method uses resnet34)."
    ),
    no_pretrained: bool = typer.Option(
        False, "--no-pretrained", help="Start the encoder from random weights (no download)."
    ),
    weights: Path | None = typer.Option(
        None, "--weights", help="Local ResNet state dict for the encoder instead of a download."
    ),
    self_attention: bool = typer.Option(
        False, "--self-attention", help="Self-attention in the decoder."
    ),
    loss: Literal["feature", "l1", "mse", "ssim"] = typer.Option(
        "feature", help="feature (the method: pixel + VGG features + Gram), l1, mse or ssim."
    ),
    vgg_weights: Path | None = typer.Option(
        None, "--vgg-weights", help="Local VGG-16-bn state dict for the feature loss."
    ),
    size: int = typer.Option(128, help="Training crop size in pixels."),
    batch: int = typer.Option(8, help="Crops per step (per GPU under torchrun)."),
    epochs: int = typer.Option(10, help="Epochs in all, both stages."),
    crops_per_pair: int = typer.Option(8, help="Random crops of each image pair per epoch."),
    frozen_epochs: int | None = typer.Option(
        None, help="Epochs with the encoder frozen (default: half if pretrained, else 0)."
    ),
    lr: float = typer.Option(
        1e-3, help="Top learning rate (x10 while frozen; /100 and /10 for early layers after)."
    ),
    weight_decay: float = typer.Option(1e-3, help="AdamW weight decay."),
    seed: int = typer.Option(0, help="Seed of the split, crops and initialisation."),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1, mps (default: best)."),
    workers: int | None = typer.Option(
        None, help="Data-loading processes (default: 4 on GPU, 0 on CPU)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the interrupted run of this same command."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier run's files."),
) -> None:
    """Train the U-Net on (defocused, in-focus) pairs; validates on held-out wells."""
    from refocus.train import TrainConfig, train

    if no_pretrained and weights is not None:
        raise RefocusError(None, "--no-pretrained and --weights exclude each other")
    z = plane_numbers(input_z, ctx.args, "--input-z", TRAIN_Z)
    config = TrainConfig(
        data=str(data),
        out=str(out),
        layout=layout,
        input_z=z,
        target_z=target_z,
        channel=channel,
        arch=arch,
        weights=None if no_pretrained else (str(weights) if weights else "imagenet"),
        self_attention=self_attention,
        loss=loss,
        vgg_weights=str(vgg_weights) if vgg_weights else "imagenet",
        size=size,
        batch=batch,
        epochs=epochs,
        crops_per_pair=crops_per_pair,
        frozen_epochs=frozen_epochs,
        lr=lr,
        weight_decay=weight_decay,
        seed=seed,
        device=device,
        workers=workers,
        overwrite=overwrite,
        resume=resume,
    )
    train(config, console)
