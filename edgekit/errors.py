"""One exception type for every failure a user can cause.

The CLI prints its message as a single line and exits with code 2, so every message must name
what was wrong (the file, the field) and read well on its own.
"""
from __future__ import annotations


class EdgekitError(Exception):
    """A user-facing failure: bad input, a missing file, an unreachable host."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # always one line


class ParityError(EdgekitError):
    """An exported model disagrees with its source beyond tolerance."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's text: library errors are often pages long."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
