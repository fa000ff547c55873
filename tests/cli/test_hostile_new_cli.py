"""``segment-text`` on a model without text prompts is refused before that model is loaded: the default model
(``sam_v2``, not in any cache here) once had its checkpoint downloaded only to be told it has no text prompts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import Run


@pytest.mark.parametrize("model", [[], ["--model", "sam_v1"]])
def test_segment_text_refuses_other_models_before_loading(
    cli: Callable[..., Run], images: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: list[str]
) -> None:
    monkeypatch.setenv("SEGMENTOR_MODEL_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("SEGMENTOR_MODEL_DOWNLOAD_BASE_URL", "http://127.0.0.1:9/")  # never a real download
    run = cli("segment-text", "-i", images["coffee"], "-t", "car", *model, "--json")
    assert run.exit_code == 2, run.stderr
    assert run.json()["error"]["code"] == "text_prompts_unsupported"
    assert not (tmp_path / "empty-cache").exists() or not any((tmp_path / "empty-cache").iterdir())
