"""Find, download, verify and read checkpoints.

``checkpoint_path`` may be, in the order they are tried:

1. a Meta original file (``sam_vit_b_01ec64.pth``, ``sam2.1_hiera_small.pt``): read with
   ``torch.load(weights_only=True)`` and converted by :mod:`perceptra_seg.conversion`;
2. a local directory in transformers format (``config.json`` + ``model.safetensors``);
3. a Hugging Face hub id such as ``facebook/sam2.1-hiera-small`` (``huggingface_hub`` honours ``HF_HOME`` and
   ``HF_HUB_OFFLINE``);
4. ``None``: Meta's file for the configured model is downloaded into the cache directory (streamed to a temporary
   file, checked against Content-Length and against the hash prefix in its name when it has one; a file without a
   hash (SAM 2, SAM-HQ) is checked to be a complete torch checkpoint of the right model family; then atomically renamed,
   with the permissions ``open()`` would give it). A file on the Hugging Face hub (SAM 3's gated ``sam3.pt``) is
   fetched with the access token of ``HF_TOKEN`` (or ``huggingface_hub``'s stored one), sent to huggingface.co only
   (:mod:`perceptra_seg.download_auth`). A cached file is checked the cheap way (zip structure and the
   checkpoint's keys) before use, so a corrupt one fails with a message naming the file to delete. A packaged model
   (the offline ``demo``) resolves to its file in ``perceptra_seg/assets/`` instead; nothing is downloaded.

Download progress goes to the callback installed with :func:`download_progress` (the CLI draws a bar with it).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import importlib.resources
import json
import logging
import os
import re
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import httpx
import platformdirs

from .download_auth import HUB_HOST, auth_hook, hub_token, refused_download_message
from .exceptions import ModelLoadError
from .registry import ModelSpec

if TYPE_CHECKING:
    from .config import ModelConfig
from .utils.atomic import atomic_write

__all__ = [
    "CheckpointSource",
    "ProgressCallback",
    "default_cache_dir",
    "download_checkpoint",
    "download_progress",
    "file_fingerprint",
    "packaged_checkpoint",
    "resolve_checkpoint",
    "transformers_model_dir",
    "verify_checkpoint_file",
]

logger = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_CHUNK = 1024 * 1024

#: ``callback(name, received_bytes, total_bytes_or_None)``, called as a download advances (and once at its end).
ProgressCallback = Callable[[str, int, "int | None"], None]
_PROGRESS: contextvars.ContextVar[ProgressCallback | None] = contextvars.ContextVar("download_progress", default=None)


@contextlib.contextmanager
def download_progress(callback: ProgressCallback) -> Iterator[None]:
    """Report the progress of every checkpoint download started in this context to ``callback``.

    ``callback(name, received, total)`` gets the file name, the bytes received so far and the expected size
    (``None`` when the server sends no Content-Length): once when the response starts, after each chunk, and once
    more when the body is complete.
    """
    token = _PROGRESS.set(callback)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


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


def resolve_configured_checkpoint(spec: ModelSpec, model: ModelConfig) -> CheckpointSource:
    """:func:`resolve_checkpoint` with the ``model`` config section's path, cache, offline, mirror and timeout."""
    return resolve_checkpoint(
        spec,
        model.checkpoint_path,
        cache_dir=model.cache_dir,
        offline=model.offline,
        download_base_url=model.download_base_url,
        timeout_s=model.download_timeout_s,
    )


def resolve_checkpoint(
    spec: ModelSpec,
    checkpoint_path: str | os.PathLike[str] | None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool = False,
    download_base_url: str | None = None,
    timeout_s: float = 60.0,
    force: bool = False,
) -> CheckpointSource:
    """Turn a configured ``checkpoint_path`` into a concrete source, downloading Meta's file if needed.

    ``force`` downloads Meta's file again even when it is cached (only for ``checkpoint_path=None``).

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
    if target.is_file() and not force:
        _check_cached(target, spec)
        return CheckpointSource("meta", str(target), file_fingerprint(target))
    if _offline(offline) and force:
        raise ModelLoadError(f"cannot download {spec.filename} again: offline (model.offline or HF_HUB_OFFLINE)")
    if _offline(offline):
        raise ModelLoadError(
            f"offline and no cached checkpoint for {spec.name}/{spec.variant}: put {spec.filename} at {target} "
            f"or set model.checkpoint_path (download it from {spec.url})"
        )
    url = f"{download_base_url.rstrip('/')}/{spec.filename}" if download_base_url else spec.url
    catalogue_hub = download_base_url is None and httpx.URL(url).host == HUB_HOST  # never to a mirror
    download_checkpoint(
        url,
        target,
        sha256_prefix=spec.sha256_prefix,
        timeout_s=timeout_s,
        family=spec.family,
        architecture=spec.architecture,
        token=hub_token() if catalogue_hub else None,
    )
    return CheckpointSource("meta", str(target), file_fingerprint(target))


def download_checkpoint(
    url: str,
    target: Path,
    *,
    sha256_prefix: str | None,
    timeout_s: float,
    family: str | None = None,
    architecture: str | None = None,
    token: str | None = None,
) -> Path:
    """Stream ``url`` into ``target`` safely.

    ``token`` (a Hugging Face access token) goes as ``Authorization: Bearer`` to ``url``'s own origin (scheme, host,
    port) only; a redirect to another origin (the hub's CDN) is followed without it
    (:func:`~perceptra_seg.download_auth.auth_hook`).

    The body goes to a temporary file in ``target``'s directory; its length is checked against Content-Length and
    its sha256 against ``sha256_prefix`` (when given). Without a hash to check, the file must be a complete torch
    checkpoint (:func:`verify_checkpoint_file`, with every member's CRC; of model ``family`` and ``architecture``
    when given). Only then
    is it renamed onto ``target`` (atomic on POSIX and Windows), so a crash or a bad download never leaves a
    half-written or corrupt checkpoint under the real name. The file gets the permissions ``open()`` would give it
    (``0o666 & ~umask``), so a shared cache stays readable by others.

    Raises:
        ModelLoadError: HTTP error (401 / 403: how to get access to a gated file), network error, short body, hash
            mismatch, or a file that is not a loadable checkpoint (the temporary file is removed; nothing lands in
            the cache).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    received = 0
    progress = _PROGRESS.get()
    logger.info("downloading %s to %s", url, target)

    def usable(temp: Path) -> None:
        problem = verify_checkpoint_file(temp, family=family, full=True, architecture=architecture)
        if problem is not None:
            raise ModelLoadError(f"download of {url} is not a usable checkpoint ({problem}); nothing was cached")

    hooks = {"request": [auth_hook(url, token)]} if token else {}
    try:
        with (
            atomic_write(target, suffix=".part", verify=usable if sha256_prefix is None else None) as out,
            httpx.Client(timeout=httpx.Timeout(timeout_s), follow_redirects=True, event_hooks=hooks) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code in (401, 403):
                raise ModelLoadError(refused_download_message(url, response.status_code, token_sent=bool(token)))
            if response.status_code != 200:
                raise ModelLoadError(f"download of {url} failed: HTTP {response.status_code}")
            expected = int(response.headers.get("content-length", "0")) or None
            if progress is not None:
                progress(target.name, 0, expected)
            last_log = time.monotonic()
            for chunk in response.iter_bytes(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                if progress is not None:
                    progress(target.name, received, expected)
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
    except httpx.HTTPError as exc:
        raise ModelLoadError(f"download of {url} failed: {exc}") from exc
    logger.info("downloaded %s (%.1f MiB, sha256 %s)", target.name, received / 2**20, actual[:12])
    return target


def verify_checkpoint_file(
    path: Path, *, family: str | None = None, full: bool = False, architecture: str | None = None
) -> str | None:
    """Check that ``path`` is a complete torch checkpoint; returns what is wrong, or ``None`` when it is fine.

    Meta's files are torch zip archives. Checked: the zip's central directory (at the end of the file, so a
    truncated file fails here) and its ``data.pkl``; with ``full``, the CRC of every member (reads the whole
    file); when torch is installed, the pickled structure is read (tensors memory-mapped, not read) and must hold a
    SAM state dict of ``family`` (``sam1``/``sam2``) and ``architecture`` (``sam``/``sam_hq``) when given.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            if not any(name.endswith("data.pkl") for name in archive.namelist()):
                return "not a torch checkpoint: no data.pkl in the archive"
            if full:
                broken = archive.testzip()
                if broken is not None:
                    return f"member {broken} fails its CRC check"
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        return f"not a complete torch checkpoint: {exc}"
    try:
        import torch

        from .conversion import detect_architecture, detect_family, unwrap_checkpoint
    except ImportError:
        return None  # the zip checks above are all that can be done without torch
    try:
        state = unwrap_checkpoint(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
        found = detect_family(state)
        network = detect_architecture(state)
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as exc:
        return f"cannot be read as a SAM checkpoint: {' '.join(str(exc).split())}"
    if family is not None and found != family:
        return f"holds a {found.upper()} model, expected {family.upper()}"
    if architecture is not None and network != architecture:
        return f"holds a {_NETWORK_NAMES[network]} model, expected {_NETWORK_NAMES[architecture]}"
    return None


_NETWORK_NAMES = {
    "sam": "plain SAM",
    "sam_hq": "SAM-HQ",
    "mobile_sam": "MobileSAM",
    "edgetam": "EdgeTAM",
    "sam3": "SAM 3",
}


def _check_cached(path: Path, spec: ModelSpec) -> None:
    """Refuse a cached checkpoint that is truncated or corrupt, naming the file to delete (cheap: no CRC pass).

    A file named with a hash prefix (SAM 1) that is not a zip archive is accepted: it was hash-checked when it
    was downloaded and may be in torch's legacy format.
    """
    with path.open("rb") as handle:
        is_zip = handle.read(4) == b"PK\x03\x04"
    if not is_zip and spec.sha256_prefix is not None:
        return
    problem = verify_checkpoint_file(path, family=spec.family, architecture=spec.architecture)
    if problem is not None:
        raise ModelLoadError(
            f"the cached checkpoint {path} is unusable ({problem}): delete that file, or download it again with "
            f"`segmentor-cli download --model {spec.name} --variant {spec.variant} --force`"
        )


def transformers_model_dir(location: str, *, hub: bool) -> tuple[Path, str]:
    """The local folder of a transformers-format model and its ``model_type`` (from its ``config.json``).

    ``location`` is a folder, or with ``hub=True`` a Hugging Face hub id fetched with ``huggingface_hub`` (only the
    ``*.json`` and ``*.safetensors`` files; honours ``HF_HOME`` and ``HF_HUB_OFFLINE``).

    Raises:
        ModelLoadError: the hub fetch failed, or the folder has no readable ``config.json`` with a ``model_type``.
    """
    directory = Path(location)
    if hub:
        from huggingface_hub import snapshot_download

        try:
            directory = Path(snapshot_download(location, allow_patterns=["*.json", "*.safetensors"]))
        except Exception as exc:  # huggingface_hub raises many types (offline, 404, auth, network)
            raise ModelLoadError(f"cannot fetch {location} from the Hugging Face hub: {exc}") from None
    try:
        model_type = json.loads((directory / "config.json").read_text())["model_type"]
    except (OSError, KeyError, ValueError) as exc:
        raise ModelLoadError(f"{directory} has no readable config.json with a model_type: {exc}") from None
    return directory, str(model_type)
