"""Shared test set-up: deterministic threads, the shared real-data folder, and small fixtures."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

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
