"""The `sequnet` Typer application: thin commands that hand off to library code.

Every `SequnetError` (and Ctrl-C, out-of-memory, unreadable files) raised below a command is
turned into exactly one `error: ...` line on stderr and exit code 1 by `main`.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from sequnet_cli import __version__
from sequnet_cli.console import console, print_error
from sequnet_cli.errors import SequnetError

app = typer.Typer(
    name="sequnet",
    help="Train, evaluate, sample and benchmark Seq-U-Net music models (piano roll and raw audio).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _show_version(value: bool) -> None:
    if value:
        console.print(f"sequnet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Show the version and exit."),
    ] = False,
) -> None:
    """sequnet: causal U-Nets for music generation (Stoller et al., IJCAI 2020)."""


def main() -> None:
    """Console-script entry point: run the app, turning user-caused failures into one line."""
    try:
        app(standalone_mode=False)
    except SequnetError as error:
        print_error(str(error))
        sys.exit(1)
    except KeyboardInterrupt:
        print_error("interrupted")
        sys.exit(1)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        print_error("aborted")
        sys.exit(1)
    except Exception as error:
        # Typer's (vendored) click signals usage problems with exceptions that format
        # themselves; anything else is a bug and keeps its traceback.
        format_message = getattr(error, "format_message", None)
        if format_message is None:
            raise
        if type(error).__name__ == "NoArgsIsHelpError":
            sys.exit(0)
        print_error(format_message())
        sys.exit(1)


if __name__ == "__main__":
    main()
