"""The wire contract between ``segmentor-cli serve-triton`` and the ``triton`` backend (no Triton imports here).

``serve-triton`` hosts three Triton models; the client backend calls them with Triton's standard HTTP/gRPC protocol:

* ``perceptra_encoder`` (dynamic batching, batch dimension implicit): input ``pixel_values`` FP32 ``[3, 1024,
  1024]`` — the image already resized, normalised and padded by
  :func:`perceptra_seg.preprocessing.preprocess_image` (so every request has the same shape and Triton can batch
  them) → the image features, named as in the ONNX export: SAM 1 ``image_embeddings`` ``[256, 64, 64]``; SAM 2
  ``high_res_feats_0`` ``[32, 256, 256]``, ``high_res_feats_1`` ``[64, 128, 128]``, ``image_embeddings``
  ``[256, 64, 64]`` (per image; Triton adds the batch dimension).
* ``perceptra_decoder`` (no batching; one call answers a prompt batch of N): the encoder outputs of one image with a
  leading 1, ``point_coords`` FP32 ``[N, P, 2]`` as ``(x, y)`` and ``point_labels`` INT64 ``[N, P]`` (1 foreground,
  0 background), ``boxes`` FP32 ``[N, 4]`` as ``(x1, y1, x2, y2)``, ``mask_inputs`` FP32 ``[N, 1, S, S]`` — all
  four optional and in the 1024 model-input frame — and ``multimask`` BOOL ``[1]`` → ``low_res_logits`` FP32
  ``[N, K, S, S]`` and ``iou_scores`` FP32 ``[N, K]`` (K = 3 with multimask, else 1).
* ``perceptra_info`` (no batching): input ``query`` BYTES ``[1]`` (any value) → ``info`` BYTES ``[1]``, a JSON object
  ``{"model", "variant", "family", "checkpoint", "precision", "device", "mask_size", "protocol"}`` that the client
  checks against its own configuration at start-up.
"""

from __future__ import annotations

import json
from typing import Any

from ..backends.base import Family

__all__ = [
    "DECODER_INPUTS",
    "DECODER_MODEL",
    "DECODER_OUTPUTS",
    "ENCODER_INPUT",
    "ENCODER_MODEL",
    "INFO_MODEL",
    "PROTOCOL_VERSION",
    "decode_info",
    "encode_info",
]

#: bumped when a model's inputs or outputs change; the client refuses a server speaking another version
PROTOCOL_VERSION = 1
ENCODER_MODEL = "perceptra_encoder"
DECODER_MODEL = "perceptra_decoder"
INFO_MODEL = "perceptra_info"
ENCODER_INPUT = "pixel_values"
#: optional prompt inputs of the decoder (besides the features and ``multimask``)
DECODER_INPUTS: tuple[str, ...] = ("point_coords", "point_labels", "boxes", "mask_inputs")
DECODER_OUTPUTS: tuple[str, ...] = ("low_res_logits", "iou_scores")


def encode_info(info: dict[str, Any], family: Family, mask_size: int) -> bytes:
    """The ``perceptra_info`` answer: a backend's ``info()`` plus family, mask size and protocol version."""
    record = {**info, "family": family, "mask_size": mask_size, "protocol": PROTOCOL_VERSION}
    return json.dumps(record, sort_keys=True).encode()


def decode_info(raw: bytes) -> dict[str, Any]:
    """Parse an ``info`` answer; raises ``ValueError`` when it is not a JSON object."""
    data = json.loads(raw.decode())
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    return data
