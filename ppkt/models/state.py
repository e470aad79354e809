"""The one weights check: a state dict read from a file against the one a model expects.

Teachers (:func:`~ppkt.models.teachers.base.load_weights`, ResNet/MoCo files), ``ppkt pretrain --resume``
and ``ppkt finetune --init`` all go through :func:`check_state_dict`, so every mismatch reads the same:
``<what> does not match <target>: N missing keys [...], N unexpected keys [...], N wrong tensor shapes
[...]`` (lists cut to a few names), and non-finite values are refused too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from ppkt.errors import WeightsError


def state_dict_mismatch(
    state: Mapping[str, Tensor],
    expected: Mapping[str, Tensor],
    source: str = "file",
    optional: Callable[[str], bool] | None = None,
) -> tuple[list[str], list[str], list[str]]:
    """``(missing keys, unexpected keys, shape mismatches)`` of ``state`` against ``expected``, each sorted;
    a shape mismatch reads ``"key: <source> (shape) vs model (shape)"``; keys for which ``optional`` is true
    may be absent. All empty: ``state`` fits."""
    missing = sorted(k for k in set(expected) - set(state) if optional is None or not optional(k))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: {source} {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in sorted(state.items())
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    return missing, unexpected, shapes


def check_state_dict(
    state: Mapping[str, Tensor],
    expected: Mapping[str, Tensor],
    *,
    what: str,
    target: str,
    optional: Callable[[str], bool] | None = None,
    hint: str = "",
    show: int = 5,
    source: str = "file",
) -> None:
    """Raise :class:`WeightsError` ``"<what> does not match <target><hint>: …"`` unless ``state`` has every
    key of ``expected`` (but the ``optional`` ones), no other key and the same shapes, and only finite
    floating-point values."""
    missing, unexpected, shapes = state_dict_mismatch(state, expected, source, optional)
    if missing or unexpected or shapes:
        parts = [
            f"{len(missing)} missing keys {missing[:show]}" if missing else "",
            f"{len(unexpected)} unexpected keys {unexpected[:show]}" if unexpected else "",
            f"{len(shapes)} wrong tensor shapes {shapes[:show]}" if shapes else "",
        ]
        raise WeightsError(f"{what} does not match {target}{hint}: " + ", ".join(p for p in parts if p))
    nonfinite = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if nonfinite:
        raise WeightsError(f"{what} has non-finite values in {sorted(nonfinite)[:show]}")
