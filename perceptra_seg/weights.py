"""Find, download, verify and read checkpoints.

``checkpoint_path`` may be, in the order they are tried:

1. a Meta original file (``sam_vit_b_01ec64.pth``, ``sam2.1_hiera_small.pt``): read with
   ``torch.load(weights_only=True)`` and converted by :mod:`perceptra_seg.conversion`;
2. a local directory in transformers format (``config.json`` + ``model.safetensors``);
3. a Hugging Face hub id such as ``facebook/sam2.1-hiera-small`` (``huggingface_hub`` honours ``HF_HOME`` and
   ``HF_HUB_OFFLINE``);
4. ``None``: Meta's file for the configured model is downloaded into the cache directory (streamed to a temporary
   file, checked against the hash prefix in its name when it has one, then atomically renamed). A packaged model
   (the offline ``demo``) resolves to its file in ``perceptra_seg/assets/`` instead; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
import platformdirs

from .exceptions import ModelLoadError
from .registry import ModelSpec

__all__ = [
    "CheckpointSource",
    "default_cache_dir",
    "download_checkpoint",
    "file_fingerprint",
    "packaged_checkpoint",
    "resolve_checkpoint",
]

logger = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class CheckpointSource:
    """Where the weights of one model come from.

    Attributes:
        kind: ``meta`` (Meta's original file), ``transformers`` (local transformers directory) or ``hub`` (hub id).
        location: file or directory path, or hub id.
        fingerprint: short digest identifying the weights (part of every embedding-cache key).
    """

    kind: Literal["meta", "transformers", "hub"]
    location: str
    fingerprint: str


def default_cache_dir() -> Path:
    """The per-user cache directory for downloaded checkpoints (``platformdirs.user_cache_dir``)."""
    return Path(platformdirs.user_cache_dir("perceptra-seg")) / "checkpoints"


def file_fingerprint(path: Path) -> str:
    """A 16-hex-digit digest of a checkpoint file: its size plus sha256 of its first and last 4 MiB.

    Reading the whole of a 2.5 GB file at every start would cost seconds; size plus both ends changes with any
    re-download, truncation or different file, which is what a cache key needs.
    """
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(4 * _CHUNK))
        if size > 8 * _CHUNK:
            handle.seek(size - 4 * _CHUNK)
            digest.update(handle.read())
    return digest.hexdigest()[:16]


def packaged_checkpoint(spec: ModelSpec) -> Path:
    """The checkpoint file shipped inside the package for ``spec`` (``perceptra_seg/assets/<filename>``).

    Raises:
        ModelLoadError: the file is missing from the installation.
    """
    path = Path(str(importlib.resources.files("perceptra_seg").joinpath("assets", spec.filename)))
    if not path.is_file():
        raise ModelLoadError(
            f"the packaged checkpoint {spec.filename} of model {spec.name!r} is missing from {path.parent}; "
            "reinstall perceptra-seg"
        )
    return path


def _offline(requested: bool) -> bool:
    return requested or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_checkpoint(
    spec: ModelSpec,
    checkpoint_path: str | os.PathLike[str] | None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool = False,
    download_base_url: str | None = None,
    timeout_s: float = 60.0,
) -> CheckpointSource:
    """Turn a configured ``checkpoint_path`` into a concrete source, downloading Meta's file if needed.

    Raises:
        ModelLoadError: the path does not exist and is not a hub id; offline without a cached file; a failed
            or corrupted download.
    """
    if checkpoint_path is not None:
        path = Path(checkpoint_path).expanduser()
        if path.is_file():
            return CheckpointSource("meta", str(path), file_fingerprint(path))
        if path.is_dir():
            weights = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin"))
            if not (path / "config.json").is_file() or not weights:
                raise ModelLoadError(f"{path} is a directory but not a transformers model (config.json + weights)")
            return CheckpointSource("transformers", str(path), file_fingerprint(weights[0]))
        text = str(checkpoint_path)
        if _HUB_ID.match(text) and not text.startswith((".", "/", "~")):
            return CheckpointSource("hub", text, hashlib.sha256(text.encode()).hexdigest()[:16])
        raise ModelLoadError(f"checkpoint not found: {text} (not a file, a transformers directory or a hub id)")

    if spec.packaged:
        packaged = packaged_checkpoint(spec)
        return CheckpointSource("meta", str(packaged), file_fingerprint(packaged))
    directory = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    target = directory / spec.filename
    if target.is_file():
        return CheckpointSource("meta", str(target), file_fingerprint(target))
    if _offline(offline):
        raise ModelLoadError(
            f"offline and no cached checkpoint for {spec.name}/{spec.variant}: put {spec.filename} at {target} "
            f"or set model.checkpoint_path (download it from {spec.url})"
        )
    url = f"{download_base_url.rstrip('/')}/{spec.filename}" if download_base_url else spec.url
    download_checkpoint(url, target, sha256_prefix=spec.sha256_prefix, timeout_s=timeout_s)
    return CheckpointSource("meta", str(target), file_fingerprint(target))


def download_checkpoint(url: str, target: Path, *, sha256_prefix: str | None, timeout_s: float) -> Path:
    """Stream ``url`` into ``target`` safely.

    The body goes to a temporary file in ``target``'s directory; its length is checked against Content-Length and
    its sha256 against ``sha256_prefix`` (when given); only then is it renamed onto ``target`` (atomic on POSIX and
    Windows), so a crash or a bad download never leaves a half-written checkpoint under the real name.

    Raises:
        ModelLoadError: HTTP error, network error, short body, or hash mismatch (the temporary file is removed).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    temp = Path(temp_name)
    digest = hashlib.sha256()
    received = 0
    logger.info("downloading %s to %s", url, target)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            httpx.stream("GET", url, timeout=httpx.Timeout(timeout_s), follow_redirects=True) as response,
        ):
            if response.status_code != 200:
                raise ModelLoadError(f"download of {url} failed: HTTP {response.status_code}")
            expected = int(response.headers.get("content-length", "0")) or None
            last_log = time.monotonic()
            for chunk in response.iter_bytes(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                if time.monotonic() - last_log > 5:
                    last_log = time.monotonic()
                    total = f"{expected / 2**20:.0f}" if expected else "?"
                    logger.info("downloaded %.0f / %s MiB of %s", received / 2**20, total, target.name)
        if expected is not None and received != expected:
            raise ModelLoadError(f"download of {url} is truncated: {received} of {expected} bytes")
        actual = digest.hexdigest()
        if sha256_prefix is not None and not actual.startswith(sha256_prefix):
            raise ModelLoadError(
                f"download of {url} is corrupted: sha256 {actual[:12]}… does not start with {sha256_prefix}"
            )
        os.replace(temp, target)
    except httpx.HTTPError as exc:
        raise ModelLoadError(f"download of {url} failed: {exc}") from exc
    finally:
        temp.unlink(missing_ok=True)
    logger.info("downloaded %s (%.1f MiB, sha256 %s)", target.name, received / 2**20, actual[:12])
    return target
