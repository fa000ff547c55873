"""One config resolver (``SegmentorConfig.resolve``) behind the SDK, the CLI, the ONNX export and the service."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import perceptra_seg
from perceptra_seg import config_overrides
from perceptra_seg.config import SegmentorConfig
from perceptra_seg.exceptions import ConfigError


def test_only_the_resolver_calls_load_with_overrides() -> None:
    """``SegmentorConfig.load`` is called by the resolver alone (and by nobody with merged dumps of their own)."""
    root = Path(perceptra_seg.__file__).resolve().parent
    callers = sorted(
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if re.search(r"SegmentorConfig\.load\(", path.read_text(encoding="utf-8"))
    )
    assert callers == ["config.py", "config_overrides.py"]  # config.py: docstring examples only
    config_text = (root / "config.py").read_text(encoding="utf-8")
    assert all(line.lstrip().startswith("*") for line in config_text.splitlines() if "SegmentorConfig.load(" in line)


@pytest.fixture
def resolved(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, dict[str, Any]]]:
    calls: list[tuple[Any, dict[str, Any]]] = []
    real = config_overrides.resolve_config

    def recording(config: Any, **overrides: Any) -> SegmentorConfig:
        calls.append((config, overrides))
        return real(config, **overrides)

    monkeypatch.setattr(config_overrides, "resolve_config", recording)
    return calls


def test_cli_export_and_service_use_the_resolver(
    resolved: list[tuple[Any, dict[str, Any]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from perceptra_seg.backends.export import _export_settings
    from perceptra_seg.cli.common import CommonOptions
    from perceptra_seg.service.main import load_config_from_env

    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text("model:\n  name: sam_v1\nruntime:\n  device: cuda\n  precision: bf16\n")
    cli = CommonOptions(config=yaml_path, device="cpu", variant="vit_l").load_config()
    assert (cli.model.name, cli.model.variant, cli.runtime.device, cli.runtime.precision) == (
        "sam_v1",
        "vit_l",
        "cpu",
        "bf16",
    )
    export = _export_settings(str(yaml_path), {"name": None, "variant": "vit_b", "checkpoint_path": None})
    assert (export.model.variant, export.runtime.device, export.runtime.precision) == ("vit_b", "cpu", "fp32")
    monkeypatch.setenv("SEGMENTOR_CONFIG", str(yaml_path))
    assert load_config_from_env().runtime.device == "cuda"
    assert [call[0] for call in resolved] == [yaml_path, str(yaml_path), str(yaml_path)]


def test_set_backend_goes_through_the_resolver(
    resolved: list[tuple[Any, dict[str, Any]]], counting_segmentor: Any
) -> None:
    seg = counting_segmentor()
    with pytest.raises(ConfigError, match="runtime.backend"):
        seg.set_backend("tensorflow")
    assert resolved[-1] == (seg.config, {"backend": "tensorflow"})


def test_sections_and_shortcuts_precedence() -> None:
    base = {"runtime": {"device": "cuda", "precision": "bf16"}, "model": {"name": "sam_v1", "encoder_variant": "vit_h"}}
    config = SegmentorConfig.resolve(base, sections={"runtime": {"device": "cpu"}, "model": {"variant": "vit_l"}})
    assert (config.runtime.device, config.runtime.precision, config.model.variant) == ("cpu", "bf16", "vit_l")
    shortcut_wins = SegmentorConfig.resolve(base, sections={"runtime": {"device": "cpu"}}, device="auto")
    assert shortcut_wins.runtime.device == "auto"
    with pytest.raises(ConfigError, match="unknown configuration shortcut colour="):
        SegmentorConfig.resolve(None, colour="red")
    ready = SegmentorConfig.resolve(None)
    assert SegmentorConfig.resolve(ready) is ready
