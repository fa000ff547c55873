"""Uploaded videos and their tracking sessions, scoped to the API key that uploaded them, bounded and expiring.

Each entry holds the uploaded file (a temporary file on the server's disk), its metadata and the open
:class:`~perceptra_seg.video.session.VideoSession`. Video ids are random (32 hex digits) and live in the
uploader's scope: another key asking for the same id gets the same 404 as for an id that never existed.

Bounds: at most ``server.max_video_sessions`` videos per API key (the next upload gets 429 ``too_many_videos``
until one is deleted or expires); a video unused for ``server.video_ttl_s`` seconds expires (its session is
closed and its file deleted; expired entries are swept on every video request). One operation runs on a video at
a time: a second one while the first runs gets 409 ``video_busy``.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..exceptions import NotFoundError, SegmentorError
from .scoped_store import Quota, ScopedStore

__all__ = ["StoredVideo", "TooManyVideosError", "VideoBusyError", "VideoInfo", "VideoStore"]

logger = logging.getLogger("perceptra_seg.service.videos")


class VideoBusyError(SegmentorError):
    """Another operation (a prompt, a propagation) is running on this video."""

    http_status = 409
    code = "video_busy"


class TooManyVideosError(SegmentorError):
    """The API key holds ``server.max_video_sessions`` videos already."""

    http_status = 429
    code = "too_many_videos"


@dataclass(frozen=True)
class VideoInfo:
    """What an upload answers: frames, size (pixels) and frame rate (``None`` when the container has none)."""

    num_frames: int
    width: int
    height: int
    fps: float | None


@dataclass(eq=False)
class StoredVideo:
    """One uploaded video: its file, metadata, tracking session (``None`` on a SAM 3 server, which keeps none between
    calls), and the lock one operation holds."""

    video_id: str
    scope: str
    path: Path
    info: VideoInfo
    session: Any
    last_used: float
    lock: threading.Lock = field(default_factory=threading.Lock)

    def close(self) -> None:
        """Close the session (freeing its memory) and delete the file."""
        try:
            if self.session is not None:
                self.session.close()
        except Exception:  # a failing close must not keep the file on disk
            logger.exception("closing a video session failed")
        self.path.unlink(missing_ok=True)


class VideoStore:
    """Thread-safe ``(scope, video_id) → StoredVideo`` map with a per-scope bound and an idle TTL (a
    :class:`~.scoped_store.ScopedStore`; a video busy with an operation is not expired until it is done).

    Args:
        max_per_scope: videos one API key may hold (``server.max_video_sessions``).
        ttl_s: idle time after which a video expires (``server.video_ttl_s``).
        clock: monotonic seconds (tests pass a fake one, or replace :attr:`clock` later).
    """

    def __init__(self, *, max_per_scope: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_per_scope = max_per_scope
        quota = Quota[StoredVideo](max_per_scope, _too_many)
        self._entries = ScopedStore[StoredVideo](
            ttl_s=ttl_s,
            since=lambda entry: entry.last_used,
            quotas=[quota],
            clock=clock,
            reserve=lambda entry: entry.lock.acquire(blocking=False),
            on_expire=_close_reserved,
            on_close=StoredVideo.close,
        )
        self._lock = threading.Lock()
        self._folder: Path | None = None

    @property
    def ttl_s(self) -> float:
        """Idle seconds after which a video expires."""
        return self._entries.ttl_s

    @property
    def clock(self) -> Callable[[], float]:
        """The store's monotonic clock (replaceable: tests expire videos without sleeping)."""
        return self._entries.clock

    @clock.setter
    def clock(self, value: Callable[[], float]) -> None:
        self._entries.clock = value

    def new_file(self) -> Path:
        """A fresh path in the store's temporary folder (made on first use) for an upload."""
        with self._lock:
            if self._folder is None:
                self._folder = Path(tempfile.mkdtemp(prefix="perceptra-seg-videos-"))
            return self._folder / secrets.token_hex(16)

    def check_capacity(self, scope: str) -> None:
        """Raise :class:`TooManyVideosError` (429) when ``scope`` holds its quota of videos (after a sweep)."""
        self._entries.check(scope)

    def add(self, scope: str, path: Path, info: VideoInfo, session: Any) -> StoredVideo:
        """Register an opened video under a new id (the capacity is checked again, under the store's lock).

        Raises:
            TooManyVideosError: ``scope`` holds its quota of videos (429).
        """
        entry = StoredVideo(secrets.token_hex(16), scope, path, info, session, self.clock())
        return self._entries.add(scope, entry.video_id, entry)

    def get(self, scope: str, video_id: str) -> StoredVideo:
        """The video ``video_id`` of ``scope``.

        Raises:
            NotFoundError: unknown, another key's, deleted or expired (404).
        """
        entry = self._entries.get(scope, video_id)
        if entry is None:
            raise NotFoundError(f"video_id {video_id!r} not found (unknown, deleted or expired); upload it again")
        return entry

    def acquire(self, scope: str, video_id: str) -> StoredVideo:
        """:meth:`get` and take its operation lock (release with :meth:`release`).

        Raises:
            NotFoundError: as :meth:`get` (404).
            VideoBusyError: another operation holds it (409).
        """
        entry = self.get(scope, video_id)
        if not entry.lock.acquire(blocking=False):
            raise VideoBusyError(f"video {video_id} is busy with another operation; retry when it is done")
        return entry

    def release(self, entry: StoredVideo) -> None:
        """Give back the lock :meth:`acquire` took; the idle clock restarts now."""
        entry.last_used = self.clock()
        entry.lock.release()

    def remove(self, scope: str, video_id: str) -> None:
        """Delete a video now (session closed, file removed).

        Raises:
            NotFoundError: as :meth:`get` (404).
            VideoBusyError: an operation runs on it (409).
        """
        entry = self.acquire(scope, video_id)
        try:
            self._entries.pop(scope, video_id)
            entry.close()
        finally:
            entry.lock.release()

    def sweep(self) -> int:
        """Close and drop every idle video older than the TTL (busy ones wait for their operation); the count."""
        return self._entries.sweep()

    def __len__(self) -> int:
        return len(self._entries)

    def close_all(self) -> None:
        """Close every session and remove the temporary folder (service shutdown)."""
        self._entries.close_all()
        with self._lock:
            folder, self._folder = self._folder, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def _too_many(held: int) -> TooManyVideosError:
    return TooManyVideosError(
        f"this API key holds {held} videos, the limit (server.max_video_sessions); delete one "
        "(DELETE /v1/videos/{video_id}) or wait until one expires"
    )


def _close_reserved(entry: StoredVideo) -> None:
    """An expired video the sweep reserved (its operation lock taken): close it, then give the lock back."""
    try:
        entry.close()
    finally:
        entry.lock.release()
