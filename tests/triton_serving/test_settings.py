"""The triton config section, its mapping onto Triton's server options, the libpython fix and the model callables
(no server needed)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from perceptra_seg import SegmentorConfig
from perceptra_seg.exceptions import ConfigError, InvalidInputError
from perceptra_seg.triton.functions import ModelFunctions
from perceptra_seg.triton.protocol import PROTOCOL_VERSION, decode_info
from perceptra_seg.triton.server import library_path, server_settings


def test_server_settings_follow_the_triton_section() -> None:
    config = SegmentorConfig.load(
        None, triton={"host": "127.0.0.2", "http_port": 9000, "grpc_port": 9001, "metrics_port": 9002}
    )
    settings = server_settings(config)
    assert settings["http_address"] == settings["grpc_address"] == settings["metrics_address"] == "127.0.0.2"
    assert (settings["http_port"], settings["grpc_port"], settings["metrics_port"]) == (9000, 9001, 9002)
    assert settings["allow_metrics"] is True


def test_client_url_defaults_to_host_and_the_protocol_port() -> None:
    triton = SegmentorConfig.load(None, triton={"host": "10.0.0.5", "http_port": 9000, "grpc_port": 9001}).triton
    assert triton.client_url() == "10.0.0.5:9000"
    assert triton.model_copy(update={"protocol": "grpc"}).client_url() == "10.0.0.5:9001"
    assert triton.model_copy(update={"url": "gpu-box:8100"}).client_url() == "gpu-box:8100"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"url": "http://gpu-box:8100"}, "host:port without a scheme"),
        ({"protocol": "websocket"}, "triton.protocol"),
        ({"timeout_s": 0}, "triton.timeout_s"),
        ({"max_batch_size": 0}, "triton.max_batch_size"),
        ({"max_queue_delay_ms": -1}, "triton.max_queue_delay_ms"),
        ({"http_port": 70000}, "triton.http_port"),
        ({"metrics_port": 0}, "triton.metrics_port"),
        ({"grpc_port": 0}, "triton.grpc_port"),
    ],
)
def test_invalid_triton_settings_are_refused(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SegmentorConfig.load(None, triton=section)


def test_environment_reaches_the_triton_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGMENTOR_TRITON_URL", "gpu-box:8101")
    monkeypatch.setenv("SEGMENTOR_TRITON_PROTOCOL", "grpc")
    monkeypatch.setenv("SEGMENTOR_RUNTIME_BACKEND", "triton")
    config = SegmentorConfig.load(None)
    assert (config.runtime.backend, config.triton.client_url(), config.triton.protocol) == (
        "triton",
        "gpu-box:8101",
        "grpc",
    )


def test_library_path_puts_the_interpreters_libdir_first_once() -> None:
    assert library_path({}, "/py/lib") == "/py/lib"
    assert library_path({"LD_LIBRARY_PATH": "/a:/py/lib:/b"}, "/py/lib") == "/py/lib:/a:/b"
    assert library_path({"LD_LIBRARY_PATH": "/a"}, "") == "/a"
    import sysconfig

    assert library_path({"LD_LIBRARY_PATH": "/x"}).split(":")[0] == sysconfig.get_config_var("LIBDIR")


class _Backend:
    """Records calls; features are the pixel sums so the split per request can be checked."""

    family = "sam1"
    mask_size = 256
    device = "cpu"

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.decoded: list[Any] = []

    def info(self) -> dict[str, Any]:
        return {"model": "sam_v1", "variant": "vit_b", "checkpoint": "abc", "precision": "fp32", "device": "cpu"}

    def encode_pixels(self, pixels: np.ndarray) -> tuple[np.ndarray, ...]:
        self.batches.append(len(pixels))
        return (pixels.sum(axis=(1, 2, 3)).reshape(-1, 1, 1, 1),)

    def decode(self, embedding: Any, batch: Any, *, multimask: bool) -> Any:
        from perceptra_seg.backends.base import DecoderOutput

        self.decoded.append((embedding, batch, multimask))
        k = 3 if multimask else 1
        return DecoderOutput(np.zeros((len(batch), k, 4, 4), np.float32), np.ones((len(batch), k), np.float32))


def test_encoder_runs_all_requests_of_an_execution_at_once() -> None:
    backend = _Backend()
    functions = ModelFunctions(backend)
    requests = [{"pixel_values": np.full((n, 3, 2, 2), n, np.float32)} for n in (1, 2, 1)]
    answers = functions.encoder(requests)
    assert backend.batches == [4]
    assert [a["image_embeddings"].shape[0] for a in answers] == [1, 2, 1]
    assert [float(a["image_embeddings"].reshape(-1)[0]) for a in answers] == [12.0, 24.0, 12.0]


def test_decoder_builds_the_prompt_batch_and_checks_its_inputs() -> None:
    pytest.importorskip("torch")
    backend = _Backend()
    functions = ModelFunctions(backend)
    features = np.zeros((1, 256, 64, 64), np.float32)
    request = {"image_embeddings": features, "boxes": np.zeros((2, 4), np.float32), "multimask": np.array([False])}
    (answer,) = functions.decoder([request])
    assert answer["low_res_logits"].shape == (2, 1, 4, 4)
    _, batch, multimask = backend.decoded[0]
    assert batch.points is None and batch.boxes.shape == (2, 4) and multimask is False
    with pytest.raises(InvalidInputError, match="point_coords and point_labels"):
        functions.decoder([{"image_embeddings": features, "point_coords": np.zeros((1, 1, 2), np.float32)}])
    with pytest.raises(InvalidInputError, match="image_embeddings"):
        functions.decoder([{"boxes": np.zeros((1, 4), np.float32)}])
    (info,) = functions.info([{"query": np.array([b"x"])}])
    described = decode_info(bytes(info["info"][0]))
    assert described["model"] == "sam_v1" and described["mask_size"] == 256
    assert described["protocol"] == PROTOCOL_VERSION


def test_serve_triton_without_pytriton_names_the_extra(tmp_path: Any) -> None:
    import importlib.util

    from typer.testing import CliRunner

    from perceptra_seg.cli.app import app

    if importlib.util.find_spec("pytriton") is not None:
        pytest.skip("nvidia-pytriton is installed in this environment")
    result = CliRunner().invoke(app, ["serve-triton", "--model", "demo"])
    assert result.exit_code == 1
    assert "triton-server" in result.output and "numpy<2" in result.output


def test_info_says_the_server_decides_the_precision() -> None:
    import json

    from typer.testing import CliRunner

    from perceptra_seg.cli.app import app

    result = CliRunner().invoke(app, ["info", "--backend", "triton", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["precision"]["resolved"] == "server"
