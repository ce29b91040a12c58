"""One project base exception, so callers can catch every user-facing error at once.

Messages follow one rule: name the offending value, say what was expected, say the fix.
"""


class DepthSegError(Exception):
    """Base class of every error this project raises for bad input or bad state."""


class InputError(DepthSegError, ValueError):
    """A user-supplied value (path, bbox, band count, config field) is not acceptable."""


class StorageError(DepthSegError, OSError):
    """A local path or object-store key could not be read or written."""


class LeaseLostError(StorageError):
    """This run no longer holds its output's lease: another run writes the output now."""


class RunError(DepthSegError):
    """A run that had started stopped on an error; ``run.json`` in its output records it.

    Command lines exit 1 on it (not 2: the input was accepted and work was done).
    """
