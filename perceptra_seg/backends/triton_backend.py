"""Triton runtime: encode and decode through a running ``segmentor-cli serve-triton`` (Triton Inference Server).

Only the two network calls leave the process: preprocessing (resize, normalise, pad) happens here, so the encoder
receives fixed-size ``pixel_values`` that Triton's dynamic batcher can stack across clients; the features come back
and live in this process's embedding cache; each decoder call sends them with the prompt batch. Validation,
caching, upsampling, post-processing and outputs are the core's, unchanged. Tensors and model names:
:mod:`perceptra_seg.triton.protocol`.

Errors: server unreachable or gone → :class:`~perceptra_seg.exceptions.BackendUnavailableError` (503 in the REST
service) naming the URL; a model not ready or another model than the configuration names →
:class:`~perceptra_seg.exceptions.ModelLoadError` at start-up; every call is bounded by ``triton.timeout_s``.
"""

from __future__ import annotations

import http.client
import logging
import threading
from typing import Any

import numpy as np

from ..config import SegmentorConfig
from ..exceptions import BackendError, BackendUnavailableError, InvalidInputError, ModelLoadError
from ..extras import install_command
from ..preprocessing import preprocess_image
from ..registry import get_model_spec
from ..triton.protocol import (
    DECODER_MODEL,
    DECODER_OUTPUTS,
    ENCODER_INPUT,
    ENCODER_MODEL,
    INFO_MODEL,
    PROTOCOL_VERSION,
    decode_info,
)
from .base import Backend, DecoderOutput, Family, ImageEmbedding, PromptBatch
from .onnx_manifest import encoder_outputs

try:
    import gevent
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"the triton backend needs tritonclient: {install_command('triton')}") from exc

__all__ = ["TritonBackend"]

logger = logging.getLogger(__name__)

#: what a dropped connection or a missed deadline raises below tritonclient (geventhttpclient: http.client's
#: HTTPException family and gevent's Timeout, a BaseException; grpc reports through InferenceServerException)
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (OSError, http.client.HTTPException, gevent.Timeout)


class TritonBackend(Backend):
    """Encode/decode through Triton's HTTP or gRPC protocol (``triton.url``, ``triton.protocol``).

    One client connection per thread (tritonclient's HTTP client is not thread-safe), all with the connect and
    network deadline ``triton.timeout_s``. At start-up the server must be live, the three models ready, and its
    ``perceptra_info`` must name the configured model and variant.

    Raises:
        BackendUnavailableError: the server does not answer at ``triton.url``.
        ModelLoadError: a model is not ready, or the server holds another model, or speaks another protocol version.
    """

    def __init__(self, config: SegmentorConfig) -> None:
        settings = config.triton
        self.spec = get_model_spec(config.model.name, config.model.variant)
        self.family: Family = self.spec.family
        self.url = settings.client_url()
        self.protocol = settings.protocol
        self.timeout_s = settings.timeout_s
        self._local = threading.local()
        self._closed = False
        self._feature_names = encoder_outputs(self.family)
        self.server_info = self._check_server()
        self.mask_size = int(self.server_info["mask_size"])
        self.fingerprint = "|".join(
            (
                self.spec.name,
                self.spec.variant,
                "triton",
                f"{self.protocol}://{self.url}",
                str(self.server_info.get("precision")),
                str(self.server_info.get("checkpoint")),
            )
        )
        logger.info(
            "using Triton at %s (%s): %s/%s, server device %s, precision %s",
            self.url,
            self.protocol,
            self.spec.name,
            self.spec.variant,
            self.server_info.get("device"),
            self.server_info.get("precision"),
        )

    # -- connection ---------------------------------------------------------------------------------------------

    def _client(self) -> Any:
        if self._closed:
            raise BackendError("the triton backend is closed")
        client = getattr(self._local, "client", None)
        if client is None:
            if self.protocol == "grpc":
                client = grpcclient.InferenceServerClient(self.url)
            else:
                client = httpclient.InferenceServerClient(
                    self.url, connection_timeout=self.timeout_s, network_timeout=self.timeout_s
                )
            self._local.client = client
        return client

    def _unavailable(self, exc: BaseException, what: str) -> BackendUnavailableError:
        self._local.client = None  # a broken connection is not reused
        return BackendUnavailableError(
            f"Triton server at {self.url} ({self.protocol}) did not answer {what}: {exc or type(exc).__name__}"
            " (is `segmentor-cli serve-triton` running there?)"
        )

    def _check_server(self) -> dict[str, Any]:
        client = self._client()
        kwargs = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        try:
            live = client.is_server_live(**kwargs)
            ready = {name: client.is_model_ready(name, **kwargs) for name in (ENCODER_MODEL, DECODER_MODEL, INFO_MODEL)}
        except (InferenceServerException, *_TRANSPORT_ERRORS) as exc:
            raise self._unavailable(exc, "a liveness check") from None
        if not live:
            raise BackendUnavailableError(f"Triton server at {self.url} is not live")
        not_ready = [name for name, ok in ready.items() if not ok]
        if not_ready:
            raise ModelLoadError(
                f"Triton server at {self.url} has no ready {', '.join(not_ready)} model: is it a perceptra-seg"
                " serve-triton server (still loading)?"
            )
        query = np.array([b"info"], dtype=np.object_)
        (raw,) = self._infer(INFO_MODEL, {"query": query}, ("info",))
        try:
            info = decode_info(bytes(raw.reshape(-1)[0]))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"Triton server at {self.url} sent an unreadable model description: {exc}") from None
        expected = {"model": self.spec.name, "variant": self.spec.variant, "protocol": PROTOCOL_VERSION}
        differences = [
            f"{key} {info.get(key)!r} (configured {value!r})"
            for key, value in expected.items()
            if info.get(key) != value
        ]
        if differences:
            raise ModelLoadError(
                f"Triton server at {self.url} serves another model than configured: {'; '.join(differences)}."
                " Point triton.url at the server of this model or set model.name / model.variant to the served one"
            )
        return info

    def _infer(self, model: str, inputs: dict[str, np.ndarray], outputs: tuple[str, ...]) -> list[np.ndarray]:
        module: Any = grpcclient if self.protocol == "grpc" else httpclient
        client = self._client()
        request = []
        for name, array in inputs.items():
            dtype = "BYTES" if array.dtype == np.object_ else _TRITON_DTYPES[array.dtype.type]
            tensor = module.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            request.append(tensor)
        wanted = [module.InferRequestedOutput(name) for name in outputs]
        try:
            if self.protocol == "grpc":
                result = client.infer(model, request, outputs=wanted, client_timeout=self.timeout_s)
            else:
                result = client.infer(model, request, outputs=wanted)
        except InferenceServerException as exc:
            message = str(exc.message() or exc)
            if _is_transport_failure(exc):
                raise self._unavailable(exc, f"a {model} request within {self.timeout_s:g} s") from None
            raise BackendError(f"Triton {model} failed: {message}") from None
        except _TRANSPORT_ERRORS as exc:
            raise self._unavailable(exc, f"a {model} request within {self.timeout_s:g} s") from None
        return [result.as_numpy(name) for name in outputs]

    # -- protocol -----------------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return {
            "model": self.spec.name,
            "variant": self.spec.variant,
            "backend": "triton",
            "device": str(self.server_info.get("device")),
            "precision": str(self.server_info.get("precision")),
            "checkpoint": str(self.server_info.get("checkpoint")),
            "url": self.url,
        }

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """Preprocess here, run the encoder on the server; features are float32 numpy arrays with a leading 1."""
        pixels, input_size = preprocess_image(image, self.family)
        outputs = self._infer(ENCODER_MODEL, {ENCODER_INPUT: pixels}, self._feature_names)
        features = tuple(np.ascontiguousarray(output, dtype=np.float32) for output in outputs)
        return ImageEmbedding(
            original_size=(int(image.shape[0]), int(image.shape[1])),
            input_size=input_size,
            features=features,
            nbytes=sum(feature.nbytes for feature in features),
        )

    def decode(self, embedding: ImageEmbedding, batch: PromptBatch, *, multimask: bool) -> DecoderOutput:
        """Send the image features and the prompt batch; logits ``[N, K, S, S]`` and scores ``[N, K]`` come back."""
        if len(batch) == 0:
            raise InvalidInputError("empty prompt batch")
        features = embedding.features
        if not isinstance(features, tuple) or len(features) != len(self._feature_names):
            raise BackendError("this embedding was not produced by the triton backend's encoder")
        inputs: dict[str, np.ndarray] = dict(zip(self._feature_names, features, strict=True))
        prompts = {
            "point_coords": (batch.points, np.float32),
            "point_labels": (batch.labels, np.int64),
            "boxes": (batch.boxes, np.float32),
            "mask_inputs": (batch.mask_inputs, np.float32),
        }
        for name, (array, dtype) in prompts.items():
            if array is not None:
                inputs[name] = np.ascontiguousarray(array, dtype=dtype)
        inputs["multimask"] = np.array([multimask], dtype=np.bool_)
        logits, scores = self._infer(DECODER_MODEL, inputs, DECODER_OUTPUTS)
        return DecoderOutput(
            low_res_logits=np.ascontiguousarray(logits, dtype=np.float32),
            iou_scores=np.ascontiguousarray(scores, dtype=np.float32),
        )

    def close(self) -> None:
        """Forget the connections; ``encode``/``decode`` then raise :class:`BackendError`. The server keeps running."""
        self._closed = True
        self._local = threading.local()


_TRITON_DTYPES: dict[type, str] = {np.float32: "FP32", np.int64: "INT64", np.bool_: "BOOL"}


def _is_transport_failure(exc: InferenceServerException) -> bool:
    """Whether ``exc`` reports a lost connection or a deadline rather than an error of the model itself."""
    status = str(exc.status() or "")
    text = f"{status} {exc.message() or ''}".lower()
    markers = ("unavailable", "deadline", "timed out", "timeout", "connection", "socket", "broken pipe", "reset")
    return any(marker in text for marker in markers)
