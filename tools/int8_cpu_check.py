"""INT8 on another CPU class: masks of an export's graphs quantised two ways, against the fp32 graphs, on one photo.

    python tools/int8_cpu_check.py EXPORT_DIR
    qemu-x86_64 -cpu Haswell "$(command -v python)" tools/int8_cpu_check.py EXPORT_DIR   # an AVX2-only CPU

``EXPORT_DIR`` is an fp32 export (``segmentor-cli export-onnx``). The encoder and single-mask decoder are quantised
into a temporary folder the way exports are (uint8 weights) and the way they were before (int8 weights), then all
three run on scikit-image's coffee photo with a box, two points and box + point prompts. Printed: the CPU features
numpy detects (under QEMU ``-cpu Haswell``: AVX2 without AVX-512 or VNNI; QEMU 7.2 or later emulates AVX2) and, per
prompt, the IoU of the low-resolution mask with the fp32 graphs' mask. On an AVX2-only CPU the int8-weight graphs
saturate (IoU drops), the uint8 ones give what they give on a VNNI CPU (docs/onnx.md, "INT8 on every CPU").
Emulation is slow (minutes for the tests' reduced SAM 1): use a small model.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic

from perceptra_seg.backends.base import PromptBatch
from perceptra_seg.backends.onnx_backend import decoder_feed
from perceptra_seg.backends.onnx_manifest import encoder_outputs, read_manifest
from perceptra_seg.preprocessing import preprocess_image, transform_coords

#: (name, box x1 y1 x2 y2 or None, points (x, y, label)), in fractions of the image's width and height
PROMPTS = [
    ("box", (0.25, 0.2, 0.7, 0.85), []),
    ("points", None, [(0.45, 0.5, 1), (0.3, 0.3, 0)]),
    ("box+point", (0.25, 0.2, 0.7, 0.85), [(0.45, 0.5, 1)]),
]


def _cpu() -> str:
    from numpy._core._multiarray_umath import __cpu_features__ as features

    names = ("AVX2", "AVX512F", "AVX512VNNI", "AVX512BF16")
    return ", ".join(f"{name} {'yes' if features.get(name) else 'no'}" for name in names)


def _masks(encoder: Path, decoder: Path, family: str, image: np.ndarray) -> list[np.ndarray]:
    """Low-resolution masks ``[S, S]`` (logits > 0), one per prompt of :data:`PROMPTS`."""
    session = ort.InferenceSession(str(encoder), providers=["CPUExecutionProvider"])
    pixels, _ = preprocess_image(image, family)  # type: ignore[arg-type]
    features = dict(zip(encoder_outputs(family), session.run(None, {"pixel_values": pixels}), strict=True))  # type: ignore[arg-type]
    decode = ort.InferenceSession(str(decoder), providers=["CPUExecutionProvider"])
    mask_size = int(decode.get_inputs()[-2].shape[-1])
    height, width = image.shape[:2]
    scale = np.array([width, height], dtype=np.float32)
    masks = []
    for _, box, points in PROMPTS:

        def frame(xy: np.ndarray) -> np.ndarray:
            return transform_coords(xy * scale, (height, width), family).astype(np.float32)  # type: ignore[arg-type]

        batch = PromptBatch(
            points=frame(np.array([[p[:2] for p in points]], dtype=np.float32)) if points else None,
            labels=np.array([[p[2] for p in points]], dtype=np.int64) if points else None,
            boxes=frame(np.array(box, dtype=np.float32).reshape(1, 2, 2)).reshape(1, 4) if box else None,
        )
        feed = {**features, **decoder_feed(batch, family, mask_size)}  # type: ignore[arg-type]
        masks.append(decode.run(["low_res_logits"], feed)[0][0, 0] > 0)
    return masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export_dir", type=Path, help="an fp32 export (manifest.json and its graphs)")
    directory = parser.parse_args().export_dir
    manifest = read_manifest(directory)
    if manifest.precision != "fp32":
        parser.error(f"{directory} is a {manifest.precision} export; give an fp32 one")
    from skimage import data

    image = data.coffee()
    graphs = {name: directory / manifest.graphs[name].file for name in ("encoder", "decoder_single")}
    print(f"CPU (as numpy detects it): {_cpu()}", flush=True)
    reference = _masks(graphs["encoder"], graphs["decoder_single"], manifest.family, image)
    with tempfile.TemporaryDirectory() as scratch:
        for label, weight_type in (
            ("uint8 weights (exports now)", QuantType.QUInt8),
            ("int8 weights (exports before)", QuantType.QInt8),
        ):
            quantised = {}
            for name, path in graphs.items():
                quantised[name] = Path(scratch) / f"{weight_type.name}-{path.name}"
                quantize_dynamic(
                    path, quantised[name], op_types_to_quantize=["MatMul"], per_channel=True, weight_type=weight_type
                )
            masks = _masks(quantised["encoder"], quantised["decoder_single"], manifest.family, image)
            ious = [
                np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1)
                for a, b in zip(reference, masks, strict=True)
            ]
            scores = ", ".join(f"{name} {iou:.3f}" for (name, _, _), iou in zip(PROMPTS, ious, strict=True))
            print(f"{label}: low-res mask IoU vs fp32: {scores}", flush=True)


if __name__ == "__main__":
    main()
