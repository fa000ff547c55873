"""Atomic writes that honour the umask.

``tempfile.mkstemp`` and ``tempfile.mkdtemp`` create their results with mode 0600 / 0700 whatever the umask, so a
file or folder made with them and then renamed into place keeps those private permissions: another user (a service
account reading a shared checkpoint cache or an export volume) cannot read it. The helpers here stage through a
temporary name beside the target, as before (a crash never leaves a half-written file under the real name), but
give the result the permissions a plain ``open(path, "w")`` / ``mkdir(path)`` would: ``0o666 & ~umask`` for files
and ``0o777 & ~umask`` for folders (0644 / 0755 under the usual umask 022).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "atomic_write",
    "current_umask",
    "default_dir_mode",
    "default_file_mode",
    "make_dir_public",
    "write_bytes_atomic",
]

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux: ``/proc/self/status``).

    Elsewhere the umask can only be read by setting it; that is done under a lock and restored at once.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: ``0o666 & ~umask``."""
    return 0o666 & ~current_umask()


def default_dir_mode() -> int:
    """The mode ``os.mkdir(path)`` gives a new folder: ``0o777 & ~umask``."""
    return 0o777 & ~current_umask()


def make_dir_public(path: str | os.PathLike[str]) -> None:
    """Give a folder made by ``tempfile.mkdtemp`` (0700) the mode ``mkdir`` would have given it."""
    os.chmod(path, default_dir_mode())


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str], *, suffix: str = ".tmp", verify: Callable[[Path], None] | None = None
) -> Iterator[BinaryIO]:
    """Write ``path`` through a temporary file in its folder, renamed onto ``path`` when the block succeeds.

    Yields a binary file handle. On an exception inside the block, or from ``verify`` (called with the closed
    temporary file's path just before the rename), the temporary file is removed and ``path`` is left as it was.
    The file gets mode ``0o666 & ~umask``, like a file created by ``open()``.

    Raises:
        OSError: the folder does not exist or is not writable.
    """
    target = Path(path)
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
        if verify is not None:
            verify(temp)
        os.chmod(temp, default_file_mode())
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, with the permissions ``open()`` would give (see :func:`atomic_write`)."""
    with atomic_write(path) as handle:
        handle.write(data)
