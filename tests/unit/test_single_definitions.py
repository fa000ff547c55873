"""Each fact the SDK, the service and the CLI share is defined once and imported everywhere else."""

from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path

import perceptra_seg
from perceptra_seg import conversion, decoding, preprocessing, registry
from perceptra_seg.backends import base
from perceptra_seg.config import InputConfig
from perceptra_seg.utils import image_decode, image_io, masks

SOURCES = {
    path: path.read_text(encoding="utf-8") for path in Path(perceptra_seg.__file__).resolve().parent.rglob("*.py")
}


def _definitions(pattern: str) -> list[str]:
    """Package files whose source matches ``pattern`` (a regular expression)."""
    return sorted(path.name for path, text in SOURCES.items() if re.search(pattern, text))


def test_model_family_is_defined_once() -> None:
    assert _definitions(r"Literal\[\s*\"sam1\",\s*\"sam2\"") == ["registry.py"]
    for module in (conversion, preprocessing, base):
        assert module.Family is registry.Family
    assert registry.FAMILIES == ("sam1", "sam2", "sam3") == typing.get_args(registry.Family)


def test_strategy_set_is_defined_once() -> None:
    assert _definitions(r"\"all\",\s*\"best\",\s*\"largest\",\s*\"merge\"") == ["decoding.py"]
    assert decoding.STRATEGIES == typing.get_args(decoding.Strategy) == ("all", "best", "largest", "merge")
    from perceptra_seg.cli import segment as cli_segment
    from perceptra_seg.service.schemas import SegmentOptions

    named = SegmentOptions.model_fields["strategy"].annotation  # the OpenAPI enum, built from decoding.Strategy
    assert tuple(member.value for member in named) == decoding.STRATEGIES
    hints = typing.get_type_hints(cli_segment.segment, include_extras=True)
    assert typing.get_args(hints["strategy"])[0] is decoding.Strategy


def test_output_formats_are_defined_once() -> None:
    assert _definitions(r"\"rle\",\s*\"png\",\s*\"polygons\"") == ["masks.py"]
    assert masks.OUTPUT_FORMATS == typing.get_args(masks.OutputFormat) == ("numpy", "rle", "png", "polygons")
    from perceptra_seg.service import schemas

    assert tuple(member.value for member in schemas.OutputFormat) == typing.get_args(masks.JsonOutputFormat)
    assert set(typing.get_args(masks.JsonOutputFormat)) == set(masks.OUTPUT_FORMATS) - {"numpy"}


def test_input_defaults_come_from_the_config() -> None:
    fields = InputConfig.model_fields
    defaults = inspect.signature(image_io.load_image).parameters
    for name in ("max_pixels", "max_bytes", "max_decode_bytes", "url_timeout_s", "allow_urls"):
        assert defaults[name].default == fields[name].default, name
    assert fields["max_pixels"].default == image_decode.DEFAULT_MAX_PIXELS
    assert _definitions(r"(?<![\w.])100_000_000\b") == ["config.py"]
    assert _definitions(r"50 \* 1024 \* 1024") == ["config.py"]
