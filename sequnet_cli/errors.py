"""Errors and warnings a user can cause. Each error is shown as one `error: ...` line and exit
code 1 by `sequnet_cli.app.main`; each warning as one `warning: ...` line, and work goes on.

Library code never prints: it raises these errors or calls `warn`, and the app decides how
they reach the terminal.
"""

from __future__ import annotations

import warnings


class SequnetError(Exception):
    """Base class: a problem the user can fix; the message says what happened and how."""


class ConfigError(SequnetError):
    """A preset, a preset key or a command-line option is wrong."""


class DataError(SequnetError):
    """A dataset, a MIDI or audio file is missing, corrupt or empty."""


class CheckpointError(SequnetError):
    """A run or checkpoint is missing, truncated or of another format version."""


class DeviceError(SequnetError):
    """A requested device (CUDA, audio output) is not available, or ran out of memory."""


class StoppedError(SequnetError):
    """The user stopped a command (Ctrl-C) after part of its work was shown or kept."""


class WriteError(SequnetError):
    """A file could not be written; the previous version of it, if any, is unchanged."""


class SequnetWarning(UserWarning):
    """A problem that does not stop the work: a skipped file, a fallback."""


def warn(message: str) -> None:
    """Report a non-fatal problem to the user (the app prints it as `warning: ...`)."""
    warnings.warn(message, SequnetWarning, stacklevel=2)
