"""Bounds of the batch store: ``server.max_stored_batch_jobs`` (finished jobs count too, until deleted or expired),
in memory and across workers through a real redis-server, and a DELETE of an unknown id that writes nothing."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from perceptra_seg.exceptions import ConfigError
from perceptra_seg.service import create_app

from .helpers import KEY_A, KEY_B, FakeBackend, auth, b64_png, build_config, running, wait_batch_finished

ONE = {"images": [{"image": b64_png(), "boxes": [[4, 4, 40, 30]]}]}


def _submit_and_finish(client: Any) -> str:
    answer = client.post("/v1/batch", json=ONE)
    assert answer.status_code == 202, answer.text
    job_id = str(answer.json()["job_id"])
    assert wait_batch_finished(client, job_id)["done"] == 1
    return job_id


def _refused_as_stored(answer: Any) -> None:
    assert answer.status_code == 429, answer.text
    error = answer.json()["error"]
    assert error["code"] == "too_many_batch_jobs"
    assert "max_stored_batch_jobs" in error["message"] and "batch_result_ttl_s" in error["message"]


def test_finished_jobs_count_until_deleted_or_expired() -> None:
    server = {"api_keys": [KEY_A, KEY_B], "max_batch_jobs": 1, "max_stored_batch_jobs": 2, "batch_result_ttl_s": 50}
    app = create_app(build_config(server=server), backend=FakeBackend())
    with running(app, headers=auth(KEY_A)) as client:
        first, second = _submit_and_finish(client), _submit_and_finish(client)
        _refused_as_stored(client.post("/v1/batch", json=ONE))
        # nothing was dropped to make room: both results are still there
        assert [client.get(f"/v1/batch/{job}").json()["done"] for job in (first, second)] == [1, 1]
        assert client.post("/v1/batch", json=ONE, headers=auth(KEY_B)).status_code == 202  # per key
        assert client.delete(f"/v1/batch/{first}").status_code == 204  # a deleted job frees its place
        third = _submit_and_finish(client)
        _refused_as_stored(client.post("/v1/batch", json=ONE))
        store = app.state.service.batches
        now = store.clock()
        store.clock = lambda: now + 50.0  # second and third expire: their places free
        assert client.get(f"/v1/batch/{third}").status_code == 404
        _submit_and_finish(client)


def test_the_stored_bound_is_validated() -> None:
    with pytest.raises(ConfigError, match="max_stored_batch_jobs"):
        build_config(server={"max_batch_jobs": 4, "max_stored_batch_jobs": 3})
    with pytest.raises(ConfigError, match="max_stored_batch_jobs"):
        build_config(server={"max_stored_batch_jobs": 0})
    server = build_config().server
    assert server.max_stored_batch_jobs == 16 and server.max_stored_batch_jobs >= server.max_batch_jobs


def test_redis_counts_stored_jobs_of_every_worker_and_unknown_deletes_write_nothing(redis: Any) -> None:
    redis_py = pytest.importorskip("redis")
    key = f"key-bounds-{secrets.token_hex(8)}"  # a scope of its own: the session's redis-server is shared by tests
    server = {
        "api_keys": [key],
        "state": "redis",
        "redis_url": redis.url,
        "max_batch_jobs": 1,
        "max_stored_batch_jobs": 2,
    }
    with (
        running(create_app(build_config(server=server), backend=FakeBackend()), headers=auth(key)) as a,
        running(create_app(build_config(server=server), backend=FakeBackend()), headers=auth(key)) as b,
        redis_py.Redis.from_url(redis.url) as raw,
    ):
        first, second = _submit_and_finish(a), _submit_and_finish(a)
        _refused_as_stored(b.post("/v1/batch", json=ONE))  # b counts a's finished jobs
        before = set(raw.keys("*"))
        unknown = "0" * 32
        assert b.delete(f"/v1/batch/{unknown}").status_code == 404
        assert a.delete(f"/v1/batch/{unknown}").status_code == 404
        assert set(raw.keys("*")) - before == set()  # no cancel key, nothing else
        assert not raw.keys(f"*{unknown}*")
        assert b.delete(f"/v1/batch/{first}").status_code == 204  # a's finished job, deleted from b
        assert a.get(f"/v1/batch/{first}").status_code == 404  # a forgot its own copy
        assert b.get(f"/v1/batch/{second}").status_code == 200
        third = _submit_and_finish(a)  # the place the deleted job held is free on every worker
        _refused_as_stored(a.post("/v1/batch", json=ONE))
        _refused_as_stored(b.post("/v1/batch", json=ONE))
        assert a.delete(f"/v1/batch/{third}").status_code == 204
        _submit_and_finish(b)
