"""sequnet: the command-line application around the `models` library."""

__version__ = "0.1.0"
