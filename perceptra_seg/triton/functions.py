"""The inference callables behind the Triton models of ``serve-triton`` (plain numpy in, numpy out).

Each callable takes the list of requests Triton hands over in one execution (a mapping of input name → array per
request) and returns one mapping of output name → array per request, in the same order; see
:mod:`perceptra_seg.triton.protocol` for names, shapes and dtypes. They need no Triton import, so they are tested
without a server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..backends.base import ImageEmbedding, PromptBatch
from ..backends.onnx_manifest import encoder_outputs
from ..exceptions import InvalidInputError
from .protocol import DECODER_OUTPUTS, ENCODER_INPUT, encode_info

__all__ = ["ModelFunctions"]

Arrays = Mapping[str, np.ndarray]


class ModelFunctions:
    """Encoder, decoder and info callables over one loaded :class:`~perceptra_seg.backends.torch_backend.TorchBackend`.

    Args:
        backend: the torch backend holding the model (its ``encode_pixels`` runs a whole batch in one call).
    """

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.family = backend.family
        self.feature_names = encoder_outputs(self.family)
        self._info = encode_info(backend.info(), self.family, int(backend.mask_size))
        #: executions of the encoder (one per Triton batch) and images encoded, for logs and tests
        self.encoder_executions = 0
        self.encoded_images = 0

    def encoder(self, requests: Sequence[Arrays]) -> list[dict[str, np.ndarray]]:
        """All requests' ``pixel_values [b_i, 3, 1024, 1024]`` in one encoder call; features split back per request."""
        sizes = [int(request[ENCODER_INPUT].shape[0]) for request in requests]
        pixels = np.concatenate([np.asarray(request[ENCODER_INPUT], dtype=np.float32) for request in requests])
        features = self.backend.encode_pixels(pixels)
        self.encoder_executions += 1
        self.encoded_images += len(pixels)
        answers = []
        start = 0
        for size in sizes:
            answers.append(
                {name: f[start : start + size] for name, f in zip(self.feature_names, features, strict=True)}
            )
            start += size
        return answers

    def decoder(self, requests: Sequence[Arrays]) -> list[dict[str, np.ndarray]]:
        """One prompt batch per request against the features it carries."""
        return [self._decode_one(request) for request in requests]

    def _decode_one(self, request: Arrays) -> dict[str, np.ndarray]:
        import torch

        missing = [name for name in self.feature_names if name not in request]
        if missing:
            raise InvalidInputError(f"decoder request lacks the image features {', '.join(missing)}")
        device = self.backend.device
        features = tuple(
            torch.from_numpy(np.ascontiguousarray(request[name], dtype=np.float32)).to(device)
            for name in self.feature_names
        )
        batch = PromptBatch(
            points=_optional(request, "point_coords", np.float32),
            labels=_optional(request, "point_labels", np.int64),
            boxes=_optional(request, "boxes", np.float32),
            mask_inputs=_optional(request, "mask_inputs", np.float32),
        )
        if (batch.points is None) != (batch.labels is None):
            raise InvalidInputError("point_coords and point_labels must be sent together")
        multimask = bool(np.asarray(request["multimask"]).reshape(-1)[0]) if "multimask" in request else True
        embedding = ImageEmbedding(original_size=(0, 0), input_size=(0, 0), features=features, nbytes=0)
        output = self.backend.decode(embedding, batch, multimask=multimask)
        logits, scores = DECODER_OUTPUTS
        return {logits: output.low_res_logits, scores: output.iou_scores}

    def info(self, requests: Sequence[Arrays]) -> list[dict[str, np.ndarray]]:
        """The served model's identity (JSON bytes) for every request."""
        return [{"info": np.array([self._info], dtype=np.bytes_)} for _ in requests]


def _optional(request: Arrays, name: str, dtype: type) -> np.ndarray | None:
    if name not in request:
        return None
    return np.ascontiguousarray(request[name], dtype=dtype)
