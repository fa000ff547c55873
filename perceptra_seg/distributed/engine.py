"""The Ray Data pipeline behind ``segmentor-cli batch --engine ray`` and :func:`run_batch`.

::

    from_items(jobs) ──► map_batches(_decode)          CPU tasks: read (local path / fsspec URL) and decode
                     ──► map_batches(_SegmentActor)    actor pool of ``workers`` model actors (``gpus_per_worker``
                                                       GPUs each), one model load per actor; each block of images
                                                       is segmented and written as one shard
                     ──► iter_rows() on the driver     one small status row per image: progress and the summary

Each model actor reserves ``runtime.num_threads`` CPUs (1 when unset) and Ray gives it that many intra-op threads.
Masks and scores are bit-identical to ``--engine local`` when both run the same number of threads (set
``runtime.num_threads``); with different counts float sums are ordered differently, so scores can differ in their
last bits.

Fault tolerance is Ray Data's own (its defaults for actor pools: unlimited actor restarts and block retries): a
killed actor is restarted and its unfinished block runs again, a block lost with its node is rebuilt from lineage,
and decode tasks are retried. Shards are idempotent (:mod:`.shards`), so a block that ran twice is written once.
Ray 2.6x deprecates the per-operator ``max_restarts`` / ``max_task_retries`` arguments, so they are not bounded
here: a block that kills its actor every time (e.g. out of memory) is retried until the job is interrupted.

Every block of at most ``images_per_shard`` images is one decode task, one actor call and one shard.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from perceptra_seg.config import SegmentorConfig
from perceptra_seg.exceptions import BackendError, ConfigError, InvalidInputError

from .shards import ShardImage, done_ids, write_shard

__all__ = ["BatchSummary", "connect", "run_batch"]

#: CPUs one decode task reserves.
DECODE_CPUS = 0.5
#: Seconds :func:`connect` waits for a ``HOST:PORT`` to accept a TCP connection before calling it unreachable.
CONNECT_TIMEOUT_S = 5.0

ProgressFn = Callable[[int, int], None]


@dataclass
class BatchSummary:
    """What one :func:`run_batch` call did.

    Attributes:
        images: jobs given.
        processed: images segmented and written by this call.
        skipped_existing: images already in a shard of ``out_dir`` (not run again).
        failed: ``{"image": name, "error": message}`` per image that failed (not written; a re-run retries it).
        results_written: result records written by this call.
        shards: file names of the shards this call wrote, sorted.
    """

    images: int
    processed: int = 0
    skipped_existing: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    results_written: int = 0
    shards: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The summary as a JSON-ready dict."""
        return asdict(self)


def run_batch(
    jobs: Sequence[Any],
    settings: SegmentorConfig,
    *,
    address: str | None = None,
    workers: int = 1,
    gpus_per_worker: float = 0.0,
    out_dir: str | Path,
    progress: ProgressFn | None = None,
    images_per_shard: int = 8,
) -> BatchSummary:
    """Segment ``jobs`` on a Ray cluster, writing one JSONL shard per block of images to ``out_dir``.

    Args:
        jobs: :class:`~perceptra_seg.cli.batch_plan.ImageJob` items (from
            :func:`~perceptra_seg.distributed.plan_batch`): ``path`` a local path or fsspec URL every worker can
            read, prompts with boxes XYXY in pixels (or ``auto``: generator options, automatic masks; or
            ``concepts``: SAM 3 phrases, every instance of each).
        settings: the model configuration every actor loads (checkpoint paths must exist on every node).
        address: ``None`` is Ray's own default (``RAY_ADDRESS``, else a cluster started on this machine with
            ``ray start``, else a new local instance that ends with the call); ``"auto"`` joins the cluster this
            machine belongs to; ``"HOST:PORT"`` (or ``ray://HOST:PORT``) joins that cluster. When this process is
            already connected to Ray (``ray.is_initialized()``), that connection is used and ``address`` ignored.
        workers: model actors (each loads the model once).
        gpus_per_worker: GPUs each actor reserves (``0``: CPU only; fractions share a GPU).
        out_dir: folder (local path or fsspec URL) of the shards; images already in a shard there are skipped.
        progress: called on the driver as ``progress(done, total)`` after each image of this call finishes.
        images_per_shard: images per block, hence per shard and per model call batch.

    Returns:
        The :class:`BatchSummary`. Merge the shards with :func:`~perceptra_seg.distributed.write_merged`.

    Raises:
        InvalidInputError: ``workers`` / ``images_per_shard`` below 1, ``gpus_per_worker`` negative, or an
            unreadable ``out_dir``.
        ConfigError: Ray is not installed, the cluster cannot be reached, or it has too few CPUs / GPUs for the
            actors plus the decode tasks (checked before anything starts; Ray would wait for them forever).
        BackendError: the Ray job failed (e.g. the model actors cannot load the model); shards written so far
            stay, and a re-run resumes from them.
    """
    if workers < 1 or images_per_shard < 1:
        raise InvalidInputError("workers and images per shard must be at least 1")
    if gpus_per_worker < 0:
        raise InvalidInputError("gpus per worker must be 0 or more")
    finished = done_ids(out_dir)
    todo = [job for job in jobs if int(job.image_id) not in finished]
    summary = BatchSummary(images=len(jobs), skipped_existing=len(jobs) - len(todo))
    if not todo:
        return summary
    ray = _import_ray()
    with connect(address), _quiet("ray.data"):
        _check_resources(ray, settings, workers, gpus_per_worker)
        dataset = _pipeline(ray, todo, settings, str(out_dir), workers, gpus_per_worker, images_per_shard)
        try:
            _collect(dataset, summary, len(todo), progress)
        except ray.exceptions.RayError as exc:  # e.g. a model actor that cannot load the model
            raise BackendError(f"the Ray job failed: {_reason(exc)}") from exc
    return summary


def _collect(dataset: Any, summary: BatchSummary, total: int, progress: ProgressFn | None) -> None:
    """Consume the status rows of ``dataset`` into ``summary`` (each image once), reporting progress."""
    seen: set[int] = set()
    shards: set[str] = set()
    for row in dataset.iter_rows():
        image_id = int(row["image_id"])
        if image_id in seen:
            continue
        seen.add(image_id)
        if row["error"]:
            summary.failed.append({"image": str(row["name"]), "error": str(row["error"])})
        else:
            summary.processed += 1
            summary.results_written += int(row["results"])
            shards.add(str(row["shard"]))
        if progress is not None:
            progress(len(seen), total)
    summary.shards = sorted(shards)


def _reason(exc: BaseException) -> str:
    """The last ``Type: message`` line of a Ray error's remote traceback (the original exception), else its first
    line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    causes = [line for line in lines if not line.startswith(("File ", "^", "~")) and ": " in line]
    return causes[-1] if causes else _first_line(exc)


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Silence logger ``name`` (but for CRITICAL) while the block runs: Ray Data's per-dataset INFO lines and its
    note that its progress bars are off would bury the caller's own progress, and a failed job's full stack trace,
    which it logs before raising, would bury the one-line error :func:`run_batch` raises."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _check_resources(ray: Any, settings: SegmentorConfig, workers: int, gpus_per_worker: float) -> None:
    """Refuse a job the cluster cannot run: actors that take every CPU leave none for the decode tasks, and actors
    that ask for more GPUs than exist never start; either way Ray would wait forever.

    Raises:
        ConfigError: too few CPUs or GPUs in the cluster (as it is now: start autoscaled nodes first).
    """
    available = ray.cluster_resources()
    actor_cpus = settings.runtime.num_threads or 1
    cpus_needed = workers * actor_cpus + DECODE_CPUS
    if available.get("CPU", 0.0) < cpus_needed:
        raise ConfigError(
            f"the Ray cluster has {available.get('CPU', 0.0):g} CPUs; {workers} model actor(s) × {actor_cpus} CPU "
            f"(runtime.num_threads, 1 when unset) plus {DECODE_CPUS:g} for the decode tasks need {cpus_needed:g}: "
            "lower --workers or runtime.num_threads, or add nodes"
        )
    gpus_needed = workers * gpus_per_worker
    if gpus_needed and available.get("GPU", 0.0) < gpus_needed:
        raise ConfigError(
            f"the Ray cluster has {available.get('GPU', 0.0):g} GPUs; {workers} model actor(s) × {gpus_per_worker:g} "
            f"GPU need {gpus_needed:g}: lower --workers or --gpus-per-worker, or add GPU nodes"
        )


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        from perceptra_seg.extras import missing_extra

        raise missing_extra("ray", exc) from exc
    return ray


@contextlib.contextmanager
def connect(address: str | None) -> Iterator[None]:
    """Connect this process to Ray for the block's duration (see :func:`run_batch` for ``address``).

    An existing connection is used as it is and left open; a connection made here is closed afterwards.

    Raises:
        ConfigError: Ray is not installed, ``HOST:PORT`` does not accept connections, or Ray refuses to connect.
    """
    ray = _import_ray()
    if ray.is_initialized():
        yield
        return
    if address not in (None, "auto") and not address.startswith("ray://"):
        _check_reachable(address)
    try:
        if address is None:
            ray.init(include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        else:
            ray.init(address=address, log_to_driver=False, logging_level="WARNING")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot connect to a Ray cluster at {address!r}: {_first_line(exc)}") from None
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False  # the caller shows its own progress
        yield
    finally:
        ray.shutdown()


def _check_reachable(address: str) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--ray-address must be 'auto' or HOST:PORT (or ray://HOST:PORT), got {address!r}")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise ConfigError(
            f"cannot reach a Ray cluster at {address}: {exc} (start one with `ray start --head`, or give the "
            "address `ray start` printed)"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _pipeline(
    ray: Any,
    jobs: Sequence[Any],
    settings: SegmentorConfig,
    out_dir: str,
    workers: int,
    gpus_per_worker: float,
    images_per_shard: int,
) -> Any:
    rows = [
        {
            "image_id": int(job.image_id),
            "name": job.name,
            "location": str(job.path),
            "job": json.dumps(
                {
                    "prompts": job.prompts,
                    "categories": job.categories,
                    "annotation_ids": job.annotation_ids,
                    "auto": job.auto,
                    "concepts": job.concepts,
                }
            ),
        }
        for job in jobs
    ]
    blocks = math.ceil(len(rows) / images_per_shard)
    dataset = ray.data.from_items(rows, override_num_blocks=blocks)
    # batch_size=None: each block is one batch (one decode task, one actor call, one shard), never bundled.
    # A decode task reserves half a CPU (reading and decoding is short and partly I/O wait); as a reservation that
    # differs from the actors', it also keeps Ray Data from fusing decoding into the actors, where the model would
    # wait for every decode.
    dataset = dataset.map_batches(
        _decode, fn_kwargs={"settings": settings}, batch_size=None, batch_format="numpy", num_cpus=DECODE_CPUS
    )
    return dataset.map_batches(
        _SegmentActor,
        fn_constructor_kwargs={"settings": settings, "out_dir": out_dir},
        batch_size=None,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=settings.runtime.num_threads or 1,
        num_gpus=gpus_per_worker,
    )


def _decode(batch: dict[str, np.ndarray], settings: SegmentorConfig) -> dict[str, np.ndarray]:
    """CPU task: read and decode every image of ``batch`` (adds ``image``: RGB uint8 ``[H, W, 3]``, and ``error``:
    ``""`` or why the image could not be read; a failed image gets an empty ``[0, 0, 3]`` array)."""
    from perceptra_seg.exceptions import SegmentorError
    from perceptra_seg.inputs import InputPolicy

    from .sources import load_location

    policy = InputPolicy.from_config(settings.input, allow_urls=False)
    images: list[np.ndarray] = []
    errors: list[str] = []
    for location in batch["location"]:
        try:
            images.append(load_location(str(location), policy))
            errors.append("")
        except SegmentorError as exc:
            images.append(np.zeros((0, 0, 3), dtype=np.uint8))
            errors.append(_first_line(exc))
    out = dict(batch)
    out["image"] = _object_array(images)
    out["error"] = np.asarray(errors, dtype=object)
    return out


def _object_array(items: list[np.ndarray]) -> np.ndarray:
    """A 1-D object array holding ``items`` as they are (numpy would otherwise stack equal shapes)."""
    array = np.empty(len(items), dtype=object)
    for index, item in enumerate(items):
        array[index] = item
    return array


class _SegmentActor:
    """A model actor: loads the model once, then segments blocks of decoded images and writes each as a shard."""

    def __init__(self, settings: SegmentorConfig, out_dir: str) -> None:
        from perceptra_seg.core import Segmentor

        self._segmentor = Segmentor(settings)
        self._chunk = settings.input.max_prompts
        self._out_dir = out_dir

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Segment ``batch`` (``image_id``, ``name``, ``job``, ``image``, ``error`` columns); returns one status row
        per image: ``image_id``, ``name``, ``error`` (``""`` when written), ``results`` (records written) and
        ``shard`` (file name, ``""`` for a failed image)."""
        from perceptra_seg.cli.batch import ImageJob, run_job
        from perceptra_seg.cli.batch_output import coco_records

        written: list[ShardImage] = []
        errors: list[str] = []
        counts: list[int] = []
        for image_id, name, spec, image, error in zip(
            batch["image_id"], batch["name"], batch["job"], batch["image"], batch["error"], strict=True
        ):
            if error:
                errors.append(str(error))
                counts.append(0)
                continue
            job = ImageJob("", str(name), int(image_id), **json.loads(str(spec)))
            try:
                results, categories, annotation_ids = run_job(self._segmentor, np.asarray(image), job, self._chunk)
                records = coco_records(int(image_id), results, categories, annotation_ids)
            except Exception as exc:  # one failed image is reported, the block goes on
                errors.append(_first_line(exc))
                counts.append(0)
                continue
            written.append(ShardImage(int(image_id), str(name), records))
            errors.append("")
            counts.append(len(records))
        shard = write_shard(self._out_dir, written) if written else ""
        return {
            "image_id": np.asarray(batch["image_id"], dtype=np.int64),
            "name": np.asarray([str(n) for n in batch["name"]], dtype=object),
            "error": np.asarray(errors, dtype=object),
            "results": np.asarray(counts, dtype=np.int64),
            "shard": np.asarray([shard if not e else "" for e in errors], dtype=object),
        }
