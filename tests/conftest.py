"""Shared test set-up: deterministic threads, the shared real-data folder, and small fixtures.

Training is the expensive part of the suite, so the session trains once: :func:`pretrain_run` (one tiny
``ppkt pretrain``) and :func:`finetune_run` (one tiny ``ppkt finetune`` from it) are shared by every test
that only inspects a run folder, a checkpoint or metrics. Tests that need another config (bad input that
must fail early, resume, DDP, a loss or freezing option) train their own, as small as they can.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# The ppkt command's OpenMP setting (idle threads spin briefly, then sleep), set before torch loads OpenMP;
# subprocesses inherit it. On a shared machine a long-spinning thread burns the time slice its partner needs.
from ppkt.cli.main import set_thread_pool_env

set_thread_pool_env()

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)
# rendered and fused caches of the tests never touch the user's ~/.cache/ppkt
os.environ["PPKT_CACHE_DIR"] = tempfile.mkdtemp(prefix="ppkt-test-cache-")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` beside the repository; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny rendered synthetic dataset (3 scenes × 4 frames, 60×80), shared by the end-to-end tests."""
    from ppkt.data.synth import synthesize

    return synthesize(
        tmp_path_factory.mktemp("synth") / "data", scenes=3, frames_per_scene=4, seed=1, image_size=(60, 80)
    )


#: Overrides that make a pretraining run take seconds on the tiny dataset.
TINY_PRETRAIN = [
    "data.image_size=[48,64]",
    "data.voxel_size=0.1",
    "data.num_workers=0",
    "trainer.batch_size=2",
    "trainer.max_epochs=1",
    "trainer.progress_bar=false",
    "trainer.threads=2",
    "loss.num_pairs=256",
    "eval.retrieval_points=64",
    "eval.retrieval_frames=2",
    "trainer.log_every_n_steps=1",
]

#: Overrides that make a fine-tuning run take seconds on the tiny dataset (2 train scenes, 1 test scene).
TINY_FINETUNE = [
    "data.voxel_size=0.1",
    "data.fuse_voxel_size=0.05",
    "data.test=0.3",
    "data.val=0.0",
    "trainer.max_steps=3",
    "trainer.batch_size=2",
    "trainer.progress_bar=false",
    "trainer.threads=2",
    "trainer.log_every_n_steps=1",
]


def assert_mentions(message: object, *parts: object) -> None:
    """Each stable part of an error message (the file, the key, the value …) appears in it; the wording
    around them is free to change."""
    text = str(message)
    missing = [str(p) for p in parts if str(p) not in text]
    assert not missing, f"{missing} not in the message: {text!r}"


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture(scope="session")
def pretrain_run(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's tiny pretraining run folder (``TINY_PRETRAIN`` on ``tiny_synth``: 8 training frames,
    4 steps, 4 held-out frames): ``ppkt cache-features`` first fills the run's own teacher-feature cache
    (``<folder>/../cache``), then ``ppkt pretrain`` trains from it. Shared and read-only: a test that writes
    to the run (``--resume``, ``--out``) works on a copy; the fixture fails the session if one did not."""
    from ppkt.cli.main import main

    root = tmp_path_factory.mktemp("pretrain")
    common = [f"data.root={tiny_synth}", f"data.cache_dir={root / 'cache'}", *TINY_PRETRAIN]
    assert main(["cache-features", *common]) == 0
    run = root / "run"
    assert main(["pretrain", "--out", str(run), *common]) == 0
    before = _snapshot(run)
    yield run
    assert _snapshot(run) == before, f"a test changed the shared pretraining run {run}"


@pytest.fixture(scope="session")
def pretrained_ckpt(pretrain_run: Path) -> Path:
    """``last.ckpt`` of the shared pretraining run."""
    return pretrain_run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def finetune_run(
    tiny_synth: Path, pretrained_ckpt: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """The session's tiny fine-tuning run folder: ``TINY_FINETUNE`` (3 steps) from the shared pretraining
    checkpoint, half the training scenes labelled (``--labels 0.5`` of 2 → 1), seed 1, the default config
    otherwise (``class_weights: inverse_sqrt``, ``loss: ce``, no head-only steps). Shared and read-only."""
    from ppkt.cli.main import main

    run = tmp_path_factory.mktemp("finetune") / "run"
    args = ["finetune", "--out", str(run), "--init", str(pretrained_ckpt), "--labels", "0.5", "--seed", "1"]
    assert main([*args, f"data.root={tiny_synth}", *TINY_FINETUNE]) == 0
    before = _snapshot(run)
    yield run
    assert _snapshot(run) == before, f"a test changed the shared fine-tuning run {run}"
