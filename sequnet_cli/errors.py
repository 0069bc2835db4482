"""Errors a user can cause. Each is shown as one `error: ...` line and exit code 1."""


class SequnetError(Exception):
    """Base class: a problem the user can fix; the message says what happened and how."""


class ConfigError(SequnetError):
    """A preset, a preset key or a command-line override is wrong."""


class DataError(SequnetError):
    """A dataset, a MIDI or audio file is missing, corrupt or empty."""


class CheckpointError(SequnetError):
    """A run or checkpoint is missing, truncated or of another format version."""


class DeviceError(SequnetError):
    """A requested device (CUDA, audio output) is not available."""
