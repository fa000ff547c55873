"""Import and run Meta's ``sam3`` package (the SAM 3 reference) on a CPU without torchvision, timm or triton.

``sam3`` imports torchvision (``transforms.v2``, ``ops.roi_align``, ``ops.masks_to_boxes``), timm's ViT layers and
triton at module level. :func:`import_sam3` installs test-only stand-ins that reproduce exactly what the image
path uses (torchvision's semantics: a uint8 image resized stays uint8, bilinear with antialias; ``roi_align`` with
torchvision's sampling grid and border rules, transcribed point by point from its CPU kernel), imports the package
and removes the stand-ins again, because transformers probes ``importlib.util.find_spec`` for those names.

:func:`on_cpu` redirects the few hard-coded ``device="cuda"`` tensors and ``pin_memory()`` calls of the reference
while it is built and run. :func:`build_reduced_sam3` builds a small SAM 3 image model with Meta's own classes and
builder functions (reduced ViT and text encoder; the 256-wide detector, geometry encoder and mask head full size);
tests/sam3_fixture.py makes its random weights meaningful and saves it as Meta would.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import math
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------------- torchvision


def _bilinear(feature: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """torchvision's ``bilinear_interpolate`` (roi_align CPU kernel) at one point of a ``[C, H, W]`` map."""
    height, width = feature.shape[-2:]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return torch.zeros(feature.shape[0], dtype=feature.dtype)
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (
        hy * hx * feature[:, y_low, x_low]
        + hy * lx * feature[:, y_low, x_high]
        + ly * hx * feature[:, y_high, x_low]
        + ly * lx * feature[:, y_high, x_high]
    )


def roi_align_reference(
    features: torch.Tensor,
    boxes: list[torch.Tensor] | torch.Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> torch.Tensor:
    """torchvision ``ops.roi_align``, one sample at a time as its CPU kernel computes it (slow, test-only)."""
    pooled_h, pooled_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    if isinstance(boxes, torch.Tensor):
        rois = boxes
    else:
        rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b.float()], 1) for i, b in enumerate(boxes)])
    out = torch.zeros(len(rois), features.shape[1], pooled_h, pooled_w, dtype=features.dtype)
    offset = 0.5 if aligned else 0.0
    for n, roi in enumerate(rois.tolist()):
        feature = features[int(roi[0])]
        x1, y1 = roi[1] * spatial_scale - offset, roi[2] * spatial_scale - offset
        x2, y2 = roi[3] * spatial_scale - offset, roi[4] * spatial_scale - offset
        roi_w, roi_h = x2 - x1, y2 - y1
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / pooled_h, roi_w / pooled_w
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / pooled_h)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / pooled_w)
        count = max(grid_h * grid_w, 1)
        for ph in range(pooled_h):
            for pw in range(pooled_w):
                total = torch.zeros(features.shape[1], dtype=features.dtype)
                for iy in range(grid_h):
                    y = y1 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                    for ix in range(grid_w):
                        x = x1 + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                        total = total + _bilinear(feature, y, x)
                out[n, :, ph, pw] = total / count
    return out


class _RoIAlign(torch.nn.Module):
    def __init__(self, output_size: Any, spatial_scale: float, sampling_ratio: int, aligned: bool = False) -> None:
        super().__init__()
        self.args = (output_size, spatial_scale, sampling_ratio, aligned)

    def forward(self, features: torch.Tensor, rois: Any) -> torch.Tensor:
        return roi_align_reference(features, rois, *self.args)


def _masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    boxes = torch.zeros((masks.shape[0], 4), dtype=torch.float)
    for i, mask in enumerate(masks):
        ys, xs = torch.where(mask != 0)
        if len(xs):
            boxes[i] = torch.tensor([xs.min(), ys.min(), xs.max(), ys.max()], dtype=torch.float)
    return boxes


class _Compose:
    def __init__(self, steps: list[Any]) -> None:
        self.steps = steps

    def __call__(self, x: Any) -> Any:
        for step in self.steps:
            x = step(x)
        return x


class _ToDtype:
    """v2 ``ToDtype(dtype, scale=True)`` between uint8 and float32 images."""

    def __init__(self, dtype: torch.dtype, scale: bool = False) -> None:
        self.dtype, self.scale = dtype, scale

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.dtype:
            return x
        if self.dtype == torch.float32 and x.dtype == torch.uint8:
            return x.float() / 255.0 if self.scale else x.float()
        raise NotImplementedError(f"stand-in ToDtype {x.dtype} -> {self.dtype}")


class _Resize:
    """v2 ``Resize(size)`` on a ``[C, H, W]`` tensor: bilinear with antialias; a uint8 image stays uint8 (torchvision
    calls torch's native uint8 kernel on CPU)."""

    def __init__(self, size: Any, **_: Any) -> None:
        self.size = [int(size[0]), int(size[1])]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x[None], size=self.size, mode="bilinear", align_corners=False, antialias=True)[0]


class _Normalize:
    def __init__(self, mean: list[float], std: list[float]) -> None:
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class _ScriptResize(torch.nn.Module):
    """``transforms.Resize`` as SAM 3's interactive predictor builds it (inside ``torch.jit.script``): bilinear with
    antialias on a float ``[C, H, W]`` image. The parity tests never call it (the image goes through the concept
    processor's transform); it only has to script."""

    def __init__(self, size: Any, **_: Any) -> None:
        super().__init__()
        self.size = [int(size[0]), int(size[1])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x[None], size=self.size, mode="bilinear", align_corners=False, antialias=True)[0]


class _ScriptNormalize(torch.nn.Module):
    """``transforms.Normalize`` as a scriptable module (see :class:`_ScriptResize`)."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.mean = torch.tensor(mean).view(-1, 1, 1)  # plain attributes, as torchvision's (no state-dict entries)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class _ToTensor:
    """``transforms.ToTensor``: an ``[H, W, C]`` uint8 image to float ``[C, H, W]`` in [0, 1]."""

    def __call__(self, image: Any) -> torch.Tensor:
        return _to_image(image).float() / 255.0


def _to_image(image: Any) -> torch.Tensor:
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def _module(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    return module


def _torchvision() -> dict[str, types.ModuleType]:
    v2_functional = _module("torchvision.transforms.v2.functional", to_image=_to_image)
    v2 = _module(
        "torchvision.transforms.v2",
        Compose=_Compose,
        ToDtype=_ToDtype,
        Resize=_Resize,
        Normalize=_Normalize,
        functional=v2_functional,
    )
    functional = _module("torchvision.transforms.functional")
    transforms = _module(
        "torchvision.transforms",
        v2=v2,
        functional=functional,
        Normalize=_ScriptNormalize,
        Resize=_ScriptResize,
        ToTensor=_ToTensor,
    )
    roi = _module("torchvision.ops.roi_align", RoIAlign=_RoIAlign, roi_align=roi_align_reference)
    ops = _module("torchvision.ops", roi_align=roi_align_reference, RoIAlign=_RoIAlign, masks_to_boxes=_masks_to_boxes)
    vision = _module("torchvision.datasets.vision", VisionDataset=object)
    datasets = _module("torchvision.datasets", vision=vision)
    tv = _module("torchvision", ops=ops, transforms=transforms, datasets=datasets)
    return {
        "torchvision": tv,
        "torchvision.ops": ops,
        "torchvision.ops.roi_align": roi,
        "torchvision.transforms": transforms,
        "torchvision.transforms.functional": functional,
        "torchvision.transforms.v2": v2,
        "torchvision.transforms.v2.functional": v2_functional,
        "torchvision.datasets": datasets,
        "torchvision.datasets.vision": vision,
    }


# ---------------------------------------------------------------------------------------------------- timm, triton


class _Mlp(torch.nn.Module):
    """timm ``Mlp``: fc1 → activation → dropout → fc2 → dropout (no norm), as SAM 3's ViT builds it."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Any = torch.nn.GELU,
        drop: Any = 0.0,
        **_: Any,
    ) -> None:
        super().__init__()
        hidden = hidden_features or in_features
        drops = drop if isinstance(drop, tuple) else (drop, drop)
        self.fc1 = torch.nn.Linear(in_features, hidden)
        self.act = act_layer()
        self.drop1 = torch.nn.Dropout(drops[0])
        self.norm = torch.nn.Identity()
        self.fc2 = torch.nn.Linear(hidden, out_features or in_features)
        self.drop2 = torch.nn.Dropout(drops[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.norm(self.drop1(self.act(self.fc1(x))))))


class _DropPath(torch.nn.Identity):
    """timm ``DropPath`` in eval mode (the identity)."""

    def __init__(self, *_: Any, **__: Any) -> None:
        super().__init__()


class _Anything(types.ModuleType):
    """A module whose every attribute is a harmless placeholder (triton: its kernels only run on CUDA)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder


def _placeholder(*args: Any, **_: Any) -> Any:
    return args[0] if len(args) == 1 and callable(args[0]) else _placeholder


def _timm_triton() -> dict[str, types.ModuleType]:
    layers = _module("timm.layers", DropPath=_DropPath, Mlp=_Mlp, trunc_normal_=torch.nn.init.trunc_normal_)
    timm = _module("timm", layers=layers)
    language = _Anything("triton.language")
    triton = _Anything("triton")
    triton.language = language  # type: ignore[attr-defined]
    return {"timm": timm, "timm.layers": layers, "triton": triton, "triton.language": language}


def import_sam3() -> types.SimpleNamespace:
    """Import ``sam3.model_builder`` and ``Sam3Processor`` with the stand-ins installed, then remove the stand-ins."""
    standins = {**_torchvision(), **_timm_triton()}
    saved = {name: sys.modules.get(name) for name in standins}
    sys.modules.update(standins)
    try:
        import sam3.model.sam3_image_processor as processor
        import sam3.model.tokenizer_ve as tokenizer
        import sam3.model_builder as builder
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return types.SimpleNamespace(builder=builder, processor=processor, tokenizer=tokenizer)


# ---------------------------------------------------------------------------------------------------- CPU redirect


@contextlib.contextmanager
def on_cpu() -> Iterator[None]:
    """While inside: tensor factories asked for ``device="cuda"`` make CPU tensors, ``pin_memory()`` is a no-op."""
    names = ("zeros", "ones", "arange", "empty", "tensor", "linspace", "full")
    originals = {name: getattr(torch, name) for name in names}

    def redirect(function: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            if str(kwargs.get("device", "")).startswith("cuda"):
                kwargs["device"] = "cpu"
            return function(*args, **kwargs)

        return call

    pin = torch.Tensor.pin_memory
    for name, function in originals.items():
        setattr(torch, name, redirect(function))
    torch.Tensor.pin_memory = lambda self, *a, **k: self  # type: ignore[method-assign]
    try:
        yield
    finally:
        for name, function in originals.items():
            setattr(torch, name, function)
        torch.Tensor.pin_memory = pin  # type: ignore[method-assign]


# ---------------------------------------------------------------------------------------------------- the model

#: Words the reduced tokenizer's merges spell whole (each also splits into its letters otherwise).
TEST_WORDS = ("red", "car", "coffee", "cup", "person", "dog", "visual", "blue", "shoe")


def write_bpe_file(path: Path, words: tuple[str, ...] = TEST_WORDS) -> Path:
    """A small BPE vocabulary in the format of CLIP's ``bpe_simple_vocab_16e6.txt.gz``: a header line, then one merge
    per line; merges that build each of ``words`` (with the end-of-word marker) left to right."""
    merges: list[str] = []
    for word in words:
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            merge = f"{parts[0]} {parts[1]}"
            if merge not in merges:
                merges.append(merge)
            parts = [parts[0] + parts[1], *parts[2:]]
    path.write_bytes(gzip.compress(("#version: test\n" + "\n".join(merges)).encode()))
    return path


def reduced_vision_and_text(
    sam3: types.SimpleNamespace, bpe_path: Path, *, vit_width: int = 64, interactive: bool = False
) -> tuple[Any, Any]:
    """Meta's ViT neck around a 2-block ViT (``vit_width`` wide, block 1 global; with the tracker's ``sam2_convs``
    when ``interactive``) and a 2-layer, 64-wide text encoder, built (in this order) as Meta's builders build the
    full-size ones. Call inside :func:`on_cpu`."""
    b = sam3.builder
    position = b._create_position_encoding(precompute_resolution=1008)
    vit = b.ViT(
        img_size=1008,
        pretrain_img_size=336,
        patch_size=14,
        embed_dim=vit_width,
        depth=2,
        num_heads=2,
        mlp_ratio=4.625,
        norm_layer="LayerNorm",
        drop_path_rate=0.0,
        qkv_bias=True,
        use_abs_pos=True,
        tile_abs_pos=True,
        global_att_blocks=(1,),
        rel_pos_blocks=(),
        use_rope=True,
        use_interp_rope=True,
        window_size=24,
        pretrain_use_cls_token=True,
        retain_cls_token=False,
        ln_pre=True,
        ln_post=False,
        return_interm_layers=False,
        bias_patch_embed=False,
    )
    neck = b._create_vit_neck(position, vit, enable_inst_interactivity=interactive)
    tokenizer = sam3.tokenizer.SimpleTokenizer(bpe_path=str(bpe_path))
    text = b.VETextEncoder(tokenizer=tokenizer, d_model=256, width=64, heads=2, layers=2)
    return neck, text


def build_reduced_sam3(sam3: types.SimpleNamespace, bpe_path: Path, *, vit_width: int = 64) -> Any:
    """Meta's ``Sam3Image`` with :func:`reduced_vision_and_text`'s ViT and text encoder; everything else as
    :func:`sam3.model_builder.build_sam3_image_model` builds it. Random weights, eval."""
    b = sam3.builder
    with on_cpu():
        neck, text = reduced_vision_and_text(sam3, bpe_path, vit_width=vit_width)
        backbone = b._create_vl_backbone(neck, text)
        model = b._create_sam3_model(
            backbone,
            b._create_sam3_transformer(),
            b._create_geometry_encoder(),
            b._create_segmentation_head(),
            b._create_dot_product_scoring(),
            None,
            True,
        )
    return model.eval()


def attach_tracker(sam3: types.SimpleNamespace, model: Any, *, seed: int = 11) -> Any:
    """Give a :func:`build_reduced_sam3` model what ``build_sam3_image_model(enable_inst_interactivity=True)`` adds:
    the SAM 2-style neck (``sam2_convs``, same layout as the detector's ``convs``) and the interactive predictor
    around Meta's :func:`build_tracker` (full size: it does not depend on the ViT's width), so that
    ``model.predict_inst`` answers box / point prompts as Meta's. Random weights from their own generator (the
    detector's weights and the global random state stay as they were); the neck's weights differ from the detector's
    neck, so mixing the two up cannot go unnoticed. Returns the model.
    """
    b = sam3.builder
    neck = model.backbone.vision_backbone
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        with on_cpu():
            tracker = b.build_tracker(apply_temporal_disambiguation=False)
            predictor = b.SAM3InteractiveImagePredictor(tracker)
        sam2_convs = copy.deepcopy(neck.convs)
        with torch.no_grad():
            for layer in sam2_convs.modules():
                if isinstance(layer, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                    layer.reset_parameters()
            # random-weight memory embedding: visible in every prediction (Meta adds it to the 72×72 level)
            tracker.no_mem_embed.normal_(0.0, 0.5)
    neck.sam2_convs = sam2_convs
    model.inst_interactive_predictor = predictor.eval()
    return model
