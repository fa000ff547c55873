"""CLI fixtures: a YAML config for the reduced SAM 1 checkpoint, small test images, and a Typer runner helper."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

pytest.importorskip("typer", reason="the CLI needs the cli extra")

from typer.testing import CliRunner

from perceptra_seg.cli import app


@dataclass
class Run:
    """Outcome of one in-process CLI call."""

    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@pytest.fixture(autouse=True)
def _no_segmentor_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own SEGMENTOR_* variables must not leak into the CLI under test."""
    for name in list(os.environ):
        if name.startswith("SEGMENTOR_"):
            monkeypatch.delenv(name)


@pytest.fixture
def cli() -> Callable[..., Run]:
    """``cli("segment-box", "--image", ...)`` runs segmentor-cli in-process and returns exit code and output."""
    runner = CliRunner()

    def invoke(*args: str | Path) -> Run:
        result = runner.invoke(app, [str(a) for a in args])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return Run(result.exit_code, result.stdout, result.stderr)

    return invoke


@pytest.fixture(scope="session")
def config_file(tmp_path_factory: pytest.TempPathFactory, small_sam1_config: dict[str, Any]) -> Path:
    """YAML config that loads the reduced random-weight SAM 1 checkpoint on CPU."""
    path = tmp_path_factory.mktemp("cli_config") / "config.yaml"
    path.write_text(yaml.safe_dump(small_sam1_config), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory, photos: dict[str, np.ndarray]) -> dict[str, Path]:
    """Two small real photos (PNG and JPEG, non-square) so post-processing stays cheap."""
    folder = tmp_path_factory.mktemp("cli_images")
    coffee = folder / "coffee.png"
    Image.fromarray(photos["coffee"]).resize((120, 80), Image.Resampling.BILINEAR).save(coffee)
    cat = folder / "chelsea.jpg"
    Image.fromarray(photos["chelsea"]).resize((90, 60), Image.Resampling.BILINEAR).save(cat, quality=92)
    return {"coffee": coffee, "chelsea": cat}
