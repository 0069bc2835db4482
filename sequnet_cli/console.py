"""All terminal output goes through here: one Rich console for results, one for errors."""

from __future__ import annotations

from rich.console import Console

console = Console(highlight=False)
error_console = Console(stderr=True, highlight=False)


def print_error(message: str) -> None:
    """Print a user-facing error as a single `error: ...` line on stderr."""
    text = " ".join(str(message).split())  # one line, whatever the message holds
    error_console.print(f"[bold red]error:[/] {text}", soft_wrap=True)


def print_warning(message: str) -> None:
    """Print a non-fatal problem (a skipped file, a fallback) on stderr."""
    error_console.print(f"[yellow]warning:[/] {message}", soft_wrap=True)
