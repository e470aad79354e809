"""Range checks shared by the config sections: each raises :class:`ConfigError` naming the full key.

A section's ``validate(prefix)`` is called by :func:`ppkt.config.loader.from_dict` with the section's own
dotted key (``"optim"``, or ``"finetune.optim"`` inside the demo config), so messages name the key the user
wrote. Comparisons are written so that NaN fails every check.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ppkt.data.transforms import FEATURES
from ppkt.errors import ConfigError

#: per-voxel input features the voxelizer can compute
#: Lightning precision names accepted by ``trainer.precision`` (besides ``auto``)
PRECISIONS: tuple[str, ...] = ("auto", "64-true", "32-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed")
#: Lightning accelerators accepted by ``trainer.accelerator``
ACCELERATORS: tuple[str, ...] = ("auto", "cpu", "gpu", "cuda", "mps")


def key(prefix: str, name: str) -> str:
    """``prefix.name`` (or ``name`` at the top level)."""
    return f"{prefix}.{name}" if prefix else name


def at_least(prefix: str, name: str, value: float, low: float) -> None:
    if not value >= low:
        raise ConfigError(f"config key '{key(prefix, name)}': must be >= {low}, got {value}")


def positive(prefix: str, name: str, value: float) -> None:
    if not (value > 0 and value < float("inf")):
        raise ConfigError(f"config key '{key(prefix, name)}': must be a finite number > 0, got {value}")


def unit(prefix: str, name: str, value: float) -> None:
    """``value`` in [0, 1] (a probability or a fraction)."""
    if not 0 <= value <= 1:
        raise ConfigError(f"config key '{key(prefix, name)}': must be in [0, 1], got {value}")


def interval(prefix: str, name: str, value: Sequence[float], low: float, high: float | None = None) -> None:
    """``value = [a, b]`` with ``low < a <= b`` (and ``b <= high``)."""
    a, b = value
    if not (a > low and a <= b and (high is None or b <= high)):
        bound = f"{low} < a <= b" + (f" <= {high}" if high is not None else "")
        raise ConfigError(f"config key '{key(prefix, name)}': must be [a, b] with {bound}, got {list(value)}")


def one_of(prefix: str, name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"config key '{key(prefix, name)}': {value!r} is not one of {list(choices)}")


def folder(prefix: str, name: str, value: str | None) -> None:
    """An optional folder path: ``None``, a folder, or a path that does not exist yet (not a file)."""
    path = None if value is None else Path(value).expanduser()
    if path is not None and path.exists() and not path.is_dir():
        raise ConfigError(f"config key '{key(prefix, name)}': {value} exists and is not a folder")


def features(prefix: str, value: Sequence[str]) -> None:
    bad = [f for f in value if f not in FEATURES]
    if not value or bad or len(set(value)) != len(value):
        raise ConfigError(
            f"config key '{key(prefix, 'features')}': must be distinct names from {list(FEATURES)}, "
            f"got {list(value)}"
        )


def depth_range(prefix: str, min_depth: float, max_depth: float) -> None:
    if not 0 <= min_depth < max_depth:
        raise ConfigError(
            f"config keys '{key(prefix, 'min_depth')}'/'{key(prefix, 'max_depth')}': need 0 <= min_depth "
            f"< max_depth, got {min_depth} and {max_depth}"
        )


def trainer_common(prefix: str, trainer: Any) -> None:
    """Checks shared by the pretraining and fine-tuning ``trainer`` sections (``batch_size``,
    ``threads``, ``log_every_n_steps``, ``precision``, ``accelerator``, ``devices``)."""
    at_least(prefix, "batch_size", trainer.batch_size, 1)
    if trainer.threads is not None:
        at_least(prefix, "threads", trainer.threads, 1)
    at_least(prefix, "log_every_n_steps", trainer.log_every_n_steps, 1)
    one_of(prefix, "precision", trainer.precision, PRECISIONS)
    one_of(prefix, "accelerator", trainer.accelerator, ACCELERATORS)
    if device_request(trainer.devices) is None:
        raise ConfigError(
            f"config key '{key(prefix, 'devices')}': must be a count >= 1, -1 (all), 'auto', or device "
            f"indices as a list such as [0, 1] or a string such as '0,1', got {trainer.devices!r}"
        )


def device_request(devices: int | str | list[int]) -> int | str | list[int] | None:
    """``trainer.devices`` as Lightning reads it: ``"auto"``, a count (``-1`` = all) or a list of device
    indices; ``None`` when it is none of these (``0``, ``"abc"``, ``[]``, a negative or repeated index)."""
    if isinstance(devices, str):
        text = devices.strip()
        if text == "auto":
            return text
        if re.fullmatch(r"-?\d+", text):
            devices = int(text)
        elif re.fullmatch(r"\d+(\s*,\s*\d+)*\s*,?", text):  # '0,1' (and Lightning's '1,': index 1)
            devices = [int(t) for t in text.split(",") if t.strip()]
        else:
            return None
    if isinstance(devices, int):
        return devices if devices >= 1 or devices == -1 else None
    if devices and all(i >= 0 for i in devices) and len(set(devices)) == len(devices):
        return list(devices)
    return None


def strategy(prefix: str, value: str) -> None:
    """A strategy name Lightning knows (its registry; imported only for a name other than ``auto``)."""
    if value == "auto":
        return
    from lightning.pytorch.strategies import StrategyRegistry

    one_of(prefix, "strategy", value, ["auto", *StrategyRegistry.available_strategies()])


def trainer_machine(prefix: str, trainer: Any) -> None:
    """What a ``trainer`` section asks of this machine, checked before any work (Lightning would fail only
    after the data split and the teacher cache): a GPU for ``accelerator: gpu|cuda|mps``, device indices
    and counts the machine has, the packages of ``deepspeed``/``xla`` strategies and a CUDA GPU for
    ``fsdp``. Separate from the sections' ``validate``, which also runs when a module is rebuilt from the
    config stored in a checkpoint (possibly on another machine)."""
    import torch

    acc = trainer.accelerator
    cuda = torch.cuda.is_available()
    mps = torch.backends.mps.is_available()
    if (acc == "cuda" and not cuda) or (acc == "gpu" and not (cuda or mps)):
        raise ConfigError(
            f"config key '{key(prefix, 'accelerator')}': {acc!r} needs a GPU, but torch sees none "
            "(torch.cuda.is_available() is False); use 'auto' or 'cpu'"
        )
    if acc == "mps" and not mps:
        raise ConfigError(
            f"config key '{key(prefix, 'accelerator')}': 'mps' needs Apple's Metal (MPS), which torch does "
            "not see on this machine; use 'auto' or 'cpu'"
        )
    device = acc if acc in ("cpu", "cuda", "mps") else ("mps" if mps else "cuda" if cuda else "cpu")
    devices = device_request(trainer.devices)
    if device == "cpu" and not (devices == "auto" or (isinstance(devices, int) and devices >= 1)):
        raise ConfigError(
            f"config key '{key(prefix, 'devices')}': on the CPU it must be a process count >= 1 or 'auto' "
            f"(-1 and device indices need GPUs, and torch sees none), got {trainer.devices!r}"
        )
    if device == "cuda":
        have = torch.cuda.device_count()
        wanted = devices if isinstance(devices, list) else None
        if isinstance(devices, int) and devices > have:
            raise ConfigError(
                f"config key '{key(prefix, 'devices')}': asks for {devices} GPUs, but torch sees {have}"
            )
        if wanted is not None and max(wanted) >= have:
            raise ConfigError(
                f"config key '{key(prefix, 'devices')}': GPU index {max(wanted)} does not exist, torch sees "
                f"{have} GPU(s) (indices 0..{have - 1})"
            )
    name = getattr(trainer, "strategy", "auto")
    if name.startswith("fsdp") and device != "cuda":
        raise ConfigError(f"config key '{key(prefix, 'strategy')}': {name!r} needs a CUDA GPU")
    package = "deepspeed" if name.startswith("deepspeed") else ""
    if "xla" in name or "tpu" in name:
        package = "torch_xla"
    if package and importlib.util.find_spec(package) is None:
        raise ConfigError(f"config key '{key(prefix, 'strategy')}': {name!r} needs the {package} package")


def optim_common(prefix: str, lr: float, weight_decay: float, momentum: float, warmup_steps: int) -> None:
    """Checks shared by the pretraining and fine-tuning ``optim`` sections."""
    positive(prefix, "lr", lr)
    at_least(prefix, "weight_decay", weight_decay, 0)
    if not 0 <= momentum < 1:
        raise ConfigError(f"config key '{key(prefix, 'momentum')}': must be in [0, 1), got {momentum}")
    at_least(prefix, "warmup_steps", warmup_steps, 0)
