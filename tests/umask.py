"""Setting the process umask for a block (tests of file permissions)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["umask"]


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    """Set the (process-wide) umask for the block and restore the previous one whatever happens."""
    previous = os.umask(value)
    try:
        yield
    finally:
        os.umask(previous)
