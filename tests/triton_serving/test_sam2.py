"""SAM 2.1 (random-weight hiera_tiny in Meta's format) through serve-triton: parity with the local torch backend,
then a clean shutdown on SIGTERM (the last test of this module stops its server)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from perceptra_seg import Segmentor

from ..conftest import build_reference_sam2, save_meta_checkpoint
from ..onnx_backend.conftest import CASES, scaled
from .conftest import STOP_TIMEOUT_S, TritonServer, port_is_free
from .test_serve import assert_same_results


@pytest.fixture(scope="module")
def sam2_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    root = tmp_path_factory.mktemp("triton_sam2")
    model = build_reference_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", seed=4)
    checkpoint = save_meta_checkpoint(model, root / "sam2.1_hiera_tiny.pt", sam2=True)
    sections: dict[str, Any] = {
        "model": {"name": "sam_v2", "variant": "hiera_tiny", "checkpoint_path": str(checkpoint)},
        "runtime": {"device": "cpu", "precision": "fp32"},
    }
    server = TritonServer(sections, root)
    yield server
    server.stop()


def test_sam2_masks_match_the_local_torch_backend(sam2_server: TritonServer, photos: dict[str, np.ndarray]) -> None:
    local = Segmentor(sam2_server.sections)
    remote = Segmentor(sam2_server.client_sections("grpc"))
    image = photos["chelsea"]
    prompts = [scaled(p, image.shape[:2]) for p in CASES.values()]
    for multimask in (False, True):
        expected = local.segment(image, prompts=prompts, multimask=multimask, output_formats=["numpy"])
        actual = remote.segment(image, prompts=prompts, multimask=multimask, output_formats=["numpy"])
        assert_same_results(expected, actual)


def test_sigterm_stops_the_server_cleanly(sam2_server: TritonServer) -> None:
    sam2_server.process.send_signal(signal.SIGTERM)
    assert sam2_server.process.wait(timeout=STOP_TIMEOUT_S) == 0, sam2_server.log()
    assert "triton stopped" in sam2_server.log(tail=10**7)
    assert all(port_is_free(port) for port in sam2_server.ports)
