"""The Ray engine's output: JSONL shards, one per block of images, and their merge into one COCO results list.

A shard is ``<out_dir>/part-<digest>.jsonl`` where ``<digest>`` is the first 20 hex digits of the SHA-256 of the
block's sorted image ids, so writing the same block again (a retried task) produces the same file. Each line is one
image::

    {"image_id": 42, "name": "sub/a.jpg", "results": [<COCO result record>, ...]}

with the records :func:`perceptra_seg.cli.batch_output.coco_records` builds (``segmentation`` a compressed RLE,
``annotation_id`` the source annotation). Shards are written atomically (temporary file + rename on a local
folder; one ``put`` on an object store), so a shard is either whole or absent, and only images that succeeded are
written: a re-run skips exactly the images found in shards and retries the failed ones.

``out_dir`` is a local folder or an fsspec URL; on a multi-node cluster it must be storage every node can write.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perceptra_seg.exceptions import InvalidInputError

from .sources import filesystem, is_url

__all__ = ["ShardImage", "done_ids", "merge_results", "read_shards", "shard_name", "write_merged", "write_shard"]

_PREFIX = "part-"
_SUFFIX = ".jsonl"


@dataclass(frozen=True)
class ShardImage:
    """One image line of a shard.

    Attributes:
        image_id: COCO image id.
        name: the image's name as planned (relative path, POSIX separators).
        records: its COCO result records, in prompt order.
    """

    image_id: int
    name: str
    records: list[dict[str, Any]]


def shard_name(image_ids: Iterable[int]) -> str:
    """``part-<20 hex digits>.jsonl``: the same for the same set of image ids, whatever their order."""
    key = ",".join(str(i) for i in sorted(int(i) for i in image_ids))
    return f"{_PREFIX}{hashlib.sha256(key.encode('ascii')).hexdigest()[:20]}{_SUFFIX}"


def _fs(out_dir: str | Path) -> tuple[Any, str, bool]:
    """``(filesystem, root, is_local)`` of ``out_dir``; a plain path is a local folder."""
    fs, root = filesystem(str(out_dir) if is_url(str(out_dir)) else Path(out_dir).expanduser().resolve().as_uri())
    from fsspec.implementations.local import LocalFileSystem

    return fs, root.rstrip("/"), isinstance(fs, LocalFileSystem)


def write_shard(out_dir: str | Path, images: Sequence[ShardImage]) -> str:
    """Write ``images`` as one shard of ``out_dir`` (created when missing) and return the shard's file name.

    Raises:
        InvalidInputError: ``images`` is empty.
    """
    if not images:
        raise InvalidInputError("a shard holds at least one image")
    name = shard_name(image.image_id for image in images)
    body = "".join(
        json.dumps({"image_id": image.image_id, "name": image.name, "results": image.records}) + "\n"
        for image in images
    ).encode("utf-8")
    fs, root, local = _fs(out_dir)
    fs.makedirs(root, exist_ok=True)
    if local:
        from perceptra_seg.utils.atomic import write_bytes_atomic

        write_bytes_atomic(Path(root) / name, body)
    else:  # an object store's put is atomic: the object appears whole or not at all
        fs.pipe_file(f"{root}/{name}", body)
    return name


def read_shards(out_dir: str | Path) -> list[ShardImage]:
    """Every image line of every shard in ``out_dir`` (shards in file-name order; ``[]`` when there is none).

    Raises:
        InvalidInputError: a shard that is not this engine's JSONL.
    """
    fs, root, _ = _fs(out_dir)
    if not fs.exists(root):
        return []
    names = sorted(
        path.rsplit("/", 1)[-1]
        for path in fs.ls(root, detail=False)
        if path.rsplit("/", 1)[-1].startswith(_PREFIX) and path.endswith(_SUFFIX)
    )
    images: list[ShardImage] = []
    for name in names:
        text = fs.cat_file(f"{root}/{name}").decode("utf-8")
        for number, line in enumerate(text.splitlines(), start=1):
            try:
                item = json.loads(line)
                images.append(ShardImage(int(item["image_id"]), str(item["name"]), list(item["results"])))
            except (ValueError, KeyError, TypeError):
                raise InvalidInputError(
                    f"{out_dir}/{name} line {number} is not a batch shard line; choose another output folder"
                ) from None
    return images


def done_ids(out_dir: str | Path) -> set[int]:
    """Image ids already written to a shard of ``out_dir``."""
    return {image.image_id for image in read_shards(out_dir)}


def merge_results(out_dir: str | Path, jobs: Sequence[Any]) -> list[dict[str, Any]]:
    """The COCO results list of every shard in ``out_dir``, each image once.

    Images come in the order of ``jobs`` (the planned :class:`~perceptra_seg.cli.batch_plan.ImageJob` list, so a
    fresh run gives the order ``--engine local`` writes); images of the shards that ``jobs`` does not list follow,
    by name. An image found in more than one shard (possible only if blocks were re-cut between runs) is taken from
    the first shard in file-name order; its lines are identical anyway.
    """
    by_id: dict[int, ShardImage] = {}
    for image in read_shards(out_dir):
        by_id.setdefault(image.image_id, image)
    records: list[dict[str, Any]] = []
    for job in jobs:
        found = by_id.pop(int(job.image_id), None)
        if found is not None:
            records.extend(found.records)
    for image in sorted(by_id.values(), key=lambda item: (item.name, item.image_id)):
        records.extend(image.records)
    return records


def write_merged(out_dir: str | Path, jobs: Sequence[Any], out: Path) -> int:
    """Write :func:`merge_results` to ``out`` as ``--engine local`` formats it (atomically); returns the number
    of records."""
    from perceptra_seg.cli.common import write_atomic

    records = merge_results(out_dir, jobs)
    body = "[\n" + ",\n".join(json.dumps(item) for item in records) + "\n]\n" if records else "[]\n"
    write_atomic(out, body)
    return len(records)
