"""Trace the torch backend's SAM model into three fp32 ONNX graphs: the image encoder and two decoders.

The wrappers here give the graphs the inputs and outputs described in :mod:`perceptra_seg.backends.onnx_manifest`
(prompts as labelled points, Meta's layout: box corners are labels 2 and 3, padding -1); the traced shape arithmetic
is folded once with ONNX Runtime's basic passes. :mod:`perceptra_seg.backends.export` converts the fp32 graphs to the
requested precision and publishes them with their manifest.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from ..extras import install_command
from .base import Family
from .onnx_manifest import DECODER_OUTPUTS, GRAPH_NAMES, decoder_inputs, encoder_outputs

try:
    import onnx
    import onnxruntime as ort
    import torch
    from onnx.external_data_helper import uses_external_data
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"exporting to ONNX needs PyTorch, transformers and onnx: {install_command('export')}") from exc

__all__ = ["export_fp32_graphs", "has_external_data"]


class _EncoderGraph(torch.nn.Module):
    """``pixel_values [1, 3, 1024, 1024]`` → the features the torch backend caches (see ``encoder_outputs``)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model: Any = model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.model.get_image_embeddings(pixel_values)
        return tuple(features) if isinstance(features, (list, tuple)) else (features,)


class _DecoderGraph(torch.nn.Module):
    """Prompt encoder + mask decoder for N prompts of T labelled points each (inputs: ``decoder_inputs``).

    The N prompts run as N image-batch rows of one prompt each, so every prompt may carry its own mask input; the
    per-row arithmetic is the torch model's own.
    """

    point_table: torch.Tensor
    image_pe: torch.Tensor

    def __init__(self, model: torch.nn.Module, family: Family, multimask: bool) -> None:
        super().__init__()
        self.model: Any = model
        self.family = family
        self.multimask = multimask
        sam: Any = model
        encoder = sam.prompt_encoder
        if family == "sam1":
            table = torch.cat([embedding.weight for embedding in encoder.point_embed], dim=0)
        else:
            table = encoder.point_embed.weight
        # labels 0..3: background, foreground, box top-left, box bottom-right
        self.register_buffer("point_table", table.detach().clone(), persistent=False)
        self.register_buffer("image_pe", sam.get_image_wide_positional_embeddings().detach().clone(), persistent=False)

    def _sparse(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        encoder = self.model.prompt_encoder
        normalised = (coords + 0.5) / encoder.input_image_size  # pixel centres, then [0, 1]
        embedded = encoder.shared_embedding(normalised[None])[0]  # [N, T, C]
        label = labels[..., None]
        embedded = torch.where(label == -1, encoder.not_a_point_embed.weight, embedded)
        for index in range(self.point_table.shape[0]):
            embedded = embedded + (label == index).to(embedded.dtype) * self.point_table[index]
        return embedded

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        *features, coords, labels, mask_input, has_mask_input = inputs
        encoder = self.model.prompt_encoder
        count = coords.shape[0]
        sparse = self._sparse(coords, labels)
        no_mask = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dense = encoder.mask_embed(mask_input) * has_mask_input + (1 - has_mask_input) * no_mask
        kwargs: dict[str, Any] = {
            "image_embeddings": features[-1].expand(count, -1, -1, -1),
            "image_positional_embeddings": self.image_pe.expand(count, -1, -1, -1),
            "sparse_prompt_embeddings": sparse[:, None],
            "dense_prompt_embeddings": dense,
            "multimask_output": self.multimask,
        }
        if self.family == "sam2":
            kwargs["high_resolution_features"] = [f.expand(count, -1, -1, -1) for f in features[:-1]]
        masks, scores = self.model.mask_decoder(**kwargs)[:2]
        return masks[:, 0], scores[:, 0]


def _trace(module: torch.nn.Module, args: tuple[torch.Tensor, ...], path: Path, opset: int, **names: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and legacy-exporter notices; the graphs are checked by tests
        torch.onnx.export(module.eval(), args, str(path), dynamo=False, opset_version=opset, **names)
    _fold_constants(path)


def has_external_data(path: Path) -> bool:
    """Whether the graph at ``path`` keeps (some of) its weights in separate files (models over 2 GiB)."""
    proto = onnx.load(str(path), load_external_data=False)
    return any(uses_external_data(tensor) for tensor in proto.graph.initializer)


def _fold_constants(path: Path) -> None:
    """Fold the traced shape arithmetic once, at export time, with ONNX Runtime's basic (EP-independent) passes.

    Hiera's windowed position embedding traces to If/Tile subgraphs over constant shapes; folding them here turns
    2,400 encoder nodes into about 500 and spares every later session load that work (and its shape warnings).
    Graphs stored with external data are left as traced.
    """
    if has_external_data(path):
        return
    folded = path.with_name(f"folded-{path.name}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(folded)
    options.log_severity_level = 3  # the If branches of traced shape code disagree on rank before folding
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    os.replace(folded, path)


def export_fp32_graphs(
    model: torch.nn.Module, family: Family, directory: Path, opset: int, *, batched_encoder: bool = False
) -> dict[str, Path]:
    """Trace the three graphs into ``directory`` as fp32 ONNX files.

    ``batched_encoder``: the encoder's first axis (``pixel_values`` and every feature) is dynamic, ``B`` images per
    call, as Triton's dynamic batcher needs (``export-triton``); otherwise it is fixed to 1.
    """
    paths = {name: directory / file for name, file in GRAPH_NAMES.items()}
    pixels = torch.zeros(2 if batched_encoder else 1, 3, 1024, 1024)
    encoder_names = list(encoder_outputs(family))
    batch_axes = {name: {0: "batch"} for name in ["pixel_values", *encoder_names]} if batched_encoder else None
    with torch.no_grad():
        features = _EncoderGraph(model)(pixels[:1])
        _trace(
            _EncoderGraph(model),
            (pixels,),
            paths["encoder"],
            opset,
            input_names=["pixel_values"],
            output_names=encoder_names,
            dynamic_axes=batch_axes,
        )
        # example sizes differ from every fixed dimension so that no dynamic axis is specialised by accident
        coords = torch.tensor([[[100.0, 200.0], [300.0, 400.0], [0.0, 0.0]]] * 2)
        labels = torch.tensor([[1, 2, 3], [0, 1, -1]])
        mask_size = 4 * int(features[-1].shape[-1])  # the decoder's logits: 4 × the embedding grid (256 for Meta's)
        prompt = (coords, labels, torch.zeros(2, 1, mask_size, mask_size), torch.ones(1))
        dynamic = {
            "point_coords": {0: "num_prompts", 1: "num_points"},
            "point_labels": {0: "num_prompts", 1: "num_points"},
            "mask_input": {0: "num_mask_inputs"},
            "low_res_logits": {0: "num_prompts"},
            "iou_scores": {0: "num_prompts"},
        }
        for name, multimask in (("decoder_single", False), ("decoder_multi", True)):
            _trace(
                _DecoderGraph(model, family, multimask),
                (*features, *prompt),
                paths[name],
                opset,
                input_names=list(decoder_inputs(family)),
                output_names=list(DECODER_OUTPUTS),
                dynamic_axes=dynamic,
            )
    return paths
