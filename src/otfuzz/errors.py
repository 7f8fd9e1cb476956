"""The one exception type for problems a user can cause and fix.

The CLI prints its message on one line and exits with status 2; everything else is a bug.
"""


class OtfuzzError(Exception):
    """A user-facing error: the message names the problem and, where possible, the fix."""


class DecodeError(ValueError):
    """Bytes that do not parse as the declared message (used by the sans-IO protocol layer)."""
