"""A reduced random-weight SAM 3 in Meta's format, built once per test session with Meta's own ``sam3`` code.

The model (:func:`tests.reference_sam3.build_reduced_sam3`: 2-block ViT, 2-layer text encoder, full-size detector)
gets finite values for its text encoder's ``torch.empty`` parameters, Meta's interactive tracker and SAM 2-style neck
(:func:`tests.reference_sam3.attach_tracker`, for box / point prompts) and its scoring and mask heads spread
(:func:`spread_heads`), then is saved as Meta saves ``sam3.pt`` (``{"model": {"detector.*": ..., "tracker.*":
...}}``) beside a small CLIP-format BPE vocabulary. The reference's own answers on the coffee photo for two phrases
(threshold 0: all 200 queries) are recorded for the parity tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from .reference_sam3 import attach_tracker, build_reduced_sam3, import_sam3, on_cpu, write_bpe_file

PHRASES = ("coffee cup", "red car")
#: One positive exemplar box (XYXY pixels of the coffee photo), sent without a phrase (Meta then uses "visual").
EXEMPLAR = (120.0, 60.0, 330.0, 260.0)
#: ``model.architecture`` that describes the reduced model to our loader.
SMALL_SAM3_ARCHITECTURE: dict[str, Any] = {
    "vision_config": {
        "backbone_config": {
            "hidden_size": 64,
            "intermediate_size": 296,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "global_attn_indexes": [1],
        }
    },
    "text_config": {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2},
}


def fill_text_encoder_empties(model: Any) -> None:
    """Give the text encoder's two ``torch.empty`` parameters (arbitrary memory, sometimes inf) finite values."""
    encoder = model.backbone.language_backbone.encoder
    with torch.no_grad():
        encoder.positional_embedding.normal_(0.0, 0.01)
        encoder.text_projection.normal_(0.0, encoder.width**-0.5)


def _centred(hidden: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean of all runs' rows and the projection that removes the directions between the runs' means."""
    means = torch.stack([h.mean(0) for h in hidden])
    mean = means.mean(0)
    basis, _ = torch.linalg.qr((means - mean).t())  # [D, runs]: spans the differences between runs
    return mean, torch.eye(mean.shape[0]) - basis @ basis.t()


def spread_heads(model: Any, runs: list[Any], *, score_std: float = 2.0, mask_std: float = 24.0) -> None:
    """Undo the random-weight collapse of the 200 object queries (values only; the layout stays Meta's).

    With random weights every query ends up nearly the same vector, so every instance of a phrase gets the same
    score and mask, and phrases differ from each other far more than queries do. Each of ``runs`` runs the reference
    once (one image, one phrase) while hooks record the last decoder layer's queries (input of the scoring head's
    ``hs_proj``), the projected phrase, the mask-embedding MLP's last hidden layer and the per-pixel instance
    embeddings. Each head's last linear layer is then centred on the mean query, blind to the directions that
    separate the runs' means, and scaled so that its logits vary across queries with the given standard deviation:
    every phrase's scores spread around the same midpoint and every query gets its own mask.
    """
    scoring = model.dot_prod_scoring
    head = model.segmentation_head
    embed_out = head.mask_predictor.mask_embed.layers[-1]
    seen: dict[str, list[torch.Tensor]] = {"queries": [], "phrase": [], "mask_hidden": [], "pixels": []}

    def before(name: str) -> Any:
        def hook(_: Any, inputs: tuple[torch.Tensor, ...]) -> None:
            seen[name].append(inputs[0].detach())

        return hook

    def after(name: str) -> Any:
        def hook(_: Any, __: Any, output: torch.Tensor) -> None:
            seen[name].append(output.detach())

        return hook

    handles = [
        scoring.hs_proj.register_forward_pre_hook(before("queries")),
        scoring.prompt_proj.register_forward_hook(after("phrase")),
        embed_out.register_forward_pre_hook(before("mask_hidden")),
        head.instance_seg_head.register_forward_hook(after("pixels")),
    ]
    try:
        for run in runs:
            run()
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        queries = [q[-1].reshape(-1, q.shape[-1]) for q in seen["queries"]]  # last decoder layer, [Q, D] per run
        mean, keep = _centred(queries)
        weight = scoring.hs_proj.weight @ keep
        logits = torch.cat(
            [(q - mean) @ weight.t() @ p.reshape(-1) for q, p in zip(queries, seen["phrase"], strict=True)]
        )
        scoring.hs_proj.weight.copy_(weight * (score_std / float(logits.std() * scoring.scale)))
        scoring.hs_proj.bias.copy_(-(scoring.hs_proj.weight @ mean))

        hidden = [h.reshape(-1, h.shape[-1]) for h in seen["mask_hidden"]]
        mean, keep = _centred(hidden)
        weight = embed_out.weight @ keep
        logits = torch.cat(
            [
                ((h - mean) @ weight.t() @ p.reshape(p.shape[1], -1)).flatten()
                for h, p in zip(hidden, seen["pixels"], strict=True)
            ]
        )
        embed_out.weight.copy_(weight * (mask_std / float(logits.std())))
        embed_out.bias.copy_(-(embed_out.weight @ mean))


@dataclass
class SmallSam3:
    """The reference model and processor, the checkpoint file, our config, and the reference's answers.

    ``answers[phrase]`` is ``(scores [200], masks bool [200, H, W])`` on the coffee photo; ``answers["exemplar"]``
    the same for :data:`EXEMPLAR` alone. ``state`` is the processor's state for the coffee photo (for
    ``model.predict_inst``).
    """

    model: Any
    processor: Any
    path: Path
    config: dict[str, Any]
    answers: dict[str, tuple[torch.Tensor, torch.Tensor]]
    state: dict[str, Any] = field(default_factory=dict)


def reference_answer(processor: Any, state: dict[str, Any], prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Meta's ``Sam3Processor`` answer (threshold 0 keeps every query) for a phrase or ``"exemplar"`` (the
    :data:`EXEMPLAR` box alone): scores ``[200]``, masks ``[200, H, W]``."""
    processor.reset_all_prompts(state)
    with on_cpu():
        if prompt == "exemplar":
            height, width = state["original_height"], state["original_width"]
            x1, y1, x2, y2 = EXEMPLAR
            box = [(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height]
            state = processor.add_geometric_prompt(box, True, state)
        else:
            state = processor.set_text_prompt(prompt, state)
    return state["scores"].clone(), state["masks"][:, 0].clone()


@pytest.fixture(scope="session")
def small_sam3(tmp_path_factory: pytest.TempPathFactory, photos: dict[str, Any]) -> SmallSam3:
    sam3 = import_sam3()
    folder = tmp_path_factory.mktemp("small_sam3")
    bpe = write_bpe_file(folder / "bpe_simple_vocab_16e6.txt.gz")
    torch.manual_seed(3)
    model = build_reduced_sam3(sam3, bpe)
    fill_text_encoder_empties(model)
    attach_tracker(sam3, model)
    processor = sam3.processor.Sam3Processor(model, device="cpu", confidence_threshold=0.0)
    with on_cpu():
        state = processor.set_image(Image.fromarray(photos["coffee"]))  # PIL: Meta misreads a numpy image's size
    prompts = (*PHRASES, "exemplar")
    spread_heads(model, [lambda p=p: reference_answer(processor, state, p) for p in prompts])  # type: ignore[misc]
    answers = {prompt: reference_answer(processor, state, prompt) for prompt in prompts}
    path = folder / "sam3.pt"
    inst = "inst_interactive_predictor."
    detector = {"detector." + k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith(inst)}
    tracker = {"tracker." + k: v.contiguous() for k, v in model.inst_interactive_predictor.model.state_dict().items()}
    torch.save({"model": {**detector, **tracker}}, path)
    config = {
        "model": {"name": "sam3", "checkpoint_path": str(path), "architecture": SMALL_SAM3_ARCHITECTURE},
        "runtime": {"device": "cpu", "precision": "fp32"},
    }
    return SmallSam3(model, processor, path, config, answers, state)
