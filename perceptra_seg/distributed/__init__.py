"""Dataset-scale batch jobs on Ray Data (needs the ``ray`` extra: ``ray[data,serve]`` and fsspec).

The same job as ``segmentor-cli batch`` (:mod:`perceptra_seg.cli.batch`), spread over a Ray cluster:

* :func:`plan_batch` matches images (a local folder / list file, or any fsspec URL such as ``file://``, ``s3://``,
  ``gs://``) with the prompts of a COCO annotations file or a prompts mapping — the local batch's own planning;
* :func:`run_batch` streams the images through Ray Data: CPU tasks read and decode each image, a pool of model
  actors (each loads the model once) segments them, and every block of images is written as one JSONL shard of
  ``out_dir`` (atomically; the shard's name derives from its image ids, so a retried block rewrites the same file);
* :func:`merge_results` / :func:`write_merged` turn the shards into one COCO results list, in the order of the
  planned jobs: byte for byte the file ``--engine local`` writes for the same input.

A re-run with the same ``out_dir`` skips every image already in a shard. An actor (or a node) that dies mid-job is
restarted by Ray and its unfinished blocks are retried; shards are idempotent and the merge keeps each image once.

Nothing here imports Ray until :func:`run_batch` is called.
"""

from __future__ import annotations

from .engine import BatchSummary, run_batch
from .shards import merge_results, read_shards, write_merged
from .sources import plan_batch

__all__ = ["BatchSummary", "merge_results", "plan_batch", "read_shards", "run_batch", "write_merged"]
