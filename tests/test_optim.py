"""Weight decay only on ``dim() >= 2`` parameters (conv kernels, linear weights), never on BatchNorm or bias
parameters, with the caller's parameter groups (and their learning rates) kept."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ppkt.sparse import SubMConv3d
from ppkt.training.optim import build_optimizer, decays, param_groups

WD = 0.1


class Net(nn.Module):
    """A student-like backbone (sparse conv with bias, BatchNorm) and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = SubMConv3d(3, 4, 3, bias=True)
        self.bn = nn.BatchNorm1d(4)
        self.head = nn.Linear(4, 2)


DECAYED = {"conv.weight", "head.weight"}
NOT_DECAYED = {"conv.bias", "bn.weight", "bn.bias", "head.bias"}


def seg_groups(net: Net) -> list[dict[str, object]]:
    """Fine-tuning's groups: the head at its own lr, then the backbone (as ``SegmentationModule``)."""
    backbone = [*net.conv.parameters(), *net.bn.parameters()]
    return [{"params": list(net.head.parameters()), "lr": 0.5}, {"params": backbone, "lr": 0.01}]


def test_param_groups_split_by_dimension() -> None:
    net = Net()
    groups = param_groups(net.named_parameters(), WD)
    assert [g["weight_decay"] for g in groups] == [WD, 0.0]
    assert {n for n, _ in groups[0]["params"]} == DECAYED
    assert {n for n, _ in groups[1]["params"]} == NOT_DECAYED
    assert all(decays(p) == (n in DECAYED) for n, p in net.named_parameters())
    # groups keep their options (lr); a group's own weight_decay wins over the default
    split = param_groups([*seg_groups(net), {"params": [net.bn.weight], "weight_decay": 0.3}], WD)
    head_w, head_b, conv_w, rest, bn_w = split
    assert head_w == {"params": [net.head.weight], "lr": 0.5, "weight_decay": WD}
    assert head_b == {"params": [net.head.bias], "lr": 0.5, "weight_decay": 0.0}
    assert conv_w == {"params": [net.conv.weight], "lr": 0.01, "weight_decay": WD}
    assert rest["params"] == [net.conv.bias, net.bn.weight, net.bn.bias] and rest["weight_decay"] == 0.0
    assert bn_w["params"] == [net.bn.weight] and bn_w["weight_decay"] == 0.0  # 1-D: never decays


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_only_matrices_decay(name: str) -> None:
    """With zero gradients a step is pure weight decay: ``p ← (1 − lr·wd) p`` for conv and linear weights
    (AdamW's decoupled decay; SGD's ``wd·p`` gradient), no change for biases and BatchNorm parameters."""
    net = Net()
    with torch.no_grad():
        for p in net.parameters():
            p.uniform_(0.5, 1.5)  # BN's weight/bias start at 1/0: make every parameter non-trivial
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    lr = 0.2
    opt = build_optimizer(name, net.parameters(), lr, WD, momentum=0.9)
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in net.named_parameters():
        expected = before[n] * (1 - lr * WD) if n in DECAYED else before[n]
        torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=1e-7, msg=n)
    assert [g["weight_decay"] for g in opt.param_groups] == [WD, 0.0]


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_groups_keep_their_lr_and_equal_torch_on_the_split_groups(name: str) -> None:
    """Fine-tuning's two groups become four (each split by decay) that keep their lr and name; the updates
    equal torch's optimizer given the explicitly split groups."""
    torch.manual_seed(0)
    net = Net()
    ref_net = copy.deepcopy(net)
    opt = build_optimizer(name, seg_groups(net), 0.01, WD, momentum=0.9)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.5, 0.01, 0.01]
    assert [g["weight_decay"] for g in opt.param_groups] == [WD, 0.0, WD, 0.0]
    split = param_groups(seg_groups(ref_net), WD)
    if name == "adamw":
        ref: torch.optim.Optimizer = torch.optim.AdamW(split, lr=0.01)
    else:
        ref = torch.optim.SGD(split, lr=0.01, momentum=0.9, dampening=0.1)
    for _ in range(3):
        grads = [torch.randn_like(p) for p in net.parameters()]
        for model, optimizer in ((net, opt), (ref_net, ref)):
            for p, g in zip(model.parameters(), grads):
                p.grad = g.clone()
            optimizer.step()
    for (n, p), q in zip(net.named_parameters(), ref_net.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=n)


def test_unknown_optimizer_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer("adam", Net().parameters(), 0.01, WD, 0.9)
