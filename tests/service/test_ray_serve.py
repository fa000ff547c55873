"""``segmentor-cli serve --engine ray``: the REST app as two Ray Serve replicas on a real local Ray instance (its own
temporary directory, free ports, loopback), sharing image ids and rate limits through a real redis-server; plus the
deployment options the flags and the config give."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from pycocotools import mask as mask_utils

from perceptra_seg.config import ServerConfig
from perceptra_seg.exceptions import ConfigError, ModelLoadError
from perceptra_seg.serving_ray import REPLICA_HEADER, deployment_options

from .helpers import KEY_A, KEY_B, auth, free_port
from .redis_support import RedisProcess

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "perceptra_seg" / "assets" / "sample.png"
KEY_C = "key-c-5555555555"
BOX = [40.0, 30.0, 200.0, 160.0]
RATE = 24


def test_deployment_options_follow_flags_and_config() -> None:
    server = ServerConfig(max_concurrency=2, max_queue=6)
    fixed = deployment_options(server, replicas=3, cpus_per_replica=0.5)
    assert fixed["num_replicas"] == 3 and fixed["ray_actor_options"] == {"num_cpus": 0.5}
    assert fixed["max_ongoing_requests"] == 2 + 6 + 8 and "autoscaling_config" not in fixed
    assert deployment_options(ServerConfig(ray_min_replicas=2))["num_replicas"] == 2
    scaling = ServerConfig(max_concurrency=2, ray_min_replicas=1, ray_max_replicas=4)
    bounds = deployment_options(scaling)["autoscaling_config"]
    assert bounds == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 2}
    assert deployment_options(scaling, replicas=2)["num_replicas"] == 2  # --replicas wins over autoscaling
    per_gpu = deployment_options(server, gpus_per_replica=1, cluster_gpus=4)
    assert per_gpu["num_replicas"] == 4 and per_gpu["ray_actor_options"]["num_gpus"] == 1
    assert deployment_options(server, gpus_per_replica=0.5, cluster_gpus=1)["num_replicas"] == 2
    with pytest.raises(ConfigError, match="fewer than one"):
        deployment_options(server, gpus_per_replica=1, cluster_gpus=0)
    with pytest.raises(ValueError, match="ray_max_replicas"):
        ServerConfig(ray_min_replicas=3, ray_max_replicas=2)


def test_serve_engine_ray_passes_flags_and_config(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray")
    from typer.testing import CliRunner

    from perceptra_seg import serving_ray
    from perceptra_seg.cli import app

    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(serving_ray, "serve_on_ray", lambda config, **kwargs: calls.append((config, kwargs)))
    flags = ["serve", "--engine", "ray", "--replicas", "3", "--gpus-per-replica", "0.5", "--cpus-per-replica", "2"]
    flags += ["--ray-address", "auto", "--port", "9123", "--device", "cpu"]
    assert CliRunner().invoke(app, flags).exit_code == 0
    ((config, kwargs),) = calls
    assert (config.server.port, config.server.host, config.runtime.device) == (9123, "127.0.0.1", "cpu")
    assert {k: kwargs[k] for k in ("address", "replicas", "gpus_per_replica", "cpus_per_replica")} == {
        "address": "auto",
        "replicas": 3,
        "gpus_per_replica": 0.5,
        "cpus_per_replica": 2.0,
    }
    for wrong in (
        ["serve", "--replicas", "2"],
        ["serve", "--ray-address", "auto"],
        ["serve", "--engine", "ray", "--workers", "2"],
    ):
        result = CliRunner().invoke(app, wrong)
        assert result.exit_code == 2 and wrong[-2] in result.output, result.output


def test_replica_health_fails_only_after_a_load_error() -> None:
    from types import SimpleNamespace

    from perceptra_seg.serving_ray import replica_health

    def app(error: BaseException | None) -> Any:
        return SimpleNamespace(state=SimpleNamespace(service=SimpleNamespace(load_error=error)))

    replica_health(app(None))  # loading or ready
    with pytest.raises(RuntimeError, match="failed to load: ModelLoadError: no such checkpoint"):
        replica_health(app(ModelLoadError("no such checkpoint")))


def test_missing_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from perceptra_seg.serving_ray import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"perceptra-seg\[ray\]"):
        import_ray()


def _mask(body: dict[str, Any]) -> np.ndarray:
    rle = body["rle"]
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


@pytest.fixture
def ray_service(redis: RedisProcess, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Any]]:
    """``serve --engine ray --replicas 2`` on a local Ray instance of its own: the base URL once both replicas are
    ready, the process, and the SDK's mask for SAMPLE and BOX. Stopped with SIGTERM (its process group is killed if
    anything is left)."""
    pytest.importorskip("ray")
    pytest.importorskip("redis")
    from perceptra_seg import Segmentor

    config = {
        "model": {"name": "demo"},
        "runtime": {"device": "cpu", "num_threads": 1},
        "server": {"state": "redis", "redis_url": redis.url, "api_keys": [KEY_A, KEY_B, KEY_C]},
        "logging": {"level": "WARNING"},
    }
    config["server"]["rate_limit"] = f"{RATE}/minute"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    ray_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
    env = {
        **os.environ,
        "RAY_TMPDIR": ray_dir,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "perceptra_seg.cli", "serve", "--engine", "ray", "--replicas", "2"]
    command += ["--cpus-per-replica", "0.5", "--host", "127.0.0.1", "--port", str(port), "--config", str(path)]
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        with Segmentor(model="demo", device="cpu") as sdk:  # the reference, while Ray starts
            expected = sdk.segment_from_box(str(SAMPLE), BOX)
        _wait_replicas_ready(base, process, tmp_path / "serve.log")
        yield base, process, expected
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever the command started and left behind
        process.wait(timeout=10)
        log.close()
        shutil.rmtree(ray_dir, ignore_errors=True)


def _wait_replicas_ready(base: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 90.0) -> None:
    """Until readiness checks answered 200 from two different replicas."""
    ready: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while len(ready) < 2:
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError("Ray Serve did not become ready:\n" + log.read_text(errors="replace")[-4000:])
        try:
            answer = httpx.get(base + "/v1/readyz", timeout=5)
            if answer.status_code == 200:
                ready.add(answer.headers[REPLICA_HEADER])
        except httpx.TransportError:
            pass
        time.sleep(0.1)


def test_two_ray_replicas_share_ids_and_rate_limits(ray_service: tuple[str, subprocess.Popen[bytes], Any]) -> None:
    base, process, expected = ray_service
    image = base64.b64encode(SAMPLE.read_bytes()).decode("ascii")
    embedded = httpx.post(base + "/v1/embed", json={"image": image}, headers=auth(KEY_A), timeout=60)
    assert embedded.status_code == 200, embedded.text
    image_id, embedder = embedded.json()["image_id"], embedded.headers[REPLICA_HEADER]
    served: Counter[str] = Counter()
    for _ in range(RATE - 1):  # each on a new connection, routed by Ray Serve to either replica
        answer = httpx.post(
            base + "/v1/segment/box", json={"image_id": image_id, "box": BOX}, headers=auth(KEY_A), timeout=60
        )
        assert answer.status_code == 200, answer.text
        assert np.array_equal(_mask(answer.json()), expected.mask)
        assert answer.json()["score"] == pytest.approx(expected.score, abs=1e-6)
        served[answer.headers[REPLICA_HEADER]] += 1
        if len(served) == 2:
            break
    assert len(served) == 2 and any(name != embedder for name in served), served  # the other replica read Redis
    other = httpx.post(base + "/v1/segment/box", json={"image_id": image_id, "box": BOX}, headers=auth(KEY_B))
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
    # a batch job runs on the replica that took it; polls answered by either replica see it (through Redis)
    submitted = httpx.post(
        base + "/v1/batch", json={"images": [{"image": image, "boxes": [BOX]}] * 2}, headers=auth(KEY_B), timeout=60
    )
    assert submitted.status_code == 202, submitted.text
    for _ in range(RATE - 3):
        time.sleep(0.2)
        polled = httpx.get(base + "/v1/batch/" + submitted.json()["job_id"], headers=auth(KEY_B), timeout=60)
        assert polled.status_code == 200, polled.text
        if polled.json()["status"] == "done":
            break
    assert polled.json()["done"] == 2
    assert all(np.array_equal(_mask(slot["results"][0]), expected.mask) for slot in polled.json()["results"])
    # one budget of RATE requests per minute for KEY_C across both replicas
    counted: Counter[str] = Counter()
    for _ in range(RATE):
        answer = httpx.post(base + "/v1/embed", json={"image": "bm90IGFuIGltYWdl"}, headers=auth(KEY_C), timeout=60)
        assert answer.status_code == 400, answer.text
        counted[answer.headers[REPLICA_HEADER]] += 1
    over = httpx.post(base + "/v1/embed", json={"image": "bm90IGFuIGltYWdl"}, headers=auth(KEY_C), timeout=60)
    assert over.status_code == 429 and over.json()["error"]["code"] == "rate_limited"
    assert len(counted) == 2, counted  # both replicas counted into the one budget
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    with pytest.raises(httpx.TransportError):
        httpx.get(base + "/v1/healthz", timeout=5)
