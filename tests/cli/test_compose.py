"""docker-compose.yml (service + Redis) uses the configuration's real names and points the service at its Redis."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from perceptra_seg.config import SegmentorConfig

ROOT = Path(__file__).resolve().parents[2]


def test_compose_file_configures_shared_state(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    service = services["segmentor"]
    for name in [n for n in os.environ if n.startswith("SEGMENTOR_")]:
        monkeypatch.delenv(name)
    for name, value in service["environment"].items():
        assert name.startswith("SEGMENTOR_")
        monkeypatch.setenv(name, str(value))
    config = SegmentorConfig.load(None)  # unknown names or bad values would raise here
    assert config.server.state == "redis"
    assert config.server.redis_embedding_dtype == "float16"
    assert urlsplit(config.server.redis_url).hostname in services  # the compose service that runs Redis
    assert "redis-server" in services["redis"]["command"]
    assert "volatile-ttl" in services["redis"]["command"]  # evicts only keys with a TTL, never the id secret
    assert service["command"][:2] == ["segmentor-cli", "serve"] and "--workers" in service["command"]
    assert "redis" in service["depends_on"]
