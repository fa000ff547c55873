"""Model catalogue: names, variants, download URLs and architecture facts.

Everything here is data. ``weights.py`` resolves and converts checkpoints, ``backends`` build the networks from the
architecture configs returned by :func:`architecture_config`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal, get_args

from .exceptions import ConfigError

__all__ = [
    "ARCHITECTURES",
    "FAMILIES",
    "MODEL_NAMES",
    "Architecture",
    "Family",
    "ModelSpec",
    "architecture_config",
    "get_model_spec",
    "list_models",
]

#: The model families: SAM 1 (ViT encoder, 1024 px input), SAM 2/2.1 (Hiera encoder) and SAM 3 (concept model:
#: text / exemplar prompts, plus box / point prompts through its tracker head, 1008 px input); defined here only.
Family = Literal["sam1", "sam2", "sam3"]
FAMILIES: tuple[Family, ...] = get_args(Family)

#: The network built for a model: ``sam`` (transformers' ``SamModel`` / ``Sam2Model`` by family), ``sam_hq``
#: (``SamHQModel``: SAM 1's ViT and prompt encoder with the HQ mask decoder), ``mobile_sam`` (our TinyViT encoder
#: with ``SamModel``'s prompt encoder and mask decoder), ``edgetam`` (``EdgeTamModel`` with our RepViT trunk in
#: place of timm's; SAM 2 preprocessing). Preprocessing and coordinates follow the family; the
#: architecture only picks the network and its checkpoint conversion.
#: ``sam3`` (transformers' ``Sam3Model``: SAM 3's concept detector, see :mod:`perceptra_seg.concepts`).
Architecture = Literal["sam", "sam_hq", "mobile_sam", "edgetam", "sam3"]
ARCHITECTURES: tuple[Architecture, ...] = get_args(Architecture)

_SAM1_URL = "https://dl.fbaipublicfiles.com/segment_anything/{file}"
_SAM2_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/072824/{file}"
_SAM21_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/{file}"
# SAM-HQ (Ke et al., SysCV / ETH Zürich): the authors publish their checkpoints on the Hugging Face hub.
_SAM_HQ_URL = "https://huggingface.co/lkeab/hq-sam/resolve/main/{file}"
_SAM1_SOURCE = "https://github.com/facebookresearch/segment-anything"
_SAM2_SOURCE = "https://github.com/facebookresearch/sam2"
_SAM_HQ_SOURCE = "https://github.com/SysCV/sam-hq"
_MOBILE_SAM_SOURCE = "https://github.com/ChaoningZhang/MobileSAM"
_MOBILE_SAM_URL = "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt"
# EdgeTAM (Meta Reality Labs, CVPR 2025): the authors keep their one checkpoint in the repository itself.
_EDGETAM_SOURCE = "https://github.com/facebookresearch/EdgeTAM"
_EDGETAM_URL = "https://github.com/facebookresearch/EdgeTAM/raw/main/checkpoints/edgetam.pt"
# SAM 3: Meta publishes sam3.pt only on the (gated) Hugging Face repository; downloading it needs an accepted licence
# and a token (HF_TOKEN). Its text tokenizer's vocabulary is CLIP's BPE file (checked against its full sha256).
_SAM3_SOURCE = "https://github.com/facebookresearch/sam3"
_SAM3_URL = "https://huggingface.co/facebook/sam3/resolve/main/sam3.pt"
SAM3_VOCAB_URL = "https://raw.githubusercontent.com/openai/CLIP/main/clip/bpe_simple_vocab_16e6.txt.gz"
SAM3_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
SAM3_VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"


@dataclass(frozen=True)
class ModelSpec:
    """One downloadable model: a (name, variant) pair.

    Attributes:
        name: catalogue name (``sam_v1``, ``sam_v2``, ``sam_v2.0``, ``sam_hq``, ``mobile_sam``, ``edgetam``, ``sam3``).
        variant: architecture size (``vit_b``, ``hiera_small``, ...).
        family: ``sam1`` (SamModel, longest-side-1024 + pad), ``sam2`` (Sam2Model, 1024×1024 resize) or ``sam3``
            (SAM 3 concepts).
        filename: Meta's checkpoint file name; for SAM 1 its suffix is the sha256 prefix of the file.
        url: where Meta publishes the file.
        hub_id: the equivalent transformers-format repository on the Hugging Face hub.
        packaged: the file ships inside the package (``perceptra_seg/assets/``); nothing is downloaded.
        architecture: the network (``sam``, ``sam_hq``, ``mobile_sam``, ``edgetam`` or ``sam3``), see
            :data:`Architecture`.
        licence: the licence of the published weights (SPDX id).
        source: the authors' project page.
    """

    name: str
    variant: str
    family: Family
    filename: str
    url: str
    hub_id: str
    packaged: bool = False
    architecture: Architecture = "sam"
    licence: str = "Apache-2.0"
    source: str = ""

    @property
    def precision_key(self) -> str:
        """The variant as the precision table knows it: plain SAM's ``vit_b`` etc.; other networks are qualified
        (``sam_hq/vit_b``) so that they never inherit a measurement made on another network."""
        return self.variant if self.architecture == "sam" else f"{self.name}/{self.variant}"

    @property
    def sha256_prefix(self) -> str | None:
        """Hash prefix encoded in the file name (SAM 1 files only), e.g. ``01ec64``; ``None`` when absent."""
        stem = self.filename.rsplit(".", 1)[0]
        tail = stem.rsplit("_", 1)[-1]
        if len(tail) == 6 and all(c in "0123456789abcdef" for c in tail):
            return tail
        return None


def _sam1(variant: str, file: str, hub: str) -> ModelSpec:
    return ModelSpec("sam_v1", variant, "sam1", file, _SAM1_URL.format(file=file), hub, source=_SAM1_SOURCE)


def _sam2(name: str, variant: str, file: str, base: str, hub: str) -> ModelSpec:
    return ModelSpec(name, variant, "sam2", file, base.format(file=file), hub, source=_SAM2_SOURCE)


def _sam_hq(variant: str, hub: str) -> ModelSpec:
    file = f"sam_hq_{variant}.pth"
    url = _SAM_HQ_URL.format(file=file)
    return ModelSpec("sam_hq", variant, "sam1", file, url, hub, architecture="sam_hq", source=_SAM_HQ_SOURCE)


_CATALOGUE: dict[tuple[str, str], ModelSpec] = {
    (spec.name, spec.variant): spec
    for spec in [
        _sam1("vit_b", "sam_vit_b_01ec64.pth", "facebook/sam-vit-base"),
        _sam1("vit_l", "sam_vit_l_0b3195.pth", "facebook/sam-vit-large"),
        _sam1("vit_h", "sam_vit_h_4b8939.pth", "facebook/sam-vit-huge"),
        _sam2("sam_v2", "hiera_tiny", "sam2.1_hiera_tiny.pt", _SAM21_URL, "facebook/sam2.1-hiera-tiny"),
        _sam2("sam_v2", "hiera_small", "sam2.1_hiera_small.pt", _SAM21_URL, "facebook/sam2.1-hiera-small"),
        _sam2("sam_v2", "hiera_base_plus", "sam2.1_hiera_base_plus.pt", _SAM21_URL, "facebook/sam2.1-hiera-base-plus"),
        _sam2("sam_v2", "hiera_large", "sam2.1_hiera_large.pt", _SAM21_URL, "facebook/sam2.1-hiera-large"),
        _sam2("sam_v2.0", "hiera_tiny", "sam2_hiera_tiny.pt", _SAM2_URL, "facebook/sam2-hiera-tiny"),
        _sam2("sam_v2.0", "hiera_small", "sam2_hiera_small.pt", _SAM2_URL, "facebook/sam2-hiera-small"),
        _sam2("sam_v2.0", "hiera_base_plus", "sam2_hiera_base_plus.pt", _SAM2_URL, "facebook/sam2-hiera-base-plus"),
        _sam2("sam_v2.0", "hiera_large", "sam2_hiera_large.pt", _SAM2_URL, "facebook/sam2-hiera-large"),
        _sam_hq("vit_b", "syscv-community/sam-hq-vit-base"),
        _sam_hq("vit_l", "syscv-community/sam-hq-vit-large"),
        _sam_hq("vit_h", "syscv-community/sam-hq-vit-huge"),
        _sam_hq("vit_tiny", ""),  # MobileSAM's TinyViT encoder with the HQ decoder; no transformers model
        ModelSpec(
            "mobile_sam",
            "vit_t",
            "sam1",
            "mobile_sam.pt",
            _MOBILE_SAM_URL,
            "",
            architecture="mobile_sam",
            source=_MOBILE_SAM_SOURCE,
        ),
        # RepViT-M1 trunk, SAM 2 prompt encoder / mask decoder, a perceiver-compressed memory for video tracking
        ModelSpec(
            "edgetam",
            "repvit_m1",
            "sam2",
            "edgetam.pt",
            _EDGETAM_URL,
            "",
            architecture="edgetam",
            source=_EDGETAM_SOURCE,
        ),
        # Offline demo: a tiny SAM 1 trained on synthetic shapes (tools/train_demo_model.py), NOT for real photos.
        ModelSpec("demo", "tiny", "sam1", "sam_demo_tiny.pth", "", "", packaged=True, source="perceptra-seg"),
        # SAM 3 (848M parameters, about 3.4 GB): concept prompts; the file also holds the tracker (box / point prompts)
        ModelSpec(
            "sam3",
            "default",
            "sam3",
            "sam3.pt",
            _SAM3_URL,
            "facebook/sam3",
            architecture="sam3",
            licence="LicenseRef-SAM-License",
            source=_SAM3_SOURCE,
        ),
    ]
}

MODEL_NAMES: tuple[str, ...] = (
    "sam_v1",
    "sam_v2",
    "sam_v2.0",
    "demo",
    "sam_hq",
    "mobile_sam",
    "edgetam",
    "sam3",
)
DEFAULT_VARIANTS: dict[str, str] = {
    "sam_v1": "vit_b",
    "sam_v2": "hiera_small",
    "sam_v2.0": "hiera_small",
    "demo": "tiny",
    "sam_hq": "vit_b",
    "mobile_sam": "vit_t",
    "edgetam": "repvit_m1",
    "sam3": "default",
}


def list_models() -> list[ModelSpec]:
    """Every (model, variant) pair in the catalogue."""
    return list(_CATALOGUE.values())


def get_model_spec(name: str, variant: str | None = None) -> ModelSpec:
    """Look up a catalogue entry; ``variant=None`` picks the model's default variant.

    Raises:
        ConfigError: unknown model or variant (the message lists the valid ones).
    """
    if name not in MODEL_NAMES:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    variant = variant or DEFAULT_VARIANTS[name]
    spec = _CATALOGUE.get((name, variant))
    if spec is None:
        valid = sorted(v for (n, v) in _CATALOGUE if n == name)
        raise ConfigError(f"unknown variant {variant!r} for model {name!r}; choose one of {', '.join(valid)}")
    return spec


# SAM 1 image encoders (ViT): hidden size, depth, heads, blocks with global attention.
_SAM1_VISION: dict[str, dict[str, Any]] = {
    "vit_b": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "global_attn_indexes": [2, 5, 8, 11],
    },
    "vit_l": {
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "global_attn_indexes": [5, 11, 17, 23],
    },
    "vit_h": {
        "hidden_size": 1280,
        "num_hidden_layers": 32,
        "num_attention_heads": 16,
        "global_attn_indexes": [7, 15, 23, 31],
    },
}

# SAM 1 architectures that also shrink the prompt encoder and mask decoder (complete SamConfig keyword arguments).
# ``tiny`` is the packaged demo model, the same modules as vit_b made small: a 3-block ViT on 32-pixel patches
# (a 32×32 grid, 128×128 logits) with 16×16 attention windows, and a 64-wide prompt encoder and mask decoder.
_DEMO_WIDTH = 64
_DEMO_PATCH = 32
_SAM1_FULL: dict[str, dict[str, Any]] = {
    "tiny": {
        "vision_config": {
            "hidden_size": 64,
            "num_hidden_layers": 3,
            "num_attention_heads": 2,
            "global_attn_indexes": [],
            "patch_size": _DEMO_PATCH,
            "window_size": 16,
            "output_channels": _DEMO_WIDTH,
            "num_pos_feats": _DEMO_WIDTH // 2,
        },
        "prompt_encoder_config": {"hidden_size": _DEMO_WIDTH, "patch_size": _DEMO_PATCH},
        "mask_decoder_config": {
            "hidden_size": _DEMO_WIDTH,
            "mlp_dim": 4 * _DEMO_WIDTH,
            "num_attention_heads": 2,
            "iou_head_hidden_dim": _DEMO_WIDTH,
        },
    },
}

# SAM 2 / 2.1 Hiera trunks, from Meta's model configs: initial width and heads (doubled each stage), blocks per
# stage, global-attention blocks, window size per stage, background positional-embedding size.
_SAM2_TRUNK: dict[str, dict[str, Any]] = {
    "hiera_tiny": {
        "dim": 96,
        "heads": 1,
        "stages": [1, 2, 7, 2],
        "global": [5, 7, 9],
        "windows": [8, 4, 14, 7],
        "bkg": [7, 7],
    },
    "hiera_small": {
        "dim": 96,
        "heads": 1,
        "stages": [1, 2, 11, 2],
        "global": [7, 10, 13],
        "windows": [8, 4, 14, 7],
        "bkg": [7, 7],
    },
    "hiera_base_plus": {
        "dim": 112,
        "heads": 2,
        "stages": [2, 3, 16, 3],
        "global": [12, 16, 20],
        "windows": [8, 4, 14, 7],
        "bkg": [14, 14],
    },
    "hiera_large": {
        "dim": 144,
        "heads": 2,
        "stages": [2, 6, 36, 4],
        "global": [23, 33, 43],
        "windows": [8, 4, 16, 8],
        "bkg": [7, 7],
    },
}


# SAM 3's released architecture as complete ``Sam3Config`` keyword arguments: the ViT (Meta's
# ``_create_vit_backbone``), the CLIP-layout text encoder (``_create_text_encoder``: 1024 wide, 24 layers, context 32,
# exact GELU); the detector heads keep transformers' sizes, which equal Meta's builder. Every LayerNorm takes Meta's
# eps. Spelled out so that a partial override in ``model.architecture`` (e.g. fewer layers) keeps the rest.
_SAM3: dict[str, Any] = {
    "vision_config": {
        "backbone_config": {
            "model_type": "sam3_vit_model",
            "hidden_size": 1024,
            "intermediate_size": 4736,
            "num_hidden_layers": 32,
            "num_attention_heads": 16,
            "global_attn_indexes": [7, 15, 23, 31],
            "layer_norm_eps": 1e-5,
        },
        "layer_norm_eps": 1e-5,
    },
    # Meta's LayerNorms all use PyTorch's default eps (1e-5); transformers' SAM 3 configs default to 1e-6
    "geometry_encoder_config": {"layer_norm_eps": 1e-5},
    "detr_encoder_config": {"layer_norm_eps": 1e-5},
    "detr_decoder_config": {"layer_norm_eps": 1e-5},
    "mask_decoder_config": {"layer_norm_eps": 1e-5},
    "text_config": {
        "model_type": "clip_text_model",
        "vocab_size": 49408,
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "projection_dim": 512,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "max_position_embeddings": 32,
        "hidden_act": "gelu",
    },
}


def architecture_config(family: Family, variant: str, network: Architecture = "sam") -> dict[str, Any]:
    """Keyword arguments for the transformers config (``SamConfig`` / ``Sam2Config``) of one architecture.

    ``network="mobile_sam"``: ``{"tiny_vit": {...}}`` holds :class:`~perceptra_seg.backends.tiny_vit.TinyViTConfig`
    overrides (none for the released ``vit_t``); the other keys are ``SamConfig``'s for the prompt encoder and mask
    decoder. ``network="edgetam"``: ``{"repvit": {...}}`` holds
    :class:`~perceptra_seg.backends.repvit.RepViTConfig` overrides (none for the released ``repvit_m1``); the other
    keys are ``EdgeTamConfig``'s (or ``EdgeTamVideoConfig``'s).

    Only ``vision_config`` differs between Meta's released variants; prompt encoder and mask decoder use the
    transformers defaults, which equal Meta's. ``model.architecture`` in the config is deep-merged over this dict
    (e.g. ``{"vision_config": {"num_hidden_layers": 2}}``) for fine-tuned or reduced architectures.
    """
    if network == "sam3" or family == "sam3":
        if variant != "default":
            raise ConfigError(f"unknown SAM 3 variant {variant!r}")
        return copy.deepcopy(_SAM3)
    if network == "mobile_sam" or (network == "sam_hq" and variant == "vit_tiny"):
        if variant not in ("vit_t", "vit_tiny"):
            raise ConfigError(f"unknown MobileSAM variant {variant!r}")
        return {"tiny_vit": {}}
    if network == "edgetam":
        if variant != "repvit_m1":
            raise ConfigError(f"unknown EdgeTAM variant {variant!r}")
        return {"repvit": {}}
    if family == "sam1":
        if variant in _SAM1_FULL:
            return copy.deepcopy(_SAM1_FULL[variant])
        if variant not in _SAM1_VISION:
            raise ConfigError(f"unknown SAM 1 variant {variant!r}")
        return {"vision_config": dict(_SAM1_VISION[variant])}
    if variant not in _SAM2_TRUNK:
        raise ConfigError(f"unknown SAM 2 variant {variant!r}")
    t = _SAM2_TRUNK[variant]
    dims = [t["dim"] * 2**i for i in range(4)]
    vision = {
        "backbone_config": {
            "model_type": "sam2_hiera_det_model",
            "hidden_size": t["dim"],
            "num_attention_heads": t["heads"],
            "blocks_per_stage": t["stages"],
            "embed_dim_per_stage": dims,
            "num_attention_heads_per_stage": [t["heads"] * 2**i for i in range(4)],
            "window_size_per_stage": t["windows"],
            "global_attention_blocks": t["global"],
            "window_positional_embedding_background_size": t["bkg"],
        },
        "backbone_channel_list": dims[::-1],
    }
    return {"vision_config": vision}
