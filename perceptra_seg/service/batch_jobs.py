"""Batch jobs of ``POST /v1/batch``: many images with their prompts, run in the background, results kept a while.

A job is a list of :class:`BatchItem` (one image each, with the ``/v1/segment`` options). It runs on the app's event
loop as one task that hands its images, one at a time, to :meth:`ServiceState.execute
<perceptra_seg.service.state.ServiceState.execute>` — the same inference runner, slots, deadline
(``server.request_timeout_s`` per image), model and serialiser as ``/v1/segment`` — so a job never holds more than
one inference slot and interactive requests keep being answered. At most ``server.batch_workers`` jobs run at once
per worker; the others wait (``queued``). When the runner's queue is full the job waits and tries the same image
again instead of failing it.

An image that fails (undecodable, a prompt outside it, an unknown ``image_id``, a URL that cannot be fetched, its
deadline) is reported in its slot with the error's ``code`` and ``message``; the job goes on. A job ends ``done``
when at least one image succeeded and ``failed`` when every image failed.

Jobs are scoped to the API key that submitted them (another key gets the same 404 as for an id that never existed).
Bounds: ``server.max_batch_jobs`` queued or running jobs per key and ``server.max_stored_batch_jobs`` jobs per key in
all, finished ones included (then 429 ``too_many_batch_jobs``: results are never dropped to make room; deleting a
job frees its place), and a finished job is deleted ``server.batch_result_ttl_s`` after it finished (expired jobs are
swept on every batch request).
With ``server.state = redis`` the worker running a job mirrors it into Redis, so that every worker answers for it and
the quotas count every worker's jobs (:mod:`perceptra_seg.service.batch_shared`). Everything here runs on the event
loop (the store's own lock is never held across an ``await``).
"""

from __future__ import annotations

import asyncio
import contextvars
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ..exceptions import NotFoundError, SegmentorError
from .batch_items import BatchItem, run_item
from .batch_shared import LEASE_S, SharedBatchRecords
from .errors import StateUnavailableError
from .redis_link import RETRY_S, RedisDown
from .scoped_store import Quota, ScopedStore

if TYPE_CHECKING:
    from .state import ServiceState

__all__ = ["BatchItem", "BatchJob", "BatchStore", "JobStatus", "TooManyBatchJobsError"]

JobStatus = Literal["queued", "running", "done", "failed"]
T = TypeVar("T")


class TooManyBatchJobsError(SegmentorError):
    """The API key has ``server.max_batch_jobs`` jobs queued or running, or ``server.max_stored_batch_jobs`` jobs
    in all (finished ones included), already."""

    http_status = 429
    code = "too_many_batch_jobs"


@dataclass(eq=False)
class BatchJob:
    """A submitted job: its items (each dropped once it ran, freeing the image), one slot per image (``None`` while
    pending, else the slot's JSON), its status and timestamps (the store's clock)."""

    job_id: str
    scope: str
    items: list[BatchItem | None]
    model_info: dict[str, Any]
    created: float
    slots: list[dict[str, Any] | None] = field(default_factory=list)
    status: JobStatus = "queued"
    finished: float | None = None
    task: asyncio.Task[None] | None = None
    mirrored: bool = False
    #: the finished job's final record reached Redis (from then on Redis decides whether it still exists)
    finish_mirrored: bool = False

    def __post_init__(self) -> None:
        if not self.slots:
            self.slots = [None] * len(self.items)

    @property
    def total(self) -> int:
        return len(self.slots)

    def count(self, status: str) -> int:
        """Slots whose status is ``status`` (``done`` or ``failed``)."""
        return sum(1 for slot in self.slots if slot is not None and slot["status"] == status)

    def summary(self) -> dict[str, Any]:
        """Status and counts (``pending`` = images not run yet)."""
        done, failed = self.count("done"), self.count("failed")
        return {
            "job_id": self.job_id,
            "status": self.status,
            "total": self.total,
            "done": done,
            "failed": failed,
            "pending": self.total - done - failed,
            "model_info": self.model_info,
        }

    def page(self, offset: int, limit: int) -> dict[str, Any]:
        """:meth:`summary` plus the slots ``offset`` to ``offset + limit - 1`` (a pending one is
        ``{"index", "status": "pending"}``) and ``next_offset`` (``None`` on the last page)."""
        end = min(self.total, offset + limit)
        results = [
            slot if slot is not None else {"index": index, "status": "pending"}
            for index, slot in zip(range(offset, end), self.slots[offset:end], strict=True)
        ]
        return {
            **self.summary(),
            "offset": offset,
            "limit": limit,
            "next_offset": end if end < self.total else None,
            "results": results,
        }


class BatchStore:
    """``(scope, job_id) → BatchJob`` with per-scope bounds on unfinished and on all jobs and a TTL for finished ones
    (a :class:`~.scoped_store.ScopedStore`), mirrored into Redis when ``shared``.

    Args:
        max_per_scope: jobs one API key may have queued or running (``server.max_batch_jobs``).
        max_stored_per_scope: jobs one API key may have in all, finished ones included
            (``server.max_stored_batch_jobs``).
        ttl_s: time a finished job is kept (``server.batch_result_ttl_s``).
        workers: jobs running at the same time (``server.batch_workers``).
        shared: the Redis mirror (``server.state = redis``, :mod:`.batch_shared`), or ``None``.
        clock: monotonic seconds (tests pass a fake one, or replace :attr:`clock` later).
    """

    def __init__(
        self,
        *,
        max_per_scope: int,
        max_stored_per_scope: int,
        ttl_s: float,
        workers: int,
        shared: SharedBatchRecords | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_per_scope = max_per_scope
        self.max_stored_per_scope = max_stored_per_scope
        self.shared = shared
        self._workers = workers
        self._gate: asyncio.Semaphore | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        quotas = [
            Quota[BatchJob](max_per_scope, _too_many_active, lambda job: job.finished is None),
            Quota[BatchJob](max_stored_per_scope, _too_many_stored),
        ]
        self._jobs = ScopedStore[BatchJob](ttl_s=ttl_s, since=lambda job: job.finished, quotas=quotas, clock=clock)

    @property
    def ttl_s(self) -> float:
        """Seconds a finished job is kept."""
        return self._jobs.ttl_s

    @property
    def clock(self) -> Callable[[], float]:
        """The store's monotonic clock (replaceable: tests expire jobs without sleeping)."""
        return self._jobs.clock

    @clock.setter
    def clock(self, value: Callable[[], float]) -> None:
        self._jobs.clock = value

    async def check_capacity(self, scope: str) -> None:
        """Raise :class:`TooManyBatchJobsError` (429) when ``scope`` has its quota of unfinished jobs or of all jobs
        (on every worker when shared; on this one while Redis is unavailable)."""
        await self._forget_deleted(scope)
        self._jobs.check(scope)
        if self.shared is not None:
            held = await self._mirror(self.shared.held, scope)
            if held is not None:
                active, stored = held
                if active >= self.max_per_scope:
                    raise _too_many_active(active)
                if stored >= self.max_stored_per_scope:
                    raise _too_many_stored(stored)

    async def submit(
        self, state: ServiceState, scope: str, items: list[BatchItem], model_info: dict[str, Any]
    ) -> BatchJob:
        """Register a job under a new id and start its task (capacity checked again first, and claimed in Redis).

        Raises:
            TooManyBatchJobsError: a quota of ``scope`` is full (429).
        """
        self._jobs.check(scope)
        job = BatchJob(secrets.token_hex(16), scope, list(items), model_info, self.clock())
        if self.shared is not None:
            try:
                refused = await asyncio.to_thread(self.shared.claim, scope, job.job_id, job.total, model_info)
            except RedisDown:  # the link logged the outage: this job is known to this worker only
                refused = None
            else:
                job.mirrored = True
            if refused is not None:
                kind, held = refused
                raise _too_many_active(held) if kind == "active" else _too_many_stored(held)
            if self._heartbeat is None:
                self._heartbeat = asyncio.create_task(self._renew(), context=contextvars.Context())
        try:
            self._jobs.add(scope, job.job_id, job)  # checked again: another submit may have filled the quota
        except TooManyBatchJobsError:
            if job.mirrored:
                assert self.shared is not None
                await self._mirror(self.shared.delete, scope, job.job_id, notify=False)
            raise
        if self._gate is None:
            self._gate = asyncio.Semaphore(self._workers)
        # A fresh context: the job outlives the submitting request and must not write into its log context.
        job.task = asyncio.create_task(self._run(state, job, self._gate), context=contextvars.Context())
        return job

    async def page(self, scope: str, job_id: str, offset: int, limit: int) -> dict[str, Any]:
        """:meth:`BatchJob.page` of ``scope``'s job ``job_id``, from this worker or (shared) from Redis.

        Raises:
            NotFoundError: unknown, another key's, cancelled or expired (404).
            StateUnavailableError: shared, not on this worker, and Redis is unavailable (503).
        """
        await self._forget_deleted(scope, job_id)
        job = self._jobs.get(scope, job_id)
        if job is not None:
            return job.page(offset, limit)
        if self.shared is not None:
            try:
                found = await asyncio.to_thread(self.shared.page, scope, job_id, offset, limit)
            except RedisDown:
                raise _unavailable(job_id) from None
            if found is not None:
                return found
        raise _not_found(job_id)

    async def remove(self, scope: str, job_id: str) -> None:
        """Cancel the job if it still runs (its current image stops at the model's next check) and delete it; a
        shared job running on another worker is told to stop before its next image.

        Raises:
            NotFoundError: as :meth:`page` (404).
            StateUnavailableError: as :meth:`page` (503).
        """
        self.sweep()
        job = self._jobs.pop(scope, job_id)
        if job is not None:
            await _stop(job)
            if job.mirrored:
                assert self.shared is not None
                await self._mirror(self.shared.delete, scope, job_id, notify=False)
            return
        if self.shared is not None:
            try:
                existed = await asyncio.to_thread(self.shared.delete, scope, job_id, notify=True)
            except RedisDown:
                raise _unavailable(job_id) from None
            if existed:
                return
        raise _not_found(job_id)

    def sweep(self) -> int:
        """Drop every job that finished ``ttl_s`` ago or earlier; the count (Redis expires its copies itself)."""
        return self._jobs.sweep()

    def __len__(self) -> int:
        return len(self._jobs)

    async def close_all(self) -> None:
        """Cancel every running job and forget all jobs (service shutdown); unfinished shared ones leave Redis too."""
        for job in self._jobs.close_all():
            await _stop(job)
            if job.mirrored and job.finished is None:
                assert self.shared is not None
                await self._mirror(self.shared.delete, job.scope, job.job_id, notify=False)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None

    async def _forget_deleted(self, scope: str, job_id: str | None = None) -> None:
        """Drop this worker's copies of ``scope``'s finished shared jobs (or only ``job_id``) whose Redis record is
        gone: another worker deleted them (or Redis expired them), so they no longer answer or count. Nothing is
        dropped while Redis is unavailable."""
        if self.shared is None:
            return
        jobs = [
            job
            for job in self._jobs.values()
            if job.scope == scope and job.finish_mirrored and job_id in (None, job.job_id)
        ]
        if not jobs:
            return
        found = await self._mirror(self.shared.existing, scope, [job.job_id for job in jobs])
        for job, exists in zip(jobs, found or [True] * len(jobs), strict=True):
            if not exists:
                self._jobs.pop(scope, job.job_id)

    async def _mirror(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """``func(*args, **kwargs)`` on a worker thread; ``None`` when Redis is unavailable (already logged)."""
        try:
            return await asyncio.to_thread(func, *args, **kwargs)
        except RedisDown:
            return None

    async def _renew(self) -> None:
        """Keep the Redis leases of this worker's unfinished shared jobs alive (also while they are queued)."""
        assert self.shared is not None
        while True:
            await asyncio.sleep(LEASE_S / 3)
            held = [(job.scope, job.job_id) for job in self._jobs.values() if job.mirrored and job.finished is None]
            await self._mirror(self.shared.renew, held)

    async def _run(self, state: ServiceState, job: BatchJob, gate: asyncio.Semaphore) -> None:
        shared = self.shared if job.mirrored else None
        async with gate:
            job.status = "running"
            if shared is not None:
                await self._mirror(shared.update, job.scope, job.job_id, "running")
            for index, item in enumerate(job.items):
                if shared is not None and await self._mirror(shared.cancelled, job.scope, job.job_id):
                    self._jobs.pop(job.scope, job.job_id)  # deleted on another worker
                    await self._mirror(shared.delete, job.scope, job.job_id, notify=False)
                    return
                assert item is not None
                slot = await run_item(state, job.scope, index, item)
                job.slots[index] = slot
                job.items[index] = None  # the image is not needed any more
                if shared is not None:
                    await self._mirror(shared.update, job.scope, job.job_id, "running", slot)
        job.status = "done" if job.count("done") else "failed"
        job.finished = self.clock()
        if shared is not None:
            try:
                await asyncio.to_thread(shared.finish, job.scope, job.job_id, job.status)
            except RedisDown:  # the results stay on this worker only
                pass
            else:
                job.finish_mirrored = True


def _too_many_active(held: int) -> TooManyBatchJobsError:
    return TooManyBatchJobsError(
        f"this API key has {held} batch jobs queued or running, the limit (server.max_batch_jobs); wait until "
        "one finishes or cancel one (DELETE /v1/batch/{job_id})"
    )


def _too_many_stored(held: int) -> TooManyBatchJobsError:
    return TooManyBatchJobsError(
        f"this API key holds {held} batch jobs, finished ones included, the limit (server.max_stored_batch_jobs); "
        "delete finished jobs (DELETE /v1/batch/{job_id}) or wait until their results expire "
        "(server.batch_result_ttl_s after they finished)"
    )


def _not_found(job_id: str) -> NotFoundError:
    return NotFoundError(f"batch job {job_id!r} not found (unknown, cancelled or expired)")


def _unavailable(job_id: str) -> StateUnavailableError:
    return StateUnavailableError(
        f"batch job {job_id!r} runs on another worker and the shared state (Redis) is unavailable; retry shortly",
        retry_after=int(RETRY_S),
    )


async def _stop(job: BatchJob) -> None:
    if job.task is not None and not job.task.done():
        job.task.cancel()
        await asyncio.gather(job.task, return_exceptions=True)
