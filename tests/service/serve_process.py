"""Run the REST service in its own process for tests: ``python -m tests.service.serve_process SPEC.json``.

``SPEC.json`` holds ``{"config": {<sections>}, "fake": {<FakeBackend attributes>} | null}``: with ``fake`` the app
serves :class:`tests.service.helpers.FakeBackend` (attributes such as ``decode_delay_s`` set after the warm-up),
without it the model of ``config`` is loaded as in production. The server is uvicorn with the settings of
:func:`perceptra_seg.service.main.uvicorn_config` (connection limits included), on ``server.host:server.port``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import uvicorn

from perceptra_seg.config import SegmentorConfig
from perceptra_seg.service import create_app
from perceptra_seg.service.main import uvicorn_config

from .helpers import FakeBackend


class _DelayedFake(FakeBackend):
    """A FakeBackend whose delays apply only after the warm-up (the first encode and decode)."""

    def __init__(self, delays: dict[str, Any]) -> None:
        super().__init__()
        self._delays = delays

    def decode(self, *args: Any, **kwargs: Any) -> Any:
        result = super().decode(*args, **kwargs)
        for name, value in self._delays.items():
            setattr(self, name, value)
        return result


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    config = SegmentorConfig.load(None, **spec["config"])
    backend = _DelayedFake(spec["fake"]) if spec.get("fake") is not None else None
    app = create_app(config, backend=backend)
    uvicorn.Server(uvicorn_config(app, config)).run()


if __name__ == "__main__":
    main(sys.argv[1])
