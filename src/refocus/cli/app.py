"""The typer application and its error handling; commands live in sibling modules.

Commands only parse arguments and call library functions. A ``RefocusError`` becomes one
line on stderr and exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence

import typer
from rich.console import Console

from refocus.allocator import retain_freed_memory
from refocus.cli.notices import own_the_terminal, show_notices
from refocus.errors import RefocusError

try:  # typer >= 0.2x carries its own copy of click
    from typer._click.core import ParameterSource
    from typer._click.exceptions import ClickException as _TyperClickException
except ImportError:  # older typer: click itself
    from click.core import ParameterSource
    from click.exceptions import ClickException as _TyperClickException

app = typer.Typer(
    name="refocus",
    help="Make out-of-focus fluorescence microscopy images in focus again.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)
_state = {"debug": False}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    _state["debug"] = debug
    show_notices(console)


def given_on_command_line(ctx: typer.Context) -> set[str]:
    """The options the user typed (not defaults), e.g. to let them override a recipe."""
    return {k for k in ctx.params if ctx.get_parameter_source(k) is ParameterSource.COMMANDLINE}


def plane_numbers(
    values: list[str] | None, extra: list[str], option: str, default: Sequence[int] = ()
) -> list[int]:
    """``--z 1 5 10 32``, ``--z 1,5`` or a repeated option, as plane numbers.

    Click gives an option one value, so the numbers after the first arrive as extra
    arguments (commands taking lists set ``allow_extra_args``); anything else left over is
    a mistake worth naming.
    """
    if values is None and not extra:
        return list(default)
    tokens = [t for v in [*(values or []), *extra] for t in v.replace(",", " ").split()]
    bad = [t for t in tokens if not t.lstrip("-").isdigit()]
    if bad:
        raise RefocusError(None, f"{option} takes plane numbers; got {bad[0]!r}")
    return [int(t) for t in tokens]


def run() -> None:
    """The ``refocus`` command: :func:`main` as a whole process.

    The process ends right after, so the interpreter's last garbage collection need not
    walk every object the imports made (torch's alone: a second on two cores); frozen
    objects are skipped. Not in :func:`main`, which tests and scripts call in-process;
    nor is :func:`~refocus.cli.notices.own_the_terminal`.
    """
    own_the_terminal()
    try:
        main()
    finally:
        gc.freeze()


def main(argv: list[str] | None = None) -> None:
    """Run one command (``argv``, else the process's arguments), errors as one line."""
    retain_freed_memory()  # every command handles whole frames: numpy's and torch's alike
    try:
        code = app(args=argv, standalone_mode=False)
    except RefocusError as exc:
        if _state["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # usage errors (unknown option, bad value) and the like
        import click

        if isinstance(exc, click.exceptions.Abort | typer.Abort):
            sys.exit(130)
        if isinstance(exc, click.ClickException | _TyperClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    # without standalone mode, typer *returns* the code of an Exit (its Ctrl-C is Exit(130))
    if isinstance(code, int) and code:
        if code == 130:
            err_console.print("interrupted")
        sys.exit(code)
