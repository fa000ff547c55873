"""The base of every :class:`~perceptra_seg.config.SegmentorConfig` section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Section"]


class Section(BaseModel):
    """A config section: unknown keys are errors, and assignments are validated like construction."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
