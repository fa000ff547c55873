"""Keyword shortcuts of ``Segmentor(...)`` (``model=``, ``variant=``, ``device=``, ...) merged into a configuration."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import SegmentorConfig
from .exceptions import ConfigError

__all__ = ["effective_config"]


def effective_config(
    config: SegmentorConfig | str | Path | Mapping[str, Any] | None, **shortcuts: Any
) -> SegmentorConfig:
    """Combine a config argument (object, YAML path, dict of sections or ``None``) with keyword shortcuts.

    Shortcuts win over the config argument. ``variant`` and ``encoder_variant`` (its other name) name the same
    field: giving both with different values is a :class:`ConfigError`, and either one overrides a ``variant`` or an
    ``encoder_variant`` in the config argument.

    Raises:
        ConfigError: conflicting shortcuts or an invalid configuration.
    """
    sections = {
        "backend": ("runtime", "backend"),
        "model": ("model", "name"),
        "variant": ("model", "variant"),
        "device": ("runtime", "device"),
        "precision": ("runtime", "precision"),
        "checkpoint_path": ("model", "checkpoint_path"),
        "encoder_variant": ("model", "variant"),
    }
    overrides: dict[str, dict[str, Any]] = {}
    for name, value in shortcuts.items():
        if value is not None:
            section, field = sections[name]
            previous = overrides.get(section, {}).get(field)
            if previous is not None and previous != value:
                raise ConfigError(f"conflicting values for {section}.{field}: {previous!r} and {value!r} ({name}=)")
            overrides.setdefault(section, {})[field] = str(value) if isinstance(value, Path) else value
    if isinstance(config, SegmentorConfig):
        if not overrides:
            return config
        merged = config.model_dump()
        for section, fields in overrides.items():
            merged[section].update(fields)
        return SegmentorConfig.load(None, **merged)
    if isinstance(config, Mapping):
        merged = {k: dict(v) if isinstance(v, Mapping) else v for k, v in config.items()}
        for section, fields in overrides.items():
            merged.setdefault(section, {}).update(fields)
        if "variant" in overrides.get("model", {}):
            merged["model"].pop("encoder_variant", None)  # the shortcut replaces the dict's variant by either name
        return SegmentorConfig.load(None, **merged)
    return SegmentorConfig.load(config, **overrides)
