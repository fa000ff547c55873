"""The one config resolver: a config-like argument plus keyword shortcuts and section overrides → ``SegmentorConfig``.

Every front end builds its configuration here (through :meth:`SegmentorConfig.resolve`): ``Segmentor(...)`` and
``Segmentor.set_backend``, the CLI's ``--config``/``--model``/``--device``/... options, ``export_onnx`` and the REST
service (``create_app`` and ``segmentor-serve``). Precedence, lowest first: defaults < YAML file < ``SEGMENTOR_*``
environment < the config argument's own values (an object or a dict) < ``sections`` < shortcuts.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import SegmentorConfig
from .exceptions import ConfigError

__all__ = ["SHORTCUTS", "ConfigLike", "effective_config", "resolve_config"]

#: What may stand for a configuration: an object, a YAML path, a dict of sections, or ``None`` (defaults + env).
ConfigLike = SegmentorConfig | str | Path | Mapping[str, Any] | None

#: Keyword shortcut → the ``(section, field)`` it sets. ``encoder_variant`` is the original README's ``variant``.
SHORTCUTS: dict[str, tuple[str, str]] = {
    "backend": ("runtime", "backend"),
    "model": ("model", "name"),
    "variant": ("model", "variant"),
    "device": ("runtime", "device"),
    "precision": ("runtime", "precision"),
    "checkpoint_path": ("model", "checkpoint_path"),
    "encoder_variant": ("model", "variant"),
}


def resolve_config(
    config: ConfigLike, *, sections: Mapping[str, Mapping[str, Any]] | None = None, **shortcuts: Any
) -> SegmentorConfig:
    """Combine a config argument (object, YAML path, dict of sections or ``None``) with overrides.

    Args:
        config: the base configuration; a ``SegmentorConfig`` without overrides is returned as it is.
        sections: field overrides by section, e.g. ``{"runtime": {"device": "cpu"}}``; other fields of a section
            keep their values (from the argument, the environment or the YAML file).
        shortcuts: ``backend``, ``model``, ``variant``, ``device``, ``precision``, ``checkpoint_path``,
            ``encoder_variant`` (see :data:`SHORTCUTS`); ``None`` means "not given". They win over ``sections``.

    ``variant`` and ``encoder_variant`` name the same field: giving both with different values is a
    :class:`ConfigError`, and either one overrides a ``variant`` or an ``encoder_variant`` in the config argument.

    Raises:
        ConfigError: an unknown shortcut, conflicting shortcuts or an invalid configuration.
    """
    overrides: dict[str, dict[str, Any]] = {name: dict(fields) for name, fields in (sections or {}).items()}
    given: dict[tuple[str, str], Any] = {}
    for name, value in shortcuts.items():
        if name not in SHORTCUTS:
            raise ConfigError(f"unknown configuration shortcut {name}=; known: {', '.join(SHORTCUTS)}")
        if value is None:
            continue
        section, field = SHORTCUTS[name]
        previous = given.get((section, field))
        if previous is not None and previous != value:
            raise ConfigError(f"conflicting values for {section}.{field}: {previous!r} and {value!r} ({name}=)")
        given[(section, field)] = value
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
            merged["model"].pop("encoder_variant", None)  # the override replaces the dict's variant by either name
        return SegmentorConfig.load(None, **merged)
    return SegmentorConfig.load(config, **overrides)


#: The name ``Segmentor`` used before the resolver was shared; the same function.
effective_config = resolve_config
