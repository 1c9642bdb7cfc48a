"""``refocus models``: the pretrained models this installation knows, with their cards."""

from __future__ import annotations

import typer
from rich.table import Column, Table

from refocus.cli.app import app, console


@app.command("models")
def models_cmd(
    name: str | None = typer.Argument(None, help="Show this model's card in full."),
    fetch: bool = typer.Option(False, "--fetch", help="Download NAME into the cache now "
                                                     "(for a machine that will be offline)."),
) -> None:
    """List the pretrained models (the default one is used when --model is not given)."""
    from refocus.zoo import MODELS

    if name is None:
        # no_wrap: the name is what people type, it must not be cut
        table = Table(Column("name", no_wrap=True), "architecture", "default", "summary",
                      "weights")
        for key, entry in MODELS.items():
            table.add_row(key, entry.arch, "yes" if entry.default else "",
                          entry.summary, "in the package" if entry.file else "download")
        console.print(table)
        return
    entry = MODELS.get(name, "refocus models")
    path = entry.path() if fetch or entry.file else None
    for label, value in (("name", entry.name), ("summary", entry.summary),
                         ("architecture", entry.arch), ("training data", entry.training_data),
                         ("recipe", entry.recipe), ("limits", entry.limits),
                         ("licence", entry.licence), ("card", entry.card),
                         ("sha256", entry.sha256), ("file", path or entry.url)):
        console.print(f"[bold]{label}:[/] {value}", highlight=False, soft_wrap=True)
    for metric, value in entry.metrics.items():
        console.print(f"  {metric}: {value}", highlight=False, soft_wrap=True)
