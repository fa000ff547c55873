"""SAM 3 rows of ``bench.more_models``: encoder time, one-phrase and one-box latency, ours vs Meta's ``sam3``.

A full-size SAM 3 (848M parameters, 40-75 s per encoding on 2 cores) is too slow for this machine: the rows use the
reduced random-weight model of the parity tests (2-block ViT, 2-layer text encoder, full-size detector and heads),
built with Meta's code and saved as Meta saves ``sam3.pt``. Both sides run the same module weights in fp32 on CPU:

* encoder: ours ``Segmentor.embed`` on cache-missing copies of the photo vs Meta's ``set_image`` (PIL image);
* one phrase: ours ``Segmentor.segment_text`` on the cached embedding (RLE output, threshold 0.5) vs Meta's
  ``set_text_prompt`` (detector, mask upsampling, threshold; tensors);
* one box (the tracker head; the model carries Meta's tracker, so both encoders also run the tracker's neck): ours
  ``Segmentor.segment`` on the cached embedding (RLE output, one mask) vs Meta's ``Sam3Image.predict_inst``
  (``multimask_output=False``; numpy masks).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

PHRASE = "coffee cup"
BOX = (150.0, 80.0, 420.0, 340.0)  # XYXY, as bench.more_models' box prompt


def measure(
    image: np.ndarray, repeats: int, timed: Callable[..., tuple[float, float]], copies: list[np.ndarray]
) -> list[tuple[str, tuple[float, float], tuple[float, float]]]:
    """``[(step, reference (median, min), ours (median, min)), ...]`` for the encoder, one phrase and one box."""
    import torch
    from PIL import Image

    from perceptra_seg import Segmentor
    from tests.reference_sam3 import attach_tracker, build_reduced_sam3, import_sam3, on_cpu, write_bpe_file
    from tests.sam3_fixture import SMALL_SAM3_ARCHITECTURE, fill_text_encoder_empties

    sam3 = import_sam3()
    folder = Path(tempfile.mkdtemp())
    bpe = write_bpe_file(folder / "bpe_simple_vocab_16e6.txt.gz")
    torch.manual_seed(3)
    model = build_reduced_sam3(sam3, bpe)
    fill_text_encoder_empties(model)
    attach_tracker(sam3, model)
    path = folder / "sam3.pt"
    inst = "inst_interactive_predictor."
    detector = {"detector." + k: v for k, v in model.state_dict().items() if not k.startswith(inst)}
    tracker = {"tracker." + k: v for k, v in model.inst_interactive_predictor.model.state_dict().items()}
    torch.save({"model": {**detector, **tracker}}, path)
    ours = Segmentor(
        {
            "model": {"name": "sam3", "checkpoint_path": str(path), "architecture": SMALL_SAM3_ARCHITECTURE},
            "runtime": {"device": "cpu", "precision": "fp32"},
        }
    )
    processor = sam3.processor.Sam3Processor(model, device="cpu", confidence_threshold=0.5)
    pictures = [Image.fromarray(c) for c in copies]
    state: dict[str, Any] = {}
    with on_cpu():
        ref_enc = timed(lambda i: state.update(processor.set_image(pictures[i])), repeats)
        our_enc = timed(lambda i: ours.embed(copies[i]), repeats)
        handle = ours.embed(image)
        state.update(processor.set_image(Image.fromarray(image)))
        ref_one = timed(lambda i: processor.set_text_prompt(PHRASE, state), repeats)
        our_one = timed(lambda i: ours.segment_text(handle, PHRASE, output_formats=["rle"]), repeats)
        box = np.array(BOX, dtype=np.float32)
        ref_box = timed(lambda i: model.predict_inst(state, box=box, multimask_output=False), repeats * 4)
        our_box = timed(lambda i: ours.segment(handle, boxes=[BOX], output_formats=["rle"]), repeats * 4)
    ours.close()
    return [("encoder", ref_enc, our_enc), ("one phrase", ref_one, our_one), ("one box prompt", ref_box, our_box)]
