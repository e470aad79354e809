"""Exact resumption: a run killed at any moment after its first checkpoint and resumed from it repeats the
uninterrupted run bit for bit (on the CPU, for a fixed seed).

* Every random draw of training depends only on what it is for, never on how many draws came before in
  this process: the data order on ``(seed, epoch)`` (:class:`EpochSampler`), a sample's augmentation on
  ``(seed, epoch, index)`` (:class:`SeededItems`), and the pairs a step samples on ``(seed, step, rank)``
  (:func:`derive_seed`, used by the pretraining module).
* :class:`ResumeState` puts in every checkpoint what Lightning's lacks: the data position (epoch and
  batches done in it), the global random states and the per-step losses; on resume it points the sampler
  at the next unseen batch.
* :class:`LastCheckpoint` writes ``last.ckpt`` every N optimizer steps and at the end of training (so it is
  always the final state), and :class:`AtomicCheckpointIO` writes every checkpoint to a temporary file in
  the same folder, then renames it: a kill never leaves a truncated checkpoint.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, Checkpoint
from torch.utils.data import DataLoader, Dataset, Sampler

#: independent random streams of one seed (the first key after the seed in :func:`derive_seed`)
ORDER, SAMPLE, TRAIN_PAIRS, VAL_PAIRS, INIT = range(5)

#: the checkpoint key of :class:`ResumeState`'s data
RESUME_KEY = "ppkt_resume"

T = TypeVar("T")


def derive_seed(*keys: int) -> int:
    """A 63-bit seed mixed from integer keys (NumPy's ``SeedSequence``): distinct key tuples give
    independent streams, and the same keys the same stream in any process."""
    words = [len(keys)]  # an unambiguous encoding: SeedSequence would pad short entropy with zeros
    for k in keys:
        k %= 2**64
        words += [k & 0xFFFFFFFF, k >> 32]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0]) >> 1


class EpochSampler(Sampler[tuple[int, int]]):
    """Keys ``(index, sample_seed)`` for :class:`SeededItems`: the indices in an order that depends only on
    ``(seed, epoch)`` (``shuffle``; otherwise in order), and a per-sample seed of ``(seed, epoch, index)``
    (``(seed, index)`` without ``shuffle``: evaluation sees the same samples every epoch).

    :meth:`shard` splits every epoch over DDP ranks (padded by wrapping around, as
    :class:`~torch.utils.data.DistributedSampler`); :meth:`resume_at` makes the next pass start at an epoch
    and an offset into the rank's share (set once, then consumed)."""

    def __init__(self, size: int, seed: int, shuffle: bool) -> None:
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.epoch = 0
        self.rank, self.world = 0, 1
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each training epoch."""
        self.epoch = epoch

    def shard(self, rank: int, world: int) -> None:
        self.rank, self.world = rank, world

    def resume_at(self, epoch: int, skip: int) -> None:
        self.epoch, self._skip = epoch, skip

    def __len__(self) -> int:
        return math.ceil(self.size / self.world)

    def sample_seed(self, index: int) -> int:
        if self.shuffle:
            return derive_seed(self.seed, SAMPLE, self.epoch, index)
        return derive_seed(self.seed, SAMPLE, index)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(derive_seed(self.seed, ORDER, self.epoch))
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        total = len(self) * self.world
        mine = [order[j % self.size] for j in range(self.rank, total, self.world)]
        skip, self._skip = self._skip, 0
        for i in mine[skip:]:
            yield i, self.sample_seed(i)


class SeededItems(Dataset[T], Generic[T]):
    """``dataset[index]`` for a key ``(index, sample_seed)`` of :class:`EpochSampler`, drawn with torch's CPU
    random state seeded from ``sample_seed`` (and restored afterwards): a sample's augmentation depends on
    its key alone, not on what this process or worker drew before."""

    def __init__(self, dataset: Dataset[T]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> T:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            return self.dataset[index]


def epoch_sampler(loader: DataLoader) -> EpochSampler | None:
    sampler = loader.sampler
    return sampler if isinstance(sampler, EpochSampler) else None


def rng_states() -> dict[str, Any]:
    """The global torch (CPU and CUDA), NumPy and Python random states, as tensors and plain data (loadable
    with ``torch.load(weights_only=True)``)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    cuda = states.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))


class ResumeState(Callback):
    """Saves with every checkpoint, and restores on resume, what an exact continuation needs beyond
    Lightning's own state: the position in the data (epoch, batches done in it: the resumed run's
    :class:`EpochSampler` skips them), the global random states, and the module's per-step losses
    (``step_losses``, when it has them). Also shards the loaders' samplers over the DDP ranks."""

    def __init__(self, train: DataLoader, val: DataLoader | None = None) -> None:
        self.train = train
        loaders = [train] if val is None else [train, val]
        self.samplers = [s for dl in loaders if (s := epoch_sampler(dl)) is not None]
        self.epoch = 0
        self.batches = 0  # batches of ``epoch`` done (trained on)
        self.resumed_from: int | None = None  # the global step of the checkpoint resumed from

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for s in self.samplers:
            s.shard(trainer.global_rank, trainer.world_size)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch, self.batches = trainer.current_epoch, 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.batches = batch_idx + 1

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        state: dict[str, Any] = {"epoch": self.epoch, "batches": self.batches, "rng": rng_states()}
        losses = getattr(pl_module, "step_losses", None)
        if losses is not None:
            state["step_losses"] = torch.tensor(losses, dtype=torch.float64)
        checkpoint[RESUME_KEY] = state

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self.resumed_from = int(checkpoint.get("global_step", 0))
        state = checkpoint.get(RESUME_KEY)
        if state is None:  # a checkpoint of an older ppkt: resumes, but not exactly
            return
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if batches >= len(self.train):  # saved at the end of an epoch: the next one starts afresh
            epoch, batches = epoch + 1, 0
        self.epoch, self.batches = epoch, batches
        sampler = epoch_sampler(self.train)
        if sampler is not None:
            assert self.train.batch_size is not None
            sampler.resume_at(epoch, batches * self.train.batch_size)
        set_rng_states(state["rng"])
        if "step_losses" in state and hasattr(pl_module, "step_losses"):
            pl_module.step_losses = state["step_losses"].tolist()


class LastCheckpoint(Checkpoint):
    """``<dirpath>/last.ckpt``: every ``every_n_steps`` optimizer steps (0: none during training) and at the
    end of training, so it always holds the final state.

    The logs on disk always reach the step of ``last.ckpt``: a step's checkpoint is written in
    ``on_train_batch_end``, before Lightning logs that step, so it is staged beside ``last.ckpt`` and renamed
    over it at the next hook, once the step's row is written. A save due at the last batch of an epoch that
    ends with a validation waits for its end (as Lightning's own checkpoints do): a run resumed from it
    neither skips nor repeats that validation."""

    def __init__(self, dirpath: Path, every_n_steps: int = 0) -> None:
        self.path = Path(dirpath) / "last.ckpt"
        self.staged = self.path.with_name(f".{self.path.name}.staged")
        self.every_n_steps = every_n_steps
        self._saved_step = -1
        self._pending = False  # due at the validation's end
        self._is_staged = False  # ``staged`` waits for its rename

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:  # left by an earlier run killed while it saved
            for stale in self.path.parent.glob(".*.ckpt.*"):
                stale.unlink(missing_ok=True)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step % self.every_n_steps == 0 and step != self._saved_step:
            if batch_idx + 1 >= trainer.num_training_batches and validates_after_epoch(trainer):
                self._pending = True
            else:
                self.save(trainer, staged=True)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.commit(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.commit(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending and not trainer.sanity_checking:
            self.save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.commit(trainer)
        if self._pending:  # no validation ran after all
            self.save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self.commit(trainer)

    def save(self, trainer: L.Trainer, staged: bool = False) -> None:
        """Write the checkpoint: to ``last.ckpt``, or ``staged`` for :meth:`commit`."""
        if not staged:
            flush_loggers(trainer)
        trainer.save_checkpoint(self.staged if staged else self.path, weights_only=False)
        self._saved_step, self._pending, self._is_staged = trainer.global_step, False, staged
        if not staged and trainer.is_global_zero:
            self.staged.unlink(missing_ok=True)

    def commit(self, trainer: L.Trainer) -> None:
        """The staged checkpoint becomes ``last.ckpt`` (the logs written so far are flushed first)."""
        if not self._is_staged:
            return
        self._is_staged = False
        flush_loggers(trainer)
        if trainer.is_global_zero:
            os.replace(self.staged, self.path)
            fsync_dir(self.path.parent)


def flush_loggers(trainer: L.Trainer) -> None:
    for logger in trainer.loggers:
        logger.save()


def fsync_dir(path: Path) -> None:
    """Make a rename in folder ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def validates_after_epoch(trainer: L.Trainer) -> bool:
    """Whether the epoch now training ends with a validation (Lightning's default schedule: validation
    batches, ``val_check_interval=1.0`` and ``check_val_every_n_epoch`` due)."""
    every = trainer.check_val_every_n_epoch
    return (
        trainer.enable_validation
        and sum(trainer.num_val_batches) > 0
        and trainer.val_check_interval == 1.0
        and every is not None
        and (trainer.current_epoch + 1) % every == 0
    )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file beside it, syncs it to disk, then renames it over the old one:
    a checkpoint file is always complete (Lightning's own writer may copy a temporary file across file
    systems, which a kill can cut short)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(path.parent)
