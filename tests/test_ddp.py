"""DDP that matches single-process training: pixels gathered with gradients by the loss, synchronised
BatchNorm, metrics reduced over the processes, and bad-frame skipping that keeps the processes in step.

The collectives are checked in two CPU processes (gloo) against one process holding every row; the whole
pipeline by ``ppkt pretrain`` with 2 processes × batch b against 1 process × batch 2b on the same frames.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ppkt.distributed import all_true, gather_rows
from ppkt.losses import PPNCELoss
from ppkt.models.student import SparseBatchNorm, sync_batchnorm
from ppkt.sparse import SparseTensor

from .conftest import REPO

WORLD = 2
PAIRS = (5, 3)  # the processes hold different numbers of pairs ...
VOXELS = (7, 4)  # ... and of voxels
DIM = 6
TAU = 0.5


def split(x: torch.Tensor, sizes: tuple[int, ...], rank: int) -> torch.Tensor:
    start = sum(sizes[:rank])
    return x[start : start + sizes[rank]]


def global_data() -> dict[str, torch.Tensor]:
    """What the processes hold together (the same on each: seeded)."""
    g = torch.Generator().manual_seed(0)
    c = 3
    return {
        "points": torch.randn(sum(PAIRS), DIM, generator=g),
        "pixels": torch.randn(sum(PAIRS), DIM, generator=g),
        "feats": torch.randn(sum(VOXELS), c, generator=g) * 2 + 1,
        "feat_weights": torch.randn(sum(VOXELS), c, generator=g),  # a linear objective of the BN output
        "bn_weight": torch.rand(c, generator=g) + 0.5,
        "bn_bias": torch.randn(c, generator=g),
    }


def make_bn(data: dict[str, torch.Tensor]) -> SparseBatchNorm:
    bn = SparseBatchNorm(data["bn_weight"].shape[0], momentum=0.3)
    with torch.no_grad():
        bn.weight.copy_(data["bn_weight"])
        bn.bias.copy_(data["bn_bias"])
    return bn


def sparse(feats: torch.Tensor) -> SparseTensor:
    coords = torch.zeros(feats.shape[0], 4, dtype=torch.int64)
    coords[:, 1] = torch.arange(feats.shape[0])
    return SparseTensor(feats, coords)


def _worker(rank: int, init: str, out: str) -> None:
    """One of the two processes: every collective of ppkt.distributed and its users, results to a file."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=init, rank=rank, world_size=WORLD, timeout=timedelta(seconds=60)
    )
    data = global_data()
    res: dict[str, Any] = {}
    # gather_rows with a process holding no row; all_true
    rows, first = gather_rows(torch.arange(3.0 * (1 - rank)).view(-1, 1))
    res["gathered"], res["first"] = rows.flatten().tolist(), first
    res["all_true"] = [all_true(rank == 0, torch.device("cpu")), all_true(True, torch.device("cpu"))]
    # PPNCE over every process's pixels: the loss (this process's share) and the gradients of its rows
    for gather in (True, False):
        p = split(data["points"], PAIRS, rank).clone().requires_grad_(True)
        q = split(data["pixels"], PAIRS, rank).clone().requires_grad_(True)
        loss = PPNCELoss(TAU, num_pairs=0, gather_distributed=gather)(p, q)
        loss.backward()
        res[f"loss_gather={gather}"] = (loss.item(), p.grad, q.grad)
    # synchronised BatchNorm: output, gradients of the input rows and of the affine parameters, running stats
    for sync in (True, False):
        bn = make_bn(data)
        sync_batchnorm(bn, sync)
        x = split(data["feats"], VOXELS, rank).clone().requires_grad_(True)
        y = bn(sparse(x)).feats
        (y * split(data["feat_weights"], VOXELS, rank)).sum().backward()
        res[f"bn_sync={sync}"] = (
            y.detach(),
            x.grad,
            bn.weight.grad,
            bn.bias.grad,
            bn.running_mean,
            bn.running_var,
        )
    torch.save(res, Path(out) / f"{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(f"file://{out / 'rendezvous'}", str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"{r}.pt", weights_only=False) for r in range(WORLD)]


def test_gather_rows_and_all_true_across_processes(two_processes: list[dict[str, Any]]) -> None:
    for rank, res in enumerate(two_processes):
        assert res["gathered"] == [0.0, 1.0, 2.0]  # rank 0's 3 rows, then rank 1's none
        assert res["first"] == (0, 3)[rank]
        assert res["all_true"] == [False, True]


def test_gathered_ppnce_is_the_single_process_loss_with_its_gradients(
    two_processes: list[dict[str, Any]],
) -> None:
    """The mean of the processes' losses (what DDP optimises, its gradients averaged) is the loss of one
    process holding every pair — with 5 and 3 pairs, so the shares must be weighted, not plain means."""
    data = global_data()
    points = data["points"].clone().requires_grad_(True)
    pixels = data["pixels"].clone().requires_grad_(True)
    ref = PPNCELoss(TAU, num_pairs=0)(points, pixels)
    ref.backward()
    losses = [res["loss_gather=True"][0] for res in two_processes]
    assert sum(losses) / WORLD == pytest.approx(ref.item(), abs=1e-6)
    for i, grad in ((1, points.grad), (2, pixels.grad)):
        ddp = torch.cat([res["loss_gather=True"][i] for res in two_processes]) / WORLD
        torch.testing.assert_close(ddp, grad, rtol=1e-5, atol=1e-6)
    # without gathering each process contrasts only its own pixels: another objective
    alone = [res["loss_gather=False"][0] for res in two_processes]
    assert abs(sum(alone) / WORLD - ref.item()) > 1e-2


def test_synced_batchnorm_is_batchnorm_over_every_process_s_voxels(
    two_processes: list[dict[str, Any]],
) -> None:
    data = global_data()
    bn = make_bn(data)
    x = data["feats"].clone().requires_grad_(True)
    y = bn(sparse(x)).feats
    ((y * data["feat_weights"]).sum() / WORLD).backward()  # DDP's objective: the mean of the processes'
    synced = [res["bn_sync=True"] for res in two_processes]
    torch.testing.assert_close(torch.cat([s[0] for s in synced]), y.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([s[1] for s in synced]) / WORLD, x.grad, rtol=1e-5, atol=1e-5)
    for i, grad in ((2, bn.weight.grad), (3, bn.bias.grad)):  # DDP averages the parameter gradients
        torch.testing.assert_close(sum(s[i] for s in synced) / WORLD, grad, rtol=1e-5, atol=1e-5)
    for s in synced:
        torch.testing.assert_close(s[4], bn.running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(s[5], bn.running_var, rtol=1e-5, atol=1e-6)
    # not synchronised, each process normalises with its own statistics
    alone = torch.cat([res["bn_sync=False"][0] for res in two_processes])
    assert (alone - y.detach()).abs().max() > 1e-2


# ------------------------------------------------------------------------------ ppkt pretrain, 2 processes


def run_cli(args: list[str], timeout: float = 400) -> subprocess.CompletedProcess[str]:
    """``ppkt <args>`` in a new process group, killed whole on a timeout (a hung DDP rank included)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "ppkt.cli.main", *args]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"ppkt {' '.join(args[:3])} did not finish in {timeout} s (a DDP hang?):\n{out[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def four_frames(root: Path) -> Path:
    from ppkt.data.synth import synthesize

    return synthesize(root, scenes=1, frames_per_scene=4, seed=1, image_size=(24, 32))


#: 4 training frames of 24×32, no held-out frame, tiny voxels (one pair each: no random pair choice), no
#: random augmentation: with every pair in the loss a step depends only on which frames it sees
TINY = [
    "data.image_size=[24,32]",
    "data.voxel_size=0.01",
    "data.heldout=0",
    "data.num_workers=0",
    "data.augment.flip=0",
    "data.augment.crop_scale=[1,1]",
    "data.augment.rotate_degrees=0",
    "data.augment.scale=[1,1]",
    "teacher.cache=false",
    "loss.num_pairs=0",
    "trainer.accelerator=cpu",
    "trainer.threads=1",
    "trainer.progress_bar=false",
]


@pytest.mark.slow
def test_two_processes_give_the_first_step_loss_of_one_process_with_both_batches(tmp_path: Path) -> None:
    """2 processes × batch 2 see the 4 frames that 1 process × batch 4 sees in its first step (whatever the
    order): with gathered pixels and synced BatchNorm the reduced first-step loss is the same (before:
    8.2117 vs 8.8616)."""
    data = four_frames(tmp_path / "data")
    loss = {}
    for name, args in (
        ("one", ["trainer.max_steps=1", "trainer.batch_size=4", "trainer.devices=1"]),
        ("two", ["trainer.max_steps=1", "trainer.batch_size=2", "trainer.devices=2", "trainer.strategy=ddp"]),
    ):
        proc = run_cli(["pretrain", "--out", str(tmp_path / name), f"data.root={data}", *TINY, *args])
        assert proc.returncode == 0, proc.stdout[-3000:]
        m = json.loads((tmp_path / name / "metrics.json").read_text())
        assert m["steps"] == 1
        loss[name] = m["loss_initial"]
    assert loss["two"] == pytest.approx(loss["one"], abs=1e-5)


@pytest.mark.slow
def test_a_bad_frame_under_ddp_skips_the_step_on_every_process(tmp_path: Path) -> None:
    """4 frames, 1 unreadable, 2 processes × batch 1: in one of the 2 steps one process has no batch. The
    processes skip that step together (before: the other one waited for it in a collective, forever)."""
    data = four_frames(tmp_path / "data")
    bad = data / "scene_0000" / "000002.depth.png"
    bad.write_bytes(b"not a png")
    args = [*TINY, "data.skip_bad=true", "trainer.max_epochs=1", "trainer.batch_size=1", "trainer.devices=2"]
    proc = run_cli(
        ["pretrain", "--out", str(tmp_path / "run"), f"data.root={data}", *args, "trainer.strategy=ddp"]
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "skipping bad frame" in proc.stdout and bad.name in proc.stdout
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["steps"] == 1 and m["loss_initial"] == m["loss_final"]
