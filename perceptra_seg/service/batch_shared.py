"""``server.state = redis``: batch jobs visible to every worker and replica.

A job runs on the worker that accepted it; that worker mirrors the job into Redis as it goes, so that a poll, a
page of results or a cancel answered by any other worker sees the same job, and the per-key quotas
(``server.max_batch_jobs`` unfinished, ``server.max_stored_batch_jobs`` in all) count the jobs of every worker. Keys
(under ``perceptra-seg:``):

* ``batch:<scope>:<job_id>`` — a hash: ``meta`` (``{"job_id", "total", "model_info"}``), ``status``, ``done``,
  ``failed`` and one field per finished image (its slot, JSON). While the job is queued or running the hash lives
  :data:`LEASE_S` seconds and the owning worker renews it (every image, and on a heartbeat); once finished it lives
  ``server.batch_result_ttl_s``. A job whose worker stopped therefore disappears after the lease (404): submit it
  again.
* ``batch-active:<scope>`` — a sorted set of the scope's unfinished job ids scored by their lease's end (epoch
  seconds): the quota counts the members whose lease has not ended.
* ``batch-stored:<scope>`` — a sorted set of every job id of the scope, scored by the end of its record's life
  (the lease while unfinished, ``server.batch_result_ttl_s`` after it finished): the total quota counts the members
  whose life has not ended.
* ``batch-cancel:<scope>:<job_id>`` — set by a worker that deletes a job it does not run (and only when the job
  exists); the owner checks it before each image and stops.

Every call is blocking (run it on a worker thread) and raises :class:`~perceptra_seg.service.redis_link.RedisDown`
when Redis is unavailable: the owner then keeps going on its own (its own polls still answer), the quota is counted
on this worker only, and another worker asked about the job answers 503 ``state_unavailable``.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

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


def _stored(scope: str) -> str:
    return f"{PREFIX}batch-stored:{scope}"


def _cancel(scope: str, job_id: str) -> str:
    return f"{PREFIX}batch-cancel:{scope}:{job_id}"


#: Deletes a job atomically: its record (KEYS[1]) and its quota entries (KEYS[2], KEYS[3]: member ARGV[1]); when
#: ARGV[2] is "1" and the job existed, also sets the cancel key KEYS[4] for ARGV[3] seconds. Returns 1 when the job
#: existed (a record or an unfinished quota entry), else 0 — and then nothing was written.
_DELETE = """
local record = redis.call('DEL', KEYS[1])
local active = redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if record + active == 0 then
  return 0
end
if ARGV[2] == '1' then
  redis.call('SET', KEYS[4], '1', 'EX', tonumber(ARGV[3]))
end
return 1
"""


class SharedBatchRecords:
    """The Redis side of the batch jobs (see the module docstring).

    Args:
        link: the worker's Redis connection (shared with the image ids).
        ttl_s: lifetime of a finished job (``server.batch_result_ttl_s``).
        max_per_scope: unfinished jobs one API key may have on all workers together (``server.max_batch_jobs``).
        max_stored_per_scope: jobs (finished or not) one API key may have on all workers together
            (``server.max_stored_batch_jobs``).
    """

    def __init__(self, link: RedisLink, *, ttl_s: float, max_per_scope: int, max_stored_per_scope: int) -> None:
        self.link = link
        self.ttl_s = ttl_s
        self.max_per_scope = max_per_scope
        self.max_stored_per_scope = max_stored_per_scope
        # the stored set outlives each of its members: a lease or a finished job's TTL, whichever is longer
        self._stored_life = int(max(LEASE_S, ttl_s)) + 1

    def held(self, scope: str) -> tuple[int, int]:
        """``(unfinished, all)`` jobs of ``scope`` on every worker (ended leases and lives dropped first)."""

        def count(client: Any) -> tuple[int, int]:
            now = time.time()
            pipe = client.pipeline(transaction=True)
            pipe.zremrangebyscore(_active(scope), "-inf", now)
            pipe.zremrangebyscore(_stored(scope), "-inf", now)
            pipe.zcard(_active(scope))
            pipe.zcard(_stored(scope))
            replies = pipe.execute()
            return int(replies[2]), int(replies[3])

        return self.link.call(count)

    def claim(
        self, scope: str, job_id: str, total: int, model_info: dict[str, Any]
    ) -> tuple[Literal["active", "stored"], int] | None:
        """Count a new job against both quotas and write its record; ``None`` when it fits, else which quota is
        full (``active``: unfinished jobs, ``stored``: all jobs) and how many jobs it already counts (nothing is
        written then)."""
        meta = json.dumps({"job_id": job_id, "total": total, "model_info": model_info})

        def claim(client: Any) -> tuple[Literal["active", "stored"], int] | None:
            now = time.time()
            pipe = client.pipeline(transaction=True)
            pipe.zremrangebyscore(_active(scope), "-inf", now)
            pipe.zremrangebyscore(_stored(scope), "-inf", now)
            pipe.zadd(_active(scope), {job_id: now + LEASE_S})
            pipe.zadd(_stored(scope), {job_id: now + LEASE_S})
            pipe.zcard(_active(scope))
            pipe.zcard(_stored(scope))
            pipe.expire(_active(scope), int(LEASE_S))
            pipe.expire(_stored(scope), self._stored_life)
            replies = pipe.execute()
            active, stored = int(replies[4]), int(replies[5])
            # added first, then counted: two workers racing never both get in
            if active > self.max_per_scope or stored > self.max_stored_per_scope:
                pipe = client.pipeline(transaction=True)
                pipe.zrem(_active(scope), job_id)
                pipe.zrem(_stored(scope), job_id)
                pipe.execute()
                return ("active", active - 1) if active > self.max_per_scope else ("stored", stored - 1)
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
                pipe.zadd(_stored(scope), {job_id: until}, xx=True)
                pipe.expire(_active(scope), int(LEASE_S))
                pipe.expire(_stored(scope), self._stored_life)
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
        """The job ended: its final status, its record kept ``ttl_s`` (and counted that long in the total quota),
        its unfinished-quota entry removed."""

        def finish(client: Any) -> None:
            if client.exists(_cancel(scope, job_id)):
                return
            life = max(1, int(self.ttl_s))
            pipe = client.pipeline(transaction=True)
            pipe.hset(_record(scope, job_id), "status", status)
            pipe.expire(_record(scope, job_id), life)
            pipe.zrem(_active(scope), job_id)
            pipe.zadd(_stored(scope), {job_id: time.time() + life}, xx=True)
            pipe.expire(_stored(scope), self._stored_life)
            pipe.execute()

        self.link.call(finish)

    def cancelled(self, scope: str, job_id: str) -> bool:
        """Whether another worker deleted the job."""
        return bool(self.link.call(lambda client: client.exists(_cancel(scope, job_id))))

    def delete(self, scope: str, job_id: str, *, notify: bool) -> bool:
        """Delete the job's record and quota entries, atomically; with ``notify`` also tell its owner to stop.
        Whether the job existed (a record or an unfinished quota entry); for a job that exists nowhere nothing is
        written (no cancel key)."""

        def delete(client: Any) -> bool:
            keys = (_record(scope, job_id), _active(scope), _stored(scope), _cancel(scope, job_id))
            flag = "1" if notify else "0"
            return bool(client.eval(_DELETE, len(keys), *keys, job_id, flag, int(LEASE_S) * 2))

        return self.link.call(delete)

    def existing(self, scope: str, job_ids: list[str]) -> list[bool]:
        """Whether each job's record is still in Redis (a finished job another worker deleted is not)."""

        def exists(client: Any) -> list[bool]:
            pipe = client.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.exists(_record(scope, job_id))
            return [bool(found) for found in pipe.execute()]

        return self.link.call(exists)

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
