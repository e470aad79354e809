"""``last.ckpt`` is the final state, and a run killed after a checkpoint and resumed with ``--resume last``
repeats the uninterrupted run bit for bit: every logged row, the final weights, the optimizer state and
``metrics.json``."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from ppkt.cli.main import main
from ppkt.config import PretrainConfig, load_config
from ppkt.errors import ConfigError
from ppkt.training.data import frame_splits, make_loader
from ppkt.training.pretrain_module import PPKTPretrainModule
from ppkt.training.resume import AtomicCheckpointIO, EpochSampler, derive_seed

from .conftest import REPO, TINY_PRETRAIN

#: 8 training frames (4 batches an epoch; the last scene is held out and validated every epoch), 7 steps:
#: training ends in the middle of epoch 1; last.ckpt at steps 2, 4 (after the validation), 6 and at the end
RUN = [
    *TINY_PRETRAIN,
    "trainer.threads=1",
    "trainer.seed=7",
    "trainer.max_epochs=2",
    "trainer.max_steps=7",
    "trainer.checkpoint_every_n_steps=2",
]


def pretrain(out: Path, data: Path, *extra: str) -> int:
    return main(["pretrain", "--out", str(out), f"data.root={data}", *RUN, *extra])


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def csv_rows(run: Path) -> dict[tuple[int, str], dict[str, str]]:
    """Every logged row of a run, over all its CSV versions (a later version wins), by (step, train|val)."""
    rows = {}
    for f in sorted((run / "csv").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name[8:])):
        with f.open() as fh:
            for r in csv.DictReader(fh):
                kind = "val" if r.get("val/loss") else "train"
                rows[int(r["step"]), kind] = {k: v for k, v in r.items() if v != ""}
    return rows


def assert_same(a: Any, b: Any, where: str = "") -> None:
    """Bit-for-bit equality of nested checkpoint data (tensors by ``torch.equal``)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def assert_same_run(full: Path, resumed: Path) -> None:
    """The resumed run logged, trained and reported exactly what the uninterrupted one did."""
    a, b = csv_rows(full), csv_rows(resumed)
    assert sorted(a) == sorted(b)  # the same steps, with the same labels (epoch, step)
    for key in a:
        assert a[key] == b[key], key
    ca, cb = load(full / "checkpoints" / "last.ckpt"), load(resumed / "checkpoints" / "last.ckpt")
    assert ca["global_step"] == cb["global_step"]
    sa, sb = ca["state_dict"], cb["state_dict"]
    assert sa.keys() == sb.keys()
    differing = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not differing, f"{len(differing)} of {len(sa)} tensors differ, e.g. {differing[:3]}"
    assert_same(ca["optimizer_states"], cb["optimizer_states"], "optimizer_states")
    assert_same(ca["lr_schedulers"], cb["lr_schedulers"], "lr_schedulers")
    assert_same(ca["ppkt_resume"]["step_losses"], cb["ppkt_resume"]["step_losses"], "step_losses")
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (full, resumed))
    for key in ("loss_initial", "loss_final", "steps", "retrieval_top1_heldout"):
        assert ma[key] == mb[key], key


@pytest.fixture(scope="module")
def uninterrupted(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("full") / "run"
    assert pretrain(out, tiny_synth) == 0
    return out


def test_last_ckpt_is_the_final_state(uninterrupted: Path) -> None:
    metrics = json.loads((uninterrupted / "metrics.json").read_text())
    assert metrics["steps"] == 7
    last = load(uninterrupted / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 7  # not the step of the best held-out loss (4) nor of an epoch end
    assert len(last["ppkt_resume"]["step_losses"]) == 7
    assert load(uninterrupted / "checkpoints" / "best.ckpt")["global_step"] == 4  # the only validation
    assert not list((uninterrupted / "checkpoints").glob(".*"))  # no temporary files left


def test_finetune_last_ckpt_is_the_final_state(tiny_synth: Path, tmp_path: Path) -> None:
    """3 steps validated every 2: ``last.ckpt`` is the step-3 state, not the step-2 (validated) one."""
    out = tmp_path / "ft"
    args = [
        *("finetune", "--out", str(out), f"data.root={tiny_synth}", "data.voxel_size=0.1"),
        *("data.fuse_voxel_size=0.05", "data.test=0.3", "data.val=0.3", "trainer.val_every_n_steps=2"),
        *("trainer.max_steps=3", "trainer.batch_size=2", "trainer.progress_bar=false", "trainer.threads=1"),
    ]
    assert main(args) == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 3
    assert load(out / "checkpoints" / "last.ckpt")["global_step"] == 3
    assert load(out / "checkpoints" / "best.ckpt")["global_step"] == 2


class Killed(Exception):
    pass


def test_killed_after_a_checkpoint_then_resumed_is_bit_for_bit(
    uninterrupted: Path, tiny_synth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process "kill": the run dies at its first training step after ``last.ckpt`` appears (step 2, mid
    epoch); nothing survives but what is on disk. The resumed part crosses an epoch end with its
    validation."""
    out = tmp_path / "run"
    step = PPKTPretrainModule.training_step

    def step_or_die(self: PPKTPretrainModule, batch: Any, batch_idx: int) -> Any:
        if (out / "checkpoints" / "last.ckpt").exists():
            raise Killed
        return step(self, batch, batch_idx)

    with monkeypatch.context() as m:
        m.setattr(PPKTPretrainModule, "training_step", step_or_die)
        with pytest.raises(Killed):
            pretrain(out, tiny_synth)
    assert load(out / "checkpoints" / "last.ckpt")["global_step"] < 7
    assert pretrain(out, tiny_synth, "--resume", "last") == 0
    assert_same_run(uninterrupted, out)
    assert json.loads((out / "metrics.json").read_text())["resumed_from_step"] == 2
    # the CSV of the killed part keeps its rows; the resumed part's rows go on from the checkpoint
    first = [int(r["step"]) for r in csv.DictReader((out / "csv" / "version_0" / "metrics.csv").open())]
    second = [int(r["step"]) for r in csv.DictReader((out / "csv" / "version_1" / "metrics.csv").open())]
    assert first == [0, 1] and second[0] == 2

    # resuming a finished run changes nothing and still describes the whole run
    assert pretrain(out, tiny_synth, "--resume", "last") == 0
    assert_same_run(uninterrupted, out)


@pytest.mark.slow
def test_kill_9_after_a_checkpoint_then_resume_is_bit_for_bit(
    uninterrupted: Path, tiny_synth: Path, tmp_path: Path
) -> None:
    """A real ``kill -9`` of a ``ppkt pretrain`` process as soon as its second ``last.ckpt`` appears (step 4,
    written after the epoch's validation)."""
    out = tmp_path / "run"
    args = ["pretrain", "--out", str(out), f"data.root={tiny_synth}", *RUN]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ppkt.cli.main", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = out / "checkpoints" / "last.ckpt"
    first = None  # the inode of the first last.ckpt: each checkpoint is a new file renamed over the last
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            inode = last.stat().st_ino
        except FileNotFoundError:
            inode = None
        if first is None:
            first = inode
        elif inode != first:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert load(last)["global_step"] < 7
    assert pretrain(out, tiny_synth, "--resume", "last") == 0
    assert_same_run(uninterrupted, out)


# ---------------------------------------------------------------------------------------------- pieces


def test_epoch_sampler_order_depends_only_on_seed_and_epoch() -> None:
    def epoch(s: EpochSampler, e: int) -> list[tuple[int, int]]:
        s.set_epoch(e)
        return list(s)

    a, b = EpochSampler(10, seed=3, shuffle=True), EpochSampler(10, seed=3, shuffle=True)
    e0, e1 = epoch(a, 0), epoch(a, 1)
    assert epoch(b, 1) == e1 and epoch(b, 0) == e0  # in any order of epochs, in any sampler
    assert sorted(i for i, _ in e0) == list(range(10)) and e0 != e1
    assert len({seed for _, seed in e0 + e1}) == 20  # a sample's seed: (seed, epoch, index)
    assert e0 != epoch(EpochSampler(10, seed=4, shuffle=True), 0)
    b.resume_at(1, 4)
    assert list(b) == e1[4:] and list(b) == e1  # the offset is used once
    # DDP: the ranks' shares cover the epoch (padded to equal lengths) and skip within their share
    shards = []
    for rank in range(3):
        s = EpochSampler(10, seed=3, shuffle=True)
        s.shard(rank, 3)
        assert len(s) == 4
        shards.append(epoch(s, 1))
    assert {k for share in shards for k in share} == set(e1)
    # evaluation: in order, the same samples every epoch
    ev = EpochSampler(4, seed=3, shuffle=False)
    assert [i for i, _ in epoch(ev, 0)] == [0, 1, 2, 3] and epoch(ev, 0) == epoch(ev, 5)
    assert len({derive_seed(1, 2), derive_seed(1, 2, 0), derive_seed(1, 2 + 2**32), derive_seed(2, 1)}) == 4


def test_a_batch_does_not_depend_on_earlier_random_draws(tiny_synth: Path) -> None:
    cfg = load_config(PretrainConfig, overrides=[f"data.root={tiny_synth}", *RUN])
    frames = frame_splits(cfg.data, verbose=False).train

    def batches(skip: int = 0, noise: bool = False) -> list[Any]:
        loader = make_loader(cfg.data, frames, 2, train=True, num_workers=0, seed=7)
        sampler = loader.sampler
        assert isinstance(sampler, EpochSampler)
        sampler.resume_at(1, skip * 2)
        out = []
        for batch in loader:
            out.append(batch)
            if noise:
                torch.rand(1000)  # e.g. another part of the program drawing from the global state
        return out

    full = batches()
    assert len(full) == 4
    for got, want in zip(batches(noise=True), full):
        assert torch.equal(got.feats, want.feats) and torch.equal(got.pair_uv, want.pair_uv)
    resumed = batches(skip=3)  # a resume after 3 batches of epoch 1 sees its last batch only
    assert len(resumed) == 1
    assert torch.equal(resumed[0].coords, full[3].coords) and torch.equal(resumed[0].images, full[3].images)


def test_a_failed_checkpoint_write_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)

    def die_half_way(obj: Any, f: Any) -> None:
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", die_half_way)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    assert torch.equal(load(path)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_checkpoint_every_n_steps_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"trainer\.checkpoint_every_n_steps.*>= 0"):
        load_config(PretrainConfig, overrides=["trainer.checkpoint_every_n_steps=-1"])
