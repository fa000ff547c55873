"""SAM 2 image encoder with and without the trimmed Hiera attention (``perceptra_seg.backends.hiera_attention``).

transformers' Hiera blocks compute a ``softmax(q·kᵀ)`` they discard; the trimmed forward skips it. This bench times
``get_image_embeddings`` on one random-weight model (fp32, 1024×1024 input) with transformers' forward and with the
trimmed one, in alternating rounds in one process, and checks the outputs are bit-identical.

    python -m bench.hiera_attention [--variant hiera_tiny] [--rounds 4]

Prints each round's seconds, the median and fastest ratio (transformers / trimmed), the load average and CPU flags.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import torch

from perceptra_seg.backends.hiera_attention import multiscale_attention_forward
from perceptra_seg.backends.torch_backend import build_model
from perceptra_seg.hardware import cpu_features
from perceptra_seg.registry import architecture_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="hiera_tiny")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    from transformers.models.sam2.modeling_sam2 import Sam2MultiScaleAttention

    torch.manual_seed(0)
    model = build_model("sam2", architecture_config("sam2", args.variant)).eval()
    pixels = torch.randn(1, 3, 1024, 1024)
    blocks = [m for m in model.modules() if isinstance(m, Sam2MultiScaleAttention)]
    original = [m.forward for m in blocks]
    trimmed = [multiscale_attention_forward(m) for m in blocks]

    def timed(forwards: list[Any]) -> tuple[float, list[torch.Tensor]]:
        for module, forward in zip(blocks, forwards, strict=True):
            setattr(module, "forward", forward)  # noqa: B010 (an instance attribute, not the class's method)
        with torch.inference_mode():
            start = time.perf_counter()
            out = model.get_image_embeddings(pixels)  # type: ignore[operator]
            return time.perf_counter() - start, list(out)

    timed(original)  # warm-up
    plain_s, trim_s = [], []
    for _ in range(args.rounds):
        seconds, plain_out = timed(original)
        plain_s.append(seconds)
        seconds, trim_out = timed(trimmed)
        trim_s.append(seconds)
    identical = all(torch.equal(a, b) for a, b in zip(plain_out, trim_out, strict=True))
    cpu = cpu_features()
    print(f"variant {args.variant}, load {os.getloadavg()[0]:.2f}, CPU {cpu.model}, flags {' '.join(cpu.names())}")
    print("transformers s:", [round(s, 2) for s in plain_s], " trimmed s:", [round(s, 2) for s in trim_s])
    print(
        f"ratio median {statistics.median(plain_s) / statistics.median(trim_s):.2f}x, "
        f"fastest {min(plain_s) / min(trim_s):.2f}x, outputs bit-identical: {identical}"
    )


if __name__ == "__main__":
    main()
