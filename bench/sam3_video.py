"""SAM 3 text-prompted video tracking: ours (``Segmentor.track`` with ``{"frame": 0, "text": ...}``) vs Meta's
``Sam3VideoInference`` (``add_prompt`` + ``propagate_in_video``), same weights, same clip, same phrase.

A full-size SAM 3 cannot be downloaded here (gated) and would take minutes per frame on 2 cores: both sides run the
reduced random-weight model of the parity tests (tests/sam3_video_fixture.py: 2-block ViT, 2-layer text encoder,
full-size detector and tracker at 1008 px) on its 2-frame clip, in fp32 on the CPU, in alternating rounds in one
process. Our side includes decoding and preparing the frames and the post-processing to RLE; Meta's gets prepared
pixels. The model is loaded once per side before the rounds.

    PYTHONPATH=. python -m bench.sam3_video [--objects 12] [--rounds 3]

Prints each round's seconds per clip, the median and fastest ratio (Meta / ours), the instances per frame, the load
average and the CPU flags.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=12, help="first-frame detections to calibrate for (12 or 30)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from perceptra_seg import Segmentor
    from perceptra_seg.hardware import cpu_features
    from tests.reference_sam3_video import run_reference_video
    from tests.sam3_video_fixture import HEIGHT, PHRASE, WIDTH, build_calibrated_model, reference_pixels

    model, case = build_calibrated_model(Path(tempfile.mkdtemp()), args.objects)
    pixels = reference_pixels(case.frames)
    seg = Segmentor(config=case.config)

    def meta() -> dict[int, int]:
        answers = run_reference_video(model, pixels, HEIGHT, WIDTH, PHRASE)
        return {frame: len(answer["out_obj_ids"]) for frame, answer in answers.items()}

    def ours() -> dict[int, int]:
        stream = seg.track(case.frames, [{"frame": 0, "text": PHRASE}], output_formats=["rle"])
        return {frame: len(results) for frame, results in stream}

    def timed(run: object) -> tuple[float, dict[int, int]]:
        start = time.perf_counter()
        counts = run()  # type: ignore[operator]
        return time.perf_counter() - start, counts

    timed(ours)  # loads our video model once; Meta's model is already built
    meta_s, ours_s = [], []
    for _ in range(args.rounds):
        seconds, meta_counts = timed(meta)
        meta_s.append(seconds)
        seconds, our_counts = timed(ours)
        ours_s.append(seconds)
    seg.close()
    cpu = cpu_features()
    print(f"load {os.getloadavg()[0]:.2f}, CPU {cpu.model}, flags {' '.join(cpu.names())}")
    print(f"instances per frame: Meta {meta_counts}, ours {our_counts}")
    print("Meta s:", [round(s, 2) for s in meta_s], " ours s:", [round(s, 2) for s in ours_s])
    print(
        f"ratio (Meta / ours) median {statistics.median(meta_s) / statistics.median(ours_s):.2f}x, "
        f"fastest {min(meta_s) / min(ours_s):.2f}x"
    )


if __name__ == "__main__":
    main()
