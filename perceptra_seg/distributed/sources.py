"""Where the Ray engine's images come from: local paths or fsspec URLs, listed on the driver, read in CPU tasks.

A location containing ``://`` is an fsspec URL (``file:///data/images``, ``s3://bucket/images``,
``gs://bucket/images``); anything else is a local directory or list file, exactly as ``--engine local`` reads it.
Remote protocols need their fsspec implementation installed (``s3fs``, ``gcsfs``); a missing one is a
:class:`~perceptra_seg.exceptions.ConfigError` naming the package.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from perceptra_seg.exceptions import ConfigError, InvalidInputError
from perceptra_seg.inputs import InputPolicy
from perceptra_seg.utils.image_decode import decode_stream

__all__ = ["filesystem", "is_url", "list_url_images", "load_location", "plan_batch"]


def is_url(location: str | Path) -> bool:
    """Whether ``location`` is an fsspec URL (``protocol://...``) rather than a local path."""
    return isinstance(location, str) and "://" in location


def filesystem(url: str) -> tuple[Any, str]:
    """``(fsspec filesystem, path inside it)`` of ``url``.

    Raises:
        ConfigError: fsspec, or the protocol's implementation (e.g. ``s3fs`` for ``s3://``), is not installed, or
            the protocol is unknown.
    """
    try:
        import fsspec
    except ImportError as exc:
        from perceptra_seg.extras import missing_extra

        raise missing_extra("ray", exc) from exc
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:
        raise ConfigError(f"{url}: this protocol needs an fsspec package that is not installed ({exc})") from None
    except ValueError as exc:
        raise ConfigError(f"{url}: unknown fsspec protocol ({exc})") from None


def list_url_images(url: str) -> list[tuple[str, str]]:
    """``(name, url)`` of every image under the fsspec folder ``url`` (recursive), sorted by name.

    ``name`` is the path relative to ``url`` with POSIX separators, as ``--engine local`` names the files of a
    local folder, so the same prompts match.

    Raises:
        InvalidInputError: ``url`` is not a folder holding at least one entry.
    """
    from perceptra_seg.cli.batch_plan import IMAGE_SUFFIXES

    fs, root = filesystem(url)
    root = root.rstrip("/")
    try:
        if not fs.isdir(root):
            raise InvalidInputError(f"--images {url} is not a folder")
        found = fs.find(root)
    except OSError as exc:
        raise InvalidInputError(f"cannot list --images {url}: {exc}") from None
    items = []
    for path in found:
        relative = PurePosixPath(path).relative_to(PurePosixPath(root))
        if relative.suffix.lower() in IMAGE_SUFFIXES:
            items.append((relative.as_posix(), fs.unstrip_protocol(path)))
    return sorted(items)


def plan_batch(
    images: str | Path,
    prompts: Path | None,
    *,
    auto: dict[str, Any] | None = None,
    concepts: dict[str, Any] | None = None,
) -> tuple[list[Any], list[str], list[str]]:
    """:func:`perceptra_seg.cli.batch_plan.plan_jobs` for a local location or an fsspec URL (``prompts`` ``None`` and
    ``auto`` the generator options: every image is a job of automatic masks; or ``concepts``
    ``{"texts": [...], "threshold": T or None}``: every instance of each phrase).

    Returns:
        ``(jobs, images_without_prompts, entries_without_image)``; jobs are
        :class:`~perceptra_seg.cli.batch_plan.ImageJob` in image-name order (``path`` is the URL string for a URL).
    """
    from perceptra_seg.cli.batch_plan import plan_jobs

    if is_url(images):
        return plan_jobs(str(images), prompts, lister=list_url_images, auto=auto, concepts=concepts)
    return plan_jobs(Path(images), prompts, auto=auto, concepts=concepts)


def load_location(location: str, policy: InputPolicy) -> np.ndarray:
    """Decode the image at ``location`` (local path or fsspec URL) under ``policy``'s pixel / decode limits.

    A local path goes through :meth:`InputPolicy.load` exactly as ``--engine local`` reads it; a URL is streamed
    through the same decoder.

    Returns:
        RGB ``uint8`` ``[H, W, 3]`` (rows ``y``, columns ``x``).

    Raises:
        InvalidInputError: unreadable or undecodable image; ImageTooLargeError over a limit.
    """
    if not is_url(location):
        return policy.load(Path(location))
    fs, path = filesystem(location)
    try:
        with fs.open(path, "rb") as fp:
            return decode_stream(fp, max_pixels=policy.max_pixels, max_decode_bytes=policy.max_decode_bytes)
    except (OSError, FileNotFoundError) as exc:
        raise InvalidInputError(f"cannot read image {location}: {exc}") from None
