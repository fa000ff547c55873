"""Train the packaged demo model: a tiny SAM 1 that segments synthetic shapes, on the CPU, deterministically.

    python tools/train_demo_model.py --out perceptra_seg/assets/sam_demo_tiny.pth

The network is ``transformers.SamModel`` built from ``architecture_config("sam1", "tiny")`` exactly as the torch
backend builds it (SAM 1's modules made small: a 3-block ViT on 32-pixel patches, so a 32×32 embedding grid and
128×128 logits, and a 64-wide decoder), fed by the package's own preprocessing (:func:`preprocess_image`,
:func:`transform_coords`), and its logits are upsampled to the image frame the way inference does (bilinear,
half-pixel centres, crop of the padding), so training and inference share one geometry. Training is data
parallel over ``--workers`` processes (default 2, one per core of the reference machine): at each step every
worker draws one synthetic scene (:mod:`perceptra_seg.demo.scenes`), encodes it once, and decodes box prompts
(tight or jittered) and point prompts (1–3 positive/negative clicks) for its objects; the workers' gradients are
averaged before the update. Loss: BCE + dice on the image-frame logits, plus
the MSE of the IoU head against the IoU actually reached. The first steps see a blank image embedding, so the
decoder first learns where a prompt is, then what the image holds there.

The weights are saved in Meta's original SAM 1 key layout (:func:`perceptra_seg.conversion.sam1_to_meta`), so
the shipped file goes through the same loader as ``sam_vit_b_01ec64.pth``; at the end the file is loaded through
``Segmentor(model="demo")`` and its outputs are checked against the trained network's, then scored on held-out
scenes. Same seed, same worker and thread counts → the same weights, tensor for tensor (checked by retraining: the
files differ only in the serialization id torch writes into every save).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from perceptra_seg.backends.torch_backend import build_model
from perceptra_seg.conversion import convert_state_dict, sam1_to_meta
from perceptra_seg.demo.evaluation import PromptKind, evaluate, mean_iou, object_prompts, segmentor_predictor
from perceptra_seg.demo.sampling import clicks, jittered_box
from perceptra_seg.demo.scenes import (
    HELDOUT_SEED,
    Scene,
    generate_scene,
    generate_scenes,
    random_size,
    sample_scene,
)
from perceptra_seg.preprocessing import (
    INPUT_SIZE,
    bilinear_taps,
    preprocess_image,
    resized_input_size,
    transform_coords,
)
from perceptra_seg.registry import architecture_config

POSITIONAL_SCALE = 0.5


def new_model(seed: int) -> Any:
    """The untrained demo network, initialised as Meta initialises SAM: PyTorch's defaults.

    transformers' own initialisation is meant to be overwritten by a checkpoint and does not train well from
    scratch: the vision encoder's weights get std 1e-10 (its config's ``initializer_range``), which hides the image
    from the decoder, and the prompt embeddings std 0.02 instead of ``nn.Embedding``'s 1, which makes box corners
    and point labels nearly invisible next to the positional encoding. Every module therefore gets its PyTorch
    default (``reset_parameters``); the absolute and relative positional embeddings stay zero as in Meta's code.
    The Fourier positional matrix is never trained, as in Meta's code, but drawn with std
    :data:`POSITIONAL_SCALE` instead of 1: the smoother positional kernel lets a decoder this small learn where a
    prompt is in far fewer steps (measured: the decoder starts localising boxes ~2x sooner than with std 1).
    """
    torch.manual_seed(seed)
    model: Any = build_model("sam1", architecture_config("sam1", "tiny"))
    for module in model.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
    matrix = model.shared_image_embedding.positional_embedding
    with torch.no_grad():
        matrix.copy_(POSITIONAL_SCALE * torch.randn(matrix.shape, generator=torch.Generator().manual_seed(seed)))
        model.prompt_encoder.shared_embedding.positional_embedding.copy_(matrix)
    for embedding in (model.shared_image_embedding, model.prompt_encoder.shared_embedding):
        embedding.positional_embedding.requires_grad_(False)
    return model


# ---------------------------------------------------------------------------------------------------- training


def _bilinear_matrix(out_len: int, in_len: int) -> np.ndarray:
    """``[out_len, in_len]`` weights of the 1-D bilinear resize inference applies to logits, from inference's own
    taps (:func:`bilinear_taps`); the weights are recomputed in float64, as the shipped checkpoint was trained."""
    low, high, _ = bilinear_taps(out_len, in_len, 0, out_len)
    source = np.maximum((np.arange(out_len) + 0.5) * (in_len / out_len) - 0.5, 0.0)
    weight = source - low
    matrix = np.zeros((out_len, in_len))
    np.add.at(matrix, (np.arange(out_len), low), 1.0 - weight)
    np.add.at(matrix, (np.arange(out_len), high), weight)
    return matrix


def frame_matrices(
    input_size: tuple[int, int], size: tuple[int, int], low_res: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column matrices ``[H, low_res]``, ``[W, low_res]`` of inference's logit path: ``low_res`` → 1024,
    crop to the resized image ``input_size``, → ``size``. Both steps are linear, so ``rows @ logits @ cols.T``
    equals it."""
    up = _bilinear_matrix(INPUT_SIZE, low_res)
    rows = _bilinear_matrix(size[0], input_size[0]) @ up[: input_size[0]]
    cols = _bilinear_matrix(size[1], input_size[1]) @ up[: input_size[1]]
    return torch.from_numpy(rows.astype(np.float32)), torch.from_numpy(cols.astype(np.float32))


def to_image_frame(logits: torch.Tensor, input_size: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """``[N, L, L]`` low-resolution logits (``L`` = 128 for the demo model) → ``[N, H, W]`` logits in the image
    frame, as inference computes them."""
    rows, cols = frame_matrices(input_size, size, int(logits.shape[-1]))
    return rows @ logits @ cols.T


def mask_loss(
    logits: torch.Tensor, target: torch.Tensor, iou_pred: torch.Tensor, balance: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """BCE + dice + IoU-head MSE for ``[N, H, W]`` logits; returns the loss and the IoU of each thresholded mask.

    ``balance`` in ``[0, 1]`` blends plain BCE with class-balanced BCE (object and background pixels weighted half
    each). Early in training the balanced term keeps the decoder out of the "always empty" minimum that plain BCE
    falls into (objects cover a few percent of an image); it is annealed to 0 so the final masks are unbiased.
    """
    raw = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1)
    fg = target.flatten(1)
    balanced = 0.5 * (raw * fg).sum(1) / fg.sum(1).clamp(min=1.0) + 0.5 * (raw * (1 - fg)).sum(1) / (1 - fg).sum(
        1
    ).clamp(min=1.0)
    bce = (1.0 - balance) * raw.mean() + balance * balanced.mean()
    prob = torch.sigmoid(logits).flatten(1)
    flat = target.flatten(1)
    dice = 1.0 - (2.0 * (prob * flat).sum(1) + 1.0) / (prob.sum(1) + flat.sum(1) + 1.0)
    with torch.no_grad():
        hard = (logits > 0).flatten(1).float()
        iou = (hard * flat).sum(1) / ((hard + flat).clamp(max=1.0).sum(1)).clamp(min=1.0)
    return bce + dice.mean() + F.mse_loss(iou_pred, iou), iou


def train_step(
    model: Any, scene: Scene, rng: np.random.Generator, max_prompts: int, balance: float, blind: bool
) -> dict[str, Any]:
    """Encode one scene, decode box and point prompts for up to ``max_prompts`` objects each; returns the loss.

    ``blind`` replaces the image embedding with zeros, so the decoder can only learn from where the prompts are.
    """
    size = scene.size
    if blind:
        width = model.config.vision_config.output_channels
        grid = model.config.prompt_encoder_config.image_embedding_size
        embedding = torch.zeros(1, width, grid, grid)
        input_size = resized_input_size(size, "sam1")
    else:
        pixels, input_size = preprocess_image(scene.image, "sam1")
        embedding = model.vision_encoder(torch.from_numpy(pixels)).last_hidden_state
    masks = [o.mask for o in scene.objects]
    total = torch.zeros(())
    ious: dict[str, torch.Tensor] = {}
    for kind in ("box", "point"):
        chosen = rng.permutation(len(masks))[:max_prompts]
        targets = torch.from_numpy(np.stack([masks[i] for i in chosen]).astype(np.float32))
        if kind == "box":
            boxes = np.stack([jittered_box(rng, masks[i]) for i in chosen]).reshape(-1, 2, 2)
            inputs = {"input_boxes": torch.from_numpy(transform_coords(boxes, size, "sam1").reshape(1, -1, 4))}
        else:
            count = int(rng.choice([1, 1, 2, 3]))
            pairs = [clicks(rng, masks[i], count) for i in chosen]
            points = transform_coords(np.stack([p for p, _ in pairs]), size, "sam1")
            inputs = {
                "input_points": torch.from_numpy(points)[None],
                "input_labels": torch.from_numpy(np.stack([lab for _, lab in pairs]).astype(np.int64))[None],
            }
        output = model(image_embeddings=embedding, multimask_output=False, **inputs)
        logits = to_image_frame(output.pred_masks[0, :, 0], input_size, size)
        loss, ious[kind] = mask_loss(logits, targets, output.iou_scores[0, :, 0], balance)
        total = total + loss
    return {"loss": total, "box_iou": ious["box"], "point_iou": ious["point"]}


def learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up to ``peak``, then cosine decay to 2 % of it."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(steps - warmup, 1)
    return peak * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _average_gradients(parameters: list[torch.nn.Parameter], workers: int) -> None:
    """Replace each gradient by its mean over the ``workers`` processes (one flat all-reduce).

    Parameters without a gradient (the encoder during blind steps) are skipped; every worker skips the same ones.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= workers
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def _train_worker(rank: int, args: argparse.Namespace) -> Any:
    """The training loop of worker ``rank``: its own scenes, gradients averaged with the other workers."""
    model = new_model(args.seed).train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=args.weight_decay)
    rng = np.random.default_rng(np.random.SeedSequence(args.seed).spawn(args.workers)[rank])
    start = time.monotonic()
    window: dict[str, list[float]] = {"loss": [], "box_iou": [], "point_iou": []}
    total = args.blind_steps + args.steps
    for step in range(total):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, total, args.lr, args.warmup)
        scene = generate_scene(rng, random_size(rng, args.min_side, args.max_side))
        balance = max(0.0, 1.0 - step / (args.balance_until * total))
        result = train_step(model, scene, rng, args.max_prompts, balance, blind=step < args.blind_steps)
        optimizer.zero_grad(set_to_none=True)
        result["loss"].backward()
        if args.workers > 1:
            _average_gradients(parameters, args.workers)
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        window["loss"].append(float(result["loss"].detach()))
        window["box_iou"].extend(result["box_iou"].tolist())
        window["point_iou"].extend(result["point_iou"].tolist())
        if (step + 1) % args.log_every == 0 or step + 1 == total:
            means = torch.tensor([float(np.mean(v)) for v in window.values()], dtype=torch.float64)
            if args.workers > 1:
                dist.all_reduce(means)
                means /= args.workers
            if rank == 0:
                loss, box_iou, point_iou = means.tolist()
                print(
                    f"step {step + 1}/{total}{' (blind)' if step < args.blind_steps else ''}  loss {loss:.3f}"
                    f"  train IoU box {box_iou:.3f} points {point_iou:.3f}"
                    f"  lr {optimizer.param_groups[0]['lr']:.2e}  {time.monotonic() - start:.0f}s",
                    flush=True,
                )
            window = {k: [] for k in window}
    return model.eval()


def _worker_process(rank: int, args: argparse.Namespace, scratch: str) -> None:
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    rendezvous = f"file://{Path(scratch) / 'rendezvous'}"
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=args.workers)
    try:
        torch.save(_train_worker(rank, args).state_dict(), Path(scratch) / f"worker{rank}.pt")
    finally:
        dist.destroy_process_group()


def train(args: argparse.Namespace) -> Any:
    """Train with ``args.workers`` processes (data parallel: each step averages one scene per worker).

    Worker ``r`` draws its scenes from the ``r``-th child of the seed; gradients are averaged with one all-reduce
    per step (gloo, through a file in a temporary directory: no network port), so every worker holds the same
    weights (checked at the end), and the same seed and worker/thread counts give the same weights.
    """
    if args.workers == 1:
        return _train_worker(0, args)
    with tempfile.TemporaryDirectory(prefix="perceptra-train-") as scratch:
        mp.start_processes(_worker_process, args=(args, scratch), nprocs=args.workers, start_method="fork")
        states = [
            torch.load(Path(scratch) / f"worker{rank}.pt", map_location="cpu", weights_only=True)
            for rank in range(args.workers)
        ]
    state = states[0]
    if any(any(not torch.equal(other[k], state[k]) for k in state) for other in states[1:]):
        raise RuntimeError("the training workers ended with different weights")
    model = new_model(args.seed)
    model.load_state_dict(state)
    return model.eval()


# ---------------------------------------------------------------------------------------------------- export


def export(model: Any, path: Path) -> None:
    """Save in Meta's layout and prove the file converts back to exactly the trained tensors."""
    state = model.state_dict()
    meta = sam1_to_meta(state)
    back = convert_state_dict(meta, "sam1")
    if set(back) != set(state) or any(not torch.equal(back[k], state[k]) for k in state):
        raise RuntimeError("the Meta-layout export does not convert back to the trained weights")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(meta, path)
    print(f"saved {path} ({path.stat().st_size / 2**20:.2f} MiB, {sum(v.numel() for v in meta.values()):,} values)")


def write_sample(path: Path) -> None:
    """Write the demo's sample image (:func:`sample_scene`, RGB PNG) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(sample_scene().image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    print(f"saved {path}")


def verify_and_score(model: Any, path: Path, eval_scenes: int) -> None:
    """Load ``path`` through ``Segmentor(model="demo")``, compare with ``model``, then score held-out scenes."""
    from perceptra_seg import Segmentor

    segmentor = Segmentor(model="demo", checkpoint_path=path, device="cpu")
    scene = generate_scenes(HELDOUT_SEED - 1, 1, [(200, 300)])[0]
    prompts = object_prompts(scene, "box")
    results = segmentor.segment(scene.image, prompts=prompts, output_formats=["numpy"])
    pixels, _ = preprocess_image(scene.image, "sam1")
    boxes = transform_coords(np.array([p["box"] for p in prompts]).reshape(-1, 2, 2), scene.size, "sam1")
    with torch.inference_mode():
        embedding = model.vision_encoder(torch.from_numpy(pixels)).last_hidden_state
        input_boxes = torch.from_numpy(boxes.reshape(1, -1, 4))
        direct = model(image_embeddings=embedding, input_boxes=input_boxes, multimask_output=False)
    expected = direct.pred_masks[0, :, 0].numpy()
    difference = max(float(np.abs(r.low_res_logits - e).max()) for r, e in zip(results, expected, strict=True))
    if difference > 1e-3:
        raise RuntimeError(f"the saved checkpoint does not reproduce the trained model (max logit diff {difference})")
    print(f"reloaded through Segmentor(model='demo'): max logit difference {difference:.2e}")
    scenes = generate_scenes(HELDOUT_SEED, eval_scenes, [(256, 256)])  # the quality tests' square set
    predict = segmentor_predictor(segmentor)
    kinds: tuple[PromptKind, ...] = ("box", "point")
    for kind in kinds:
        print(f"held-out mean IoU ({kind}, {eval_scenes} scenes): {mean_iou(evaluate(predict, scenes, kind)):.4f}")


def build_parser() -> argparse.ArgumentParser:
    """The tool's command line; its defaults are the recipe of the shipped checkpoint."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("perceptra_seg/assets/sam_demo_tiny.pth"))
    parser.add_argument("--sample", type=Path, default=Path("perceptra_seg/assets/sample.png"), help="sample image")
    parser.add_argument("--steps", type=int, default=5500, help="training steps on encoded images")
    parser.add_argument(
        "--blind-steps", type=int, default=300, help="first steps with a blank image embedding (prompt geometry only)"
    )
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (AdamW)")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    parser.add_argument(
        "--balance-until", type=float, default=0.5, help="fraction of training over which class balancing fades out"
    )
    parser.add_argument("--max-prompts", type=int, default=8, help="objects prompted per scene, per prompt kind")
    parser.add_argument("--min-side", type=int, default=192, help="smallest longest side of a training image")
    parser.add_argument("--max-side", type=int, default=384, help="largest longest side of a training image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workers", type=int, default=2, help="data-parallel training processes (results depend on it)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (results depend on it)")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--eval-scenes", type=int, default=40, help="held-out scenes scored at the end")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag in ("workers", "threads", "steps", "max_prompts", "log_every", "eval_scenes"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
    if args.blind_steps < 0 or args.warmup < 0:
        parser.error("--blind-steps and --warmup cannot be negative")
    if not 0.0 < args.balance_until <= 1.0 or not args.lr > 0.0 or not args.weight_decay >= 0.0:
        parser.error("--balance-until must be in (0, 1], --lr positive and --weight-decay not negative")
    if not 32 <= args.min_side <= args.max_side:
        parser.error("--min-side must be at least 32 and no larger than --max-side")

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    start = time.monotonic()
    model = train(args)
    print(f"trained {args.blind_steps} blind + {args.steps} steps in {time.monotonic() - start:.0f}s")
    export(model, args.out)
    write_sample(args.sample)
    verify_and_score(model, args.out, args.eval_scenes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
