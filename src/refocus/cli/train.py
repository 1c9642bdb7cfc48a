"""``refocus train``: train a refocusing model (also under ``torchrun`` on several GPUs)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import click
import typer
from typer.core import TyperCommand

from refocus.cli.app import app, console, given_on_command_line, plane_numbers
from refocus.data.bbbc006 import BEST_FOCUS_Z, TRAIN_Z
from refocus.errors import RefocusError

#: The registry each choice option reads its names from (module, attribute).
CHOICES = {
    "arch": ("refocus.archs", "ARCHITECTURES"),
    "loss": ("refocus.loss", "LOSSES"),
    "layout": ("refocus.data.pairs", "LAYOUTS"),
    "recipe": ("refocus.train.recipes", "RECIPES"),
    "synthetic": ("refocus.data.in_focus", "PROTOCOLS"),
    "guide": ("refocus.guides", "GUIDES"),
}


class _TrainCommand(TyperCommand):
    """Shows the registered names as the choices of ``--arch``, ``--loss`` and ``--layout``,
    read only when help is shown: the architecture and loss registries import torch, which
    no other command should wait for. The values are checked by the config, whose one-line
    error names the option and its choices."""

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        for param in self.params:
            if param.name in CHOICES:
                module, name = CHOICES[param.name]
                names = getattr(importlib.import_module(module), name).names()
                param.metavar = "[" + "|".join(names) + "]"
        super().format_help(ctx, formatter)


@app.command("train", cls=_TrainCommand, context_settings={"allow_extra_args": True})
def train_cmd(
    ctx: typer.Context,
    data: Path | None = typer.Option(
        None, "--data", help="BBBC006 folder, a folder with input/ and target/, or (layout "
        "in-focus) a folder of in-focus fields; a --recipe brings its own."),
    zstacks: list[Path] | None = typer.Option(
        None, "--zstacks", metavar="PATH...", help="Instead of --data: z-stacks through "
        "focus (3-D TIFF, OME-TIFF, OME-Zarr, folders of *_zNN planes, or folders of them), "
        "two or more; each stack's best-focus plane is the target of its other planes."),
    z_step_um: float | None = typer.Option(
        None, "--z-step-um", help="Z spacing of stacks whose files state none (um)."),
    focus_plane: int | None = typer.Option(
        None, "--focus-plane", help="The in-focus plane of every stack (0-based), instead of "
        "the one the focus estimator finds."),
    max_defocus_um: float | None = typer.Option(
        None, "--max-defocus-um", help="Planes up to this far from a stack's focus plane are "
        "training inputs (um; default 32, the shipped model's range)."),
    out: Path = typer.Option(
        ..., "--out", help="Model file for the best epoch; the last epoch goes to NAME.last.pt."),
    layout: str = typer.Option("bbbc006", help="Data folder layout."),
    input_z: list[str] | None = typer.Option(
        None, "--input-z", help=f"Defocused planes to learn from (default: "
                                f"{' '.join(map(str, TRAIN_Z))})."),
    target_z: int = typer.Option(
        BEST_FOCUS_Z, "--target-z", help="In-focus plane used as the target."),
    channel: str | None = typer.Option(
        None, help="BBBC006 channel (w1 nuclei, the default; w2 actin), or the channel (name "
                   "or index) of multi-channel z-stacks."),
    arch: str = typer.Option("resnet34", help="Network (the method uses resnet34)."),
    recipe: str | None = typer.Option(
        None, help="Start from a registered recipe's settings (e.g. the shipped model's); "
                   "options given here override it."),
    synthetic: str = typer.Option(
        "both-sides", help="Layout in-focus: how defocus is simulated (both-sides, paper)."),
    select_by: str = typer.Option(
        "psnr", help="Keep the epoch with the best validation psnr (the method) or l1."),
    init: str | None = typer.Option(
        None, "--init", help="Fine-tune this refocus model (file or pretrained name) of the "
                             "same architecture instead of starting afresh."),
    guide: str | None = typer.Option(
        None, help="A second input channel computed from the image (wiener: its Wiener-"
                   "deconvolved copy; rl: accelerated Richardson-Lucy); nafnet, any data."),
    no_pretrained: bool = typer.Option(
        False, "--no-pretrained", help="Start the encoder from random weights (no download)."),
    weights: Path | None = typer.Option(
        None, "--weights", help="Local ResNet state dict for the encoder instead of a download."),
    self_attention: bool = typer.Option(
        False, "--self-attention", help="Self-attention in the decoder (ResNet U-Nets)."),
    loss: str = typer.Option(
        "feature", help="feature (the method: pixel + VGG features + Gram), or a pixel loss."),
    vgg_weights: Path | None = typer.Option(
        None, "--vgg-weights", help="Local VGG-16-bn state dict for the feature loss."),
    size: int = typer.Option(128, help="Training crop size in pixels."),
    batch: int = typer.Option(8, help="Crops per step (per GPU under torchrun)."),
    epochs: int = typer.Option(10, help="Epochs in all, both stages."),
    crops_per_pair: int = typer.Option(8, help="Random crops of each image pair per epoch."),
    frozen_epochs: int | None = typer.Option(
        None, help="Epochs with the encoder frozen (default: half if pretrained, else 0)."),
    lr: float = typer.Option(
        1e-3, help="Top learning rate (x10 while frozen; /100 and /10 for early layers after)."),
    weight_decay: float = typer.Option(1e-3, help="AdamW weight decay."),
    seed: int = typer.Option(0, help="Seed of the split, crops and initialisation."),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1, mps (default: best)."),
    workers: int | None = typer.Option(
        None, help="Data-loading processes (default: 4 on GPU, 0 on CPU)."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the interrupted run of this same command."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier run's files."),
) -> None:
    """Train a network on (defocused, in-focus) pairs or z-stacks through focus; validates
    on held-out wells (or stacks)."""
    from refocus.train import TrainConfig, train

    train(TrainConfig.from_mapping(config_settings(ctx)), console)


def config_settings(ctx: typer.Context) -> dict[str, Any]:
    """The command's options as :class:`~refocus.train.TrainConfig` settings: every option
    is a setting of the same name except those mapped here (options not given are left
    to the config's defaults). With ``--recipe``, the recipe's settings stand wherever an
    option was not given on the command line."""
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in ctx.params.items()}
    given = given_on_command_line(ctx)
    if settings.pop("no_pretrained"):
        if settings["weights"] is not None:
            raise RefocusError(None, "--no-pretrained and --weights exclude each other")
        settings["weights"] = None
    else:
        settings["weights"] = settings["weights"] or "imagenet"
    settings["vgg_weights"] = settings["vgg_weights"] or "imagenet"
    settings["arch_args"] = {"self_attention": True} if settings.pop("self_attention") else {}
    z = list(settings["input_z"] or ()) or None  # click gives () when it is not given
    # a list option takes one value: the rest arrive as extra arguments (--zstacks a b c)
    stacks = [*map(str, settings.pop("zstacks") or ())]
    extra_z = [] if stacks else list(ctx.args)
    settings["input_z"] = plane_numbers(z, extra_z, "--input-z", TRAIN_Z)
    given |= {"weights"} if given & {"no_pretrained"} else set()
    given |= {"arch_args"} if "self_attention" in given else set()
    given |= {"input_z"} if extra_z else set()
    if stacks:
        settings["zstacks"] = [*stacks, *ctx.args]
    for name in ("data", "max_defocus_um", "channel"):
        if settings[name] is None:
            del settings[name]  # data: needed unless --zstacks or a recipe brings it
    return with_recipe(settings, given)


def with_recipe(settings: dict[str, Any], given: set[str]) -> dict[str, Any]:
    """``settings`` over the named recipe's (only those given on the command line win);
    with ``--zstacks`` the recipe's data (its folder, layout and protocol) is left out."""
    if settings.get("recipe") is None:
        return settings
    from refocus.train.recipes import RECIPES

    merged = RECIPES.get(settings["recipe"], "--recipe").settings()
    if settings.get("zstacks"):
        for name in ("data", "layout", "synthetic"):
            merged.pop(name, None)
    merged.update({k: v for k, v in settings.items() if k in given or k not in merged})
    return merged
