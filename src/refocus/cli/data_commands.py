"""``refocus info`` and ``refocus download``: look at and fetch data."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from refocus.cli.app import app, console, plane_numbers

download_app = typer.Typer(help="Download public data sets.", no_args_is_help=True)
app.add_typer(download_app, name="download")


@app.command()
def info(data: Path = typer.Argument(..., help="A data folder (BBBC006 layout).")) -> None:
    """Show what a data folder holds: fields, planes, channels, size, dtype, missing planes."""
    from refocus.data.inventory import take_inventory

    inv = take_inventory(data)
    console.print(f"[bold]{inv.root}[/]")
    console.print(
        f"fields: {len(inv.fields)} ({len(inv.wells)} wells)   channels: {', '.join(inv.channels)}"
    )
    sizes = ", ".join(f"{w}x{h} ({n})" for (h, w, *_), n in inv.shapes.most_common())
    dtypes = ", ".join(f"{d} ({n})" for d, n in inv.dtypes.most_common())
    console.print(f"image size (w x h): {sizes}   dtype: {dtypes}")
    table = Table("channel", "z", "fields", "fields without this plane")
    for ch, per_z in inv.fields_per_z.items():
        n_fields = inv.fields_by_channel[ch]
        for z, n in per_z.items():
            table.add_row(ch, f"{z:02d}", str(n), str(n_fields - n) if n < n_fields else "")
    console.print(table)
    for ch, missing in inv.missing.items():
        if missing:
            console.print(
                f"[yellow]{ch}: {len(missing)} (field, z) planes missing[/], "
                f"e.g. {', '.join(f'{f} z={z:02d}' for f, z in missing[:3])}"
            )


@download_app.command("bbbc006", context_settings={"allow_extra_args": True})
def download_bbbc006_cmd(
    ctx: typer.Context,
    dest: Path = typer.Option(..., "--dest", help="Folder to put the z-plane folders in."),
    z: list[str] | None = typer.Option(
        None, "--z", help="Planes to fetch, e.g. --z 1 5 10 16 32 (the default)."
    ),
    channel: list[str] | None = typer.Option(
        None, "--channel", help="w1 (Hoechst, the default) and/or w2 (phalloidin)."
    ),
    keep_zips: bool = typer.Option(False, help="Keep the downloaded zip files."),
) -> None:
    """Download BBBC006 planes from the Broad (resumable; skips complete planes)."""
    from refocus.data.download import DEFAULT_CHANNELS, DEFAULT_Z, download_bbbc006

    # `--z 1 5 --channel w1 w2`: the values after each option's first arrive as extras
    extra_channels = [a for a in ctx.args if a.lower().startswith("w")]
    extra_z = [a for a in ctx.args if a not in extra_channels]
    planes = plane_numbers(z, extra_z, "--z", DEFAULT_Z)
    channels = [*(channel or []), *extra_channels] or list(DEFAULT_CHANNELS)
    folders = download_bbbc006(dest, planes, channels, keep_zips=keep_zips)
    console.print(f"{len(folders)} plane folder(s) ready in {dest}")
