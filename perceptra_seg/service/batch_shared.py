"""``server.state = redis``: batch jobs visible to every worker and replica.

A job runs on the worker that accepted it; that worker mirrors the job into Redis as it goes, so that a poll, a
page of results or a cancel answered by any other worker sees the same job, and the per-key quota
(``server.max_batch_jobs``) counts the jobs of every worker. Keys (under ``perceptra-seg:``):

* ``batch:<scope>:<job_id>`` — a hash: ``meta`` (``{"job_id", "total", "model_info"}``), ``status``, ``done``,
  ``failed`` and one field per finished image (its slot, JSON). While the job is queued or running the hash lives
  :data:`LEASE_S` seconds and the owning worker renews it (every image, and on a heartbeat); once finished it lives
  ``server.batch_result_ttl_s``. A job whose worker stopped therefore disappears after the lease (404): submit it
  again.
* ``batch-active:<scope>`` — a sorted set of the scope's unfinished job ids scored by their lease's end (epoch
  seconds): the quota counts the members whose lease has not ended.
* ``batch-cancel:<scope>:<job_id>`` — set by a worker that deletes a job it does not run; the owner checks it before
  each image and stops.

Every call is blocking (run it on a worker thread) and raises :class:`~perceptra_seg.service.redis_link.RedisDown`
when Redis is unavailable: the owner then keeps going on its own (its own polls still answer), the quota is counted
on this worker only, and another worker asked about the job answers 503 ``state_unavailable``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from .redis_link import RedisLink
from .shared_ids import PREFIX

__all__ = ["LEASE_S", "SharedBatchRecords"]

#: Seconds an unfinished job's record and quota entry live without being renewed by its worker.
LEASE_S = 30.0
_COUNTERS = ("status", "done", "failed")


def _record(scope: str, job_id: str) -> str:
    return f"{PREFIX}batch:{scope}:{job_id}"


def _active(scope: str) -> str:
    return f"{PREFIX}batch-active:{scope}"


def _cancel(scope: str, job_id: str) -> str:
    return f"{PREFIX}batch-cancel:{scope}:{job_id}"


class SharedBatchRecords:
    """The Redis side of the batch jobs (see the module docstring).

    Args:
        link: the worker's Redis connection (shared with the image ids).
        ttl_s: lifetime of a finished job (``server.batch_result_ttl_s``).
        max_per_scope: unfinished jobs one API key may have on all workers together (``server.max_batch_jobs``).
    """

    def __init__(self, link: RedisLink, *, ttl_s: float, max_per_scope: int) -> None:
        self.link = link
        self.ttl_s = ttl_s
        self.max_per_scope = max_per_scope

    def active(self, scope: str) -> int:
        """Unfinished jobs of ``scope`` on every worker (expired leases dropped first)."""

        def count(client: Any) -> int:
            pipe = client.pipeline(transaction=True)
            pipe.zremrangebyscore(_active(scope), "-inf", time.time())
            pipe.zcard(_active(scope))
            return int(pipe.execute()[1])

        return self.link.call(count)

    def claim(self, scope: str, job_id: str, total: int, model_info: dict[str, Any]) -> int | None:
        """Count a new job against the quota and write its record; ``None`` when it fits, else the number of
        unfinished jobs the scope already has (nothing is written then)."""
        meta = json.dumps({"job_id": job_id, "total": total, "model_info": model_info})

        def claim(client: Any) -> int | None:
            now = time.time()
            pipe = client.pipeline(transaction=True)
            pipe.zremrangebyscore(_active(scope), "-inf", now)
            pipe.zadd(_active(scope), {job_id: now + LEASE_S})
            pipe.zcard(_active(scope))
            pipe.expire(_active(scope), int(LEASE_S))
            count = int(pipe.execute()[2])
            if count > self.max_per_scope:  # added first, then counted: two workers racing never both get in
                client.zrem(_active(scope), job_id)
                return count - 1
            pipe = client.pipeline(transaction=True)
            pipe.hset(_record(scope, job_id), mapping={"meta": meta, "status": "queued", "done": 0, "failed": 0})
            pipe.expire(_record(scope, job_id), int(LEASE_S))
            pipe.execute()
            return None

        return self.link.call(claim)

    def renew(self, jobs: list[tuple[str, str]]) -> None:
        """Extend the lease of these ``(scope, job_id)`` unfinished jobs (the owner's heartbeat)."""
        if not jobs:
            return

        def renew(client: Any) -> None:
            until = time.time() + LEASE_S
            pipe = client.pipeline(transaction=False)
            for scope, job_id in jobs:
                pipe.zadd(_active(scope), {job_id: until}, xx=True)
                pipe.expire(_active(scope), int(LEASE_S))
                pipe.expire(_record(scope, job_id), int(LEASE_S))
            pipe.execute()

        self.link.call(renew)

    def update(self, scope: str, job_id: str, status: str, slot: dict[str, Any] | None = None) -> None:
        """Record the job's ``status`` and, when given, one finished image's ``slot`` (renewing the lease)."""

        def update(client: Any) -> None:
            key = _record(scope, job_id)
            if client.exists(_cancel(scope, job_id)):  # deleted meanwhile: do not bring the record back
                return
            pipe = client.pipeline(transaction=True)
            pipe.hset(key, "status", status)
            if slot is not None:
                pipe.hset(key, str(slot["index"]), json.dumps(slot))
                pipe.hincrby(key, slot["status"], 1)
            pipe.expire(key, int(LEASE_S))
            pipe.execute()

        self.link.call(update)

    def finish(self, scope: str, job_id: str, status: str) -> None:
        """The job ended: its final status, its record kept ``ttl_s``, its quota entry removed."""

        def finish(client: Any) -> None:
            if client.exists(_cancel(scope, job_id)):
                return
            pipe = client.pipeline(transaction=True)
            pipe.hset(_record(scope, job_id), "status", status)
            pipe.expire(_record(scope, job_id), max(1, int(self.ttl_s)))
            pipe.zrem(_active(scope), job_id)
            pipe.execute()

        self.link.call(finish)

    def cancelled(self, scope: str, job_id: str) -> bool:
        """Whether another worker deleted the job."""
        return bool(self.link.call(lambda client: client.exists(_cancel(scope, job_id))))

    def delete(self, scope: str, job_id: str, *, notify: bool) -> bool:
        """Delete the job's record and quota entry; with ``notify`` also tell its owner to stop. Whether a record
        existed."""

        def delete(client: Any) -> bool:
            pipe = client.pipeline(transaction=True)
            pipe.delete(_record(scope, job_id))
            pipe.zrem(_active(scope), job_id)
            if notify:
                pipe.set(_cancel(scope, job_id), 1, ex=int(LEASE_S) * 2)
            return bool(pipe.execute()[0])

        return self.link.call(delete)

    def page(self, scope: str, job_id: str, offset: int, limit: int) -> dict[str, Any] | None:
        """The job's summary and slots ``offset`` to ``offset + limit - 1`` as :meth:`BatchJob.page
        <perceptra_seg.service.batch_jobs.BatchJob.page>` gives them, or ``None`` when there is no such job."""

        def read(client: Any) -> list[Any]:
            fields = ["meta", *_COUNTERS, *(str(i) for i in range(offset, offset + limit))]
            return list(client.hmget(_record(scope, job_id), fields))

        values = self.link.call(read)
        if values[0] is None:
            return None
        meta = json.loads(values[0])
        status, done, failed = (v.decode() if isinstance(v, bytes) else str(v) for v in values[1:4])
        total = int(meta["total"])
        end = min(total, offset + limit)
        slots = values[4 : 4 + max(0, end - offset)]
        results = [
            json.loads(raw) if raw is not None else {"index": offset + i, "status": "pending"}
            for i, raw in enumerate(slots)
        ]
        return {
            "job_id": job_id,
            "status": status,
            "total": total,
            "done": int(done),
            "failed": int(failed),
            "pending": total - int(done) - int(failed),
            "model_info": meta["model_info"],
            "offset": offset,
            "limit": limit,
            "next_offset": end if end < total else None,
            "results": results,
        }
