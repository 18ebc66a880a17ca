"""The one exception type users see, with the exit code scripts rely on.

Everything the CLI reports as "layerfs: error: ..." is a LayerfsError; anything
else escaping is a bug. The exit codes are part of the CLI contract.
"""

from __future__ import annotations

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_BUSY = 4
EXIT_LAUNCHER = 125  # docker's: the runtime, not the container's command, failed


class LayerfsError(Exception):
    """A failure with a one-line message that says what was wrong and what to do."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(LayerfsError):
    """An unknown reference, image, layer or mount."""

    exit_code = EXIT_NOT_FOUND


class Busy(LayerfsError):
    """Something is in use: a mount point, a mounted image."""

    exit_code = EXIT_BUSY


class BadInput(LayerfsError):
    """Input that cannot be trusted: corrupt, malicious or not matching its digest."""
