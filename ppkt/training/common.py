"""Pieces shared by every Lightning run: precision, checkpointing, loggers, expected warnings."""

from __future__ import annotations

import inspect
import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

from ppkt.config import dump_config, to_dict
from ppkt.errors import ConfigError, WeightsError
from ppkt.training.resume import LastCheckpoint


def resolve_precision(precision: str, accelerator: str) -> Any:
    """``auto`` → ``16-mixed`` on CUDA, ``32-true`` elsewhere; any other value passes through."""
    if precision != "auto":
        return precision
    on_cuda = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
    return "16-mixed" if on_cuda else "32-true"


def checkpoint_callbacks(out: Path, monitor: str | None, mode: str, every_n_steps: int = 0) -> list[Callback]:
    """``<out>/checkpoints/best.ckpt`` by ``monitor`` (the last epoch's when ``None``), and ``last.ckpt``
    every ``every_n_steps`` optimizer steps (0: never during training) and at the end: always the final
    state (:class:`~ppkt.training.resume.LastCheckpoint`)."""
    best = ModelCheckpoint(
        dirpath=out / "checkpoints",
        filename="best",
        monitor=monitor,
        mode=mode,
        save_top_k=1,
        enable_version_counter=False,
        save_on_train_epoch_end=monitor is None,  # after validation: last.ckpt (saved next) records the best
    )
    return [best, LastCheckpoint(out / "checkpoints", every_n_steps)]


def run_loggers(out: Path) -> list[Logger]:
    """TensorBoard and CSV, in versioned sub-folders: a resumed run never overwrites earlier logs. The CSV
    rows are appended to the file as they are logged: a killed run keeps them."""
    return [
        TensorBoardLogger(out, name="tensorboard"),
        CSVLogger(out, name="csv", flush_logs_every_n_steps=1),
    ]


def quiet_known_warnings() -> None:
    """Silence Lightning warnings that are expected here (the frozen teacher is in eval mode on purpose)."""
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", message=r".*litlogger")
    warnings.filterwarnings("ignore", message=r"You defined a `validation_step` but have no `val_dataloader`")
    # a mid-epoch resume is exact: ResumeState points the EpochSampler at the next batch
    warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before")


def output_dir(out: str | Path) -> Path:
    """Create the output folder ``out`` (and its parents); a clear error when that is impossible."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path}: the output path exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{path}: cannot create the output folder: {e.strerror}") from e
    return path


def jsonable(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, ±inf) replaced by ``None``: strict JSON (``null``)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> str:
    """Write ``obj`` as indented strict JSON (non-finite numbers become ``null``); returns the text."""
    text = json.dumps(jsonable(obj), indent=2, allow_nan=False)
    path.write_text(text)
    return text


def start_run(cfg: Any, out: str | Path, seed: int, threads: int | None, verbose: bool = True) -> Path:
    """Create the run directory, set threads and seeds, write (and print) the resolved config."""
    quiet_known_warnings()
    run_dir = output_dir(out)
    if threads:
        torch.set_num_threads(threads)
    L.seed_everything(seed, workers=True, verbose=False)
    dump_config(cfg, run_dir / "config.yaml")
    if verbose:
        print("[ppkt] resolved config:\n" + yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return run_dir


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A Lightning checkpoint file, read on the CPU (tensors and plain data only): a :class:`WeightsError`
    naming ``path`` when it is missing, unreadable, or holds no ``state_dict``."""
    if not path.is_file():
        raise WeightsError(f"{path}: checkpoint file does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated or not a checkpoint
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise WeightsError(f"{path}: not a Lightning checkpoint (no state_dict)")
    return ckpt


M = TypeVar("M", bound=L.LightningModule)


def load_run_checkpoint(cls: type[M], path: str | Path, kind: str) -> M:
    """Load a ``ppkt <kind>`` checkpoint on the CPU; a missing or foreign file is a :class:`WeightsError`
    naming it.

    The file is read with ``weights_only=True`` (:func:`read_checkpoint`: tensors and plain data only, so a
    crafted pickle cannot run code whatever ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` says) and the module is
    rebuilt from its saved hyper-parameters — not through Lightning's ``load_from_checkpoint``, which leaves
    ``weights_only`` to torch's default. ppkt's checkpoints need no allow-listed class."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    hparams = ckpt.get("hyper_parameters")
    if not isinstance(hparams, dict):
        raise WeightsError(f"{path}: not a ppkt {kind} checkpoint (no hyper_parameters)")
    accepted = inspect.signature(cls.__init__).parameters
    try:
        module = cls(**{k: v for k, v in hparams.items() if k in accepted})
        module.load_state_dict(ckpt["state_dict"])
    except Exception as e:
        raise WeightsError(f"{path}: not a ppkt {kind} checkpoint: {e}") from e
    return module


class ThreadsAtStep(Callback):
    """Run a training's first ``share`` of its steps at the threads it started with, then ``wait()`` (e.g.
    for a job beside it to finish) and take ``threads``. The switch comes at a fixed step,
    ``round(share × total steps)``, not when the wait ends: the run's float path, and so its result, is
    the same however long the wait is (a resumed run past that step switches at its start)."""

    def __init__(self, share: float, threads: int, wait: Callable[[], None]) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"ThreadsAtStep: share must be in (0, 1], got {share}")
        self.share, self.threads, self.wait = share, threads, wait
        self.step: int | None = None
        self.switched = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.step = round(self.share * trainer.estimated_stepping_batches)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, i: int
    ) -> None:
        if not self.switched and self.step is not None and trainer.global_step >= self.step:
            self.wait()
            torch.set_num_threads(self.threads)
            self.switched = True
