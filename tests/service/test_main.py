"""Entry points: the lazily created ``app`` (env/YAML config), the repository-root alias, uvicorn settings."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from perceptra_seg.service import main

from .helpers import KEY_A, auth, b64_png, free_port, running

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def config_file(tmp_path: Path, small_sam1_config: dict[str, Any]) -> Path:
    sections = {**small_sam1_config, "server": {"api_keys": [KEY_A]}, "logging": {"level": "WARNING"}}
    path = tmp_path / "segmentor.yaml"
    path.write_text(yaml.safe_dump(sections))
    return path


def test_app_is_created_on_first_access_from_the_environment(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEGMENTOR_CONFIG", str(config_file))
    monkeypatch.setenv("SEGMENTOR_SERVER_RATE_LIMIT", "100/minute")
    monkeypatch.setattr(main, "_app", None)
    app = main.app
    assert main.app is app  # created once
    state = app.state.service
    assert state.service is None  # no model at import or creation time
    assert state.config.server.rate_limit == "100/minute"  # environment over YAML
    with running(app) as client:
        assert client.post("/v1/segment/box", json={"image": b64_png(), "box": [1, 1, 30, 30]}).status_code == 401
        ok = client.post("/v1/segment/box", json={"image": b64_png(), "box": [1, 1, 30, 30]}, headers=auth(KEY_A))
        assert ok.status_code == 200 and ok.json()["model_info"]["model"] == "sam_v1"

    # tests/service shadows the repository-root package `service` on sys.path here, so load the alias by path.
    spec = importlib.util.spec_from_file_location("root_service_main", REPO_ROOT / "service" / "main.py")
    assert spec is not None and spec.loader is not None
    alias = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(alias)
    assert alias.app is app
    monkeypatch.setattr(main, "_app", None)


def test_serve_binds_the_configured_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    seen: dict[str, Any] = {}

    def fake_run(self: uvicorn.Server, sockets: Any = None) -> None:
        seen.update(host=self.config.host, port=self.config.port, log_config=self.config.log_config)

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    main.serve(main.SegmentorConfig.load(None, server={"host": "0.0.0.0", "port": 9123}))
    assert seen == {"host": "0.0.0.0", "port": 9123, "log_config": None}


def test_uvicorn_command_line_serves_the_app(config_file: Path) -> None:
    port = free_port()
    env = {**os.environ, "SEGMENTOR_CONFIG": str(config_file)}
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "perceptra_seg.service.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            try:
                if httpx.get(base + "/v1/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "uvicorn did not become ready"
            time.sleep(0.2)
        response = httpx.post(
            base + "/v1/segment/box", json={"image": b64_png(), "box": [1, 1, 30, 30]}, headers=auth(KEY_A), timeout=30
        )
        assert response.status_code == 200 and response.json()["area"] >= 0
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    # uvicorn shuts down through the lifespan, then re-raises SIGTERM: -15 is its normal exit here.
    assert process.returncode in (0, -15)
    assert b"Traceback" not in stderr
