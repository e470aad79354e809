"""DINOv2 ViTs as frozen teachers via the optional ``transformers`` package (``pip install 'ppkt[dinov2]'``).

Weights are never downloaded: ``weights`` is either a local folder written by Hugging Face
``save_pretrained`` (``config.json`` + ``model.safetensors``) or a model id (``facebook/dinov2-small``)
that must already be in the local Hugging Face cache (``from_pretrained(..., local_files_only=True)``).
Only ``model.safetensors`` is read (``use_safetensors=True``): a pickled ``pytorch_model.bin`` could run code.
Plain DINOv2 and DINOv2-with-registers checkpoints are accepted::

    images [B, 3, H, W] in [0, 1]  ->  (x - ImageNet mean) / ImageNet std
    zero-pad bottom/right to H', W' = multiples of the patch size p (14); zero = the mean colour
    ViT (position embeddings interpolated to H'/p x W'/p by transformers)
    patch tokens of the chosen blocks -> final LayerNorm -> [B, C, ceil(H/p), ceil(W/p)]

Padding rather than resizing keeps the teacher contract (``ceil(H/s)`` cells, cell ``j`` covering
pixels ``[j*p, (j+1)*p)``), so the UPL's geometry is exact; the last row/column of patches sees part
padding when H or W is not a multiple of 14.

Layers: ``block0`` .. ``block{L-1}`` are the outputs of the transformer blocks (``hidden_states[i + 1]``),
``last`` is the final block (the default). Every returned map goes through the model's final LayerNorm,
as DINOv2's own ``get_intermediate_layers(norm=True)`` does; CLS and register tokens are dropped.
All maps have stride ``p``, read from the model's config (14 for every released DINOv2).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ppkt.errors import WeightsError
from ppkt.models.teachers.base import Teacher, select_layers
from ppkt.models.teachers.resnet import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["DINOV2_MODEL_IDS", "DINOv2", "import_transformers", "load_dinov2"]

#: Named variant -> (Hugging Face model id used when no weights are given, hidden size).
DINOV2_MODEL_IDS: dict[str, tuple[str, int]] = {
    "dinov2_vits14": ("facebook/dinov2-small", 384),
    "dinov2_vitb14": ("facebook/dinov2-base", 768),
    "dinov2_vitl14": ("facebook/dinov2-large", 1024),
    "dinov2_vitg14": ("facebook/dinov2-giant", 1536),
}
_MODEL_TYPES = ("dinov2", "dinov2_with_registers")
INSTALL_HINT = "pip install 'ppkt[dinov2]'"


def import_transformers() -> Any:
    """The ``transformers`` module, or a :class:`WeightsError` saying how to install it."""
    try:
        return importlib.import_module("transformers")
    except ImportError as exc:
        raise WeightsError(
            f"DINOv2 teachers need the optional package 'transformers' (>= 4.40), which is not installed: "
            f"{INSTALL_HINT}  ({exc})"
        ) from exc


def _looks_like_path(weights: str) -> bool:
    return os.path.isabs(weights) or weights.startswith((".", "~")) or weights.count("/") > 1


def load_dinov2(weights: str | os.PathLike[str], teacher: str = "dinov2") -> nn.Module:
    """Load a DINOv2 ``transformers`` model from a local folder or the local HF cache (never downloads).

    Raises :class:`WeightsError` naming ``weights`` when transformers is missing, the folder/model id is
    not available offline, the files are unreadable, the model is not a DINOv2, or weights are missing.
    """
    transformers = import_transformers()
    name = str(weights)
    path = Path(name).expanduser()
    hint = (
        f"pass {teacher!r} a local save_pretrained folder (teacher.weights=/path/to/dinov2-folder) or a "
        "model id already in the local Hugging Face cache (e.g. download it once on a connected machine "
        "with `huggingface-cli download facebook/dinov2-small`); nothing is downloaded"
    )
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise WeightsError(
                f"{teacher} weights {path}: not a Hugging Face save_pretrained folder "
                f"(no config.json); {hint}"
            )
        source = str(path)
    elif _looks_like_path(name):
        raise WeightsError(f"{teacher} weights folder not found: {path}; {hint}")
    else:
        source = name
    try:
        model, info = transformers.AutoModel.from_pretrained(
            source, local_files_only=True, output_loading_info=True, use_safetensors=True
        )
    except Exception as exc:  # OSError (not cached / missing files), ValueError (bad id/config), ...
        where = "folder" if source != name else "model id (local Hugging Face cache only)"
        raise WeightsError(
            f"{teacher}: cannot load weights {name!r} as a {where}: {type(exc).__name__}: {exc}; {hint}"
        ) from exc
    model_type = getattr(model.config, "model_type", None)
    if model_type not in _MODEL_TYPES:
        raise WeightsError(
            f"{teacher} weights {name!r} hold a {model_type!r} model, not one of {list(_MODEL_TYPES)}"
        )
    problems = {k: list(info.get(k) or []) for k in ("missing_keys", "mismatched_keys")}
    if any(problems.values()):
        raise WeightsError(
            f"{teacher} weights {name!r} do not match the model: "
            + ", ".join(f"{len(v)} {k.replace('_', ' ')} {v[:5]}" for k, v in problems.items())
        )
    if not isinstance(model, nn.Module):
        raise WeightsError(f"{teacher} weights {name!r}: transformers did not return a torch model")
    return model.float()


class DINOv2(Teacher):
    """Frozen DINOv2 returning patch-token maps of the blocks named in ``layers`` (stride = patch size, 14).

    Args:
        model: a ``transformers`` ``Dinov2Model``/``Dinov2WithRegistersModel`` (see :func:`load_dinov2`).
        layers: ``last`` (default) and/or ``block0`` .. ``block{L-1}``.
        name: registry name used in messages.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, model: nn.Module, layers: Sequence[str] | None = None, name: str = "dinov2") -> None:
        super().__init__()
        self.name = name
        hf: Any = model  # a transformers model: ``config``, ``layernorm``, ``hidden_states`` outputs
        config = hf.config
        num_blocks = int(config.num_hidden_layers)
        self.patch_size = int(config.patch_size)
        self.hidden_size = int(config.hidden_size)
        choices = ["last"] + [f"block{i}" for i in range(num_blocks)]
        self.layers = select_layers(name, layers, choices, ("last",))
        self._indices = [num_blocks if n == "last" else int(n[len("block") :]) + 1 for n in self.layers]
        self.out_channels = [self.hidden_size] * len(self.layers)
        self.strides = [self.patch_size] * len(self.layers)
        self.model = model
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.freeze()

    def extract(self, images: Tensor) -> list[Tensor]:
        """Maps ``[B, hidden_size, ceil(H/p), ceil(W/p)]``, one per requested layer (p = patch size)."""
        b, _, h, w = images.shape
        p = self.patch_size
        gh, gw = -(-h // p), -(-w // p)
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        x = F.pad(x, (0, gw * p - w, 0, gh * p - h))
        hf: Any = self.model
        out = hf(pixel_values=x, output_hidden_states=True)
        norm = hf.layernorm
        maps = []
        for i in self._indices:
            tokens = norm(out.hidden_states[i][:, -gh * gw :, :])  # drop CLS (and register) tokens
            maps.append(tokens.transpose(1, 2).reshape(b, self.hidden_size, gh, gw).contiguous())
        return maps
