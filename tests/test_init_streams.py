"""The pretraining module draws each part's random initialisation from its own seeded stream."""

from __future__ import annotations

import torch

from ppkt.config import PretrainConfig, load_config
from ppkt.training.data import num_input_features
from ppkt.training.pretrain_module import PPKTPretrainModule


def build(*overrides: str) -> PPKTPretrainModule:
    cfg = load_config(PretrainConfig, overrides=list(overrides))
    return PPKTPretrainModule.from_config(cfg, num_input_features(cfg.data.features))


def same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_student_init_depends_on_the_seed_only() -> None:
    """Another teacher layer set (another UPL size) and another objective (an extra distillation head) leave
    the student and its projection head as they were; another ``trainer.seed`` changes them; building a
    module does not move the global generator (what is drawn after it is the same too)."""
    torch.manual_seed(123)
    before = torch.get_rng_state()
    base = build()
    assert torch.equal(torch.get_rng_state(), before)
    variant = build("teacher.layers=[stage5]", "loss.name=ppnce+distill")
    assert not same(base.upl, variant.upl)  # the variable that changed
    assert same(base.student, variant.student) and same(base.head, variant.head)
    other_seed = build("trainer.seed=1")
    assert not same(base.student, other_seed.student) and not same(base.head, other_seed.head)
    assert same(base.student, build().student)  # and the same seed gives the same init again
