"""The demo's report: aggregate runs over seeds, gains with standard errors, plots and a PCA feature image."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from ppkt.data.pairing import frame_to_sample
from ppkt.data.sample import PairedSample
from ppkt.data.transforms import Voxelize
from ppkt.data.types import Frame
from ppkt.errors import DataError
from ppkt.sparse import SparseTensor
from ppkt.training.pretrain_module import PPKTPretrainModule

#: what each (mode, labels_mode) cell of the demo measures
PROTOCOLS: dict[tuple[str, str], str] = {
    ("finetune", "scenes"): "limited reconstructions",
    ("finetune", "points_per_scene"): "limited annotations",
    ("finetune", "points"): "fraction of points",
    ("probe", "scenes"): "linear probe",
    ("probe", "points_per_scene"): "linear probe, limited annotations",
    ("probe", "points"): "linear probe, fraction of points",
}

Cell = tuple[str, str, float]  # (mode, labels_mode, labels)


def _cell(r: dict[str, Any]) -> Cell:
    return (r["mode"], r.get("labels_mode", "scenes"), r["labels"])


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group runs by (init, mode, labels_mode, labels): mean, sample std and standard error of the mean
    (``std / √n``) of test mIoU over seeds. Runs of one group from several pretraining runs (a
    ``pretrain_seed`` per run) are pooled; the standard error is then the one of the mean of the pretraining
    runs' means (``std of those means / √runs``: clusters of fine-tuning seeds, so it counts how much one
    pretraining run differs from another), and the row says ``pretrain_runs``."""
    groups: dict[tuple[str, Cell], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[(r["init"], _cell(r))].append(r)
    rows = []
    for (init, (mode, labels_mode, labels)), rs in sorted(
        groups.items(),
        key=lambda kv: (kv[0][1][0], kv[0][1][1] != "scenes", kv[0][1][1], kv[0][1][2], kv[0][0]),
    ):
        m = np.array([r["test"]["miou"] for r in rs], dtype=float)
        std = float(m.std(ddof=1)) if len(m) > 1 else 0.0
        row = {
            "init": init,
            "mode": mode,
            "labels_mode": labels_mode,
            "labels": labels,
            "labelled_scenes": rs[0]["train_scenes_labelled"],
            "labelled_points": rs[0].get("train_points_labelled"),
            "miou_mean": float(m.mean()),
            "miou_std": std,
            "miou_se": std / math.sqrt(len(m)),
            "seeds": len(m),
        }
        clusters: dict[Any, list[float]] = defaultdict(list)
        for r in rs:
            clusters[r.get("pretrain_seed")].append(float(r["test"]["miou"]))
        if len(clusters) > 1:
            means = np.array([np.mean(v) for v in clusters.values()])
            row["miou_se"] = float(means.std(ddof=1)) / math.sqrt(len(means))
            row["pretrain_runs"] = len(means)
        rows.append(row)
    return rows


def paired_se(runs: list[dict[str, Any]], cell: Cell) -> float | None:
    """The standard error of the gain in ``cell`` from the per-seed differences, pretrained − scratch with
    the same fine-tuning ``seed`` (both inits then share the seed's labelled scenes or points, data order
    and augmentation, so what the seed does to both cancels): ``std(d) / √n`` over the seeds, or, with
    several pretraining runs, the std of the runs' mean differences / √runs. ``None`` when some pretrained
    run has no scratch run of its seed, or there is a single seed."""
    scratch = {
        r["seed"]: float(r["test"]["miou"]) for r in runs if r["init"] == "scratch" and _cell(r) == cell
    }
    diffs: dict[Any, list[float]] = defaultdict(list)
    for r in runs:
        if r["init"] != "pretrained" or _cell(r) != cell:
            continue
        if r.get("seed") not in scratch:
            return None
        diffs[r.get("pretrain_seed")].append(float(r["test"]["miou"]) - scratch[r["seed"]])
    if len(diffs) > 1:
        means = np.array([np.mean(v) for v in diffs.values()])
        return float(means.std(ddof=1)) / math.sqrt(len(means))
    d = np.array(next(iter(diffs.values()), []))
    return float(d.std(ddof=1)) / math.sqrt(len(d)) if len(d) > 1 else None


def gains(rows: list[dict[str, Any]], runs: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Pretrained − scratch per cell, with the standard error of the difference of means (from the two
    rows' standard errors: ``√(σ²ₚ/n + σ²ₛ/n)`` for plain rows; ``significant`` = gain > 2 of it) and, given
    the ``runs``, the paired one (:func:`paired_se`, ``paired_se``; ``None`` where it cannot be formed)."""
    by = {(_cell(r), r["init"]): r for r in rows}
    out = []
    for (cell, init), pre in by.items():
        if init != "pretrained" or (cell, "scratch") not in by:
            continue
        scr = by[(cell, "scratch")]
        se = math.sqrt(pre["miou_se"] ** 2 + scr["miou_se"] ** 2)
        gain = pre["miou_mean"] - scr["miou_mean"]
        mode, labels_mode, labels = cell
        row = {
            "mode": mode,
            "labels_mode": labels_mode,
            "labels": labels,
            "gain": gain,
            "se": se,
            "significant": gain > 2 * se,
        }
        if runs is not None:
            row["paired_se"] = paired_se(runs, cell)
        out.append(row)
    return sorted(out, key=lambda g: (g["mode"], g["labels_mode"] != "scenes", g["labels_mode"], g["labels"]))


def _labels_text(r: dict[str, Any]) -> str:
    if r["labels_mode"] == "points_per_scene":
        return f"{r['labels']:g} points/scene"
    if r["labels_mode"] == "points":
        return f"{r['labels']:g} of the points"
    n = r["labelled_scenes"]
    return f"{r['labels']:g} → {n} scene{'s' if n != 1 else ''}"


def report_markdown(
    rows: list[dict[str, Any]],
    gain_rows: list[dict[str, Any]],
    pretrain: dict[str, dict[str, Any]],
    minutes: float,
    setting: str = "",
) -> str:
    """The demo's ``report.md``: the cells, then the pretext check of every pretraining run
    (``{run folder: its metrics}``)."""
    lines = [
        "# ppkt demo report",
        "",
        "Semantic segmentation (test mIoU, %)"
        + (f" on {setting}" if setting else "")
        + "; the same student, data, labels, schedule and seeds for both initialisations. Protocols (the "
        "ScanNet data-efficient benchmark's): *limited reconstructions* = a fraction of the training scenes "
        "keeps its labels; *limited annotations* = a fixed number of labelled points per training scene, "
        "chosen by the seed; *linear probe* = frozen backbone, a new linear head.",
        "",
        "| protocol | labels | scratch | pretrained | gain ± s.e. | paired s.e. | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    by = {(_cell(r), r["init"]): r for r in rows}
    for g in gain_rows:
        cell = (g["mode"], g["labels_mode"], g["labels"])
        s, p = by[(cell, "scratch")], by[(cell, "pretrained")]
        verdict = "gain > 2 s.e." if g["significant"] else "**within noise** (gain ≤ 2 s.e.)"
        lines.append(
            f"| {PROTOCOLS.get(cell[:2], f'{cell[0]} ({cell[1]})')} | {_labels_text(s)} "
            f"| {s['miou_mean']:.2f} ± {s['miou_se']:.2f} "
            f"| {p['miou_mean']:.2f} ± {p['miou_se']:.2f} | {g['gain']:+.2f} ± {g['se']:.2f} "
            f"| {_num(g.get('paired_se'), 2)} | {verdict} |"
        )
    seeds = next((r["seeds"] for r in rows if r["init"] == "scratch"), rows[0]["seeds"] if rows else 0)
    runs = max((r.get("pretrain_runs", 1) for r in rows), default=1)
    lines += [
        "",
        f"Seeds per cell: {seeds} (mean ± standard error of the mean over seeds; "
        "s.e. of the gain = √(s.e.²ₚ + s.e.²ₛ), the verdict's). Paired s.e.: from the per-seed differences "
        "(both inits share a seed's labels, data order and augmentation, so what the seed does to both — "
        "e.g. which room is labelled — cancels); n/a with one seed.",
    ]
    if runs > 1:
        lines.append(
            f"Pretrained cells: {runs} pretraining runs × {seeds} seeds, pooled; their s.e. is the one of "
            "the mean of the runs' means (it counts how much one pretraining run differs from another)."
        )
    lines.append("")
    if pretrain:
        several = len(pretrain) > 1
        lines += [
            "## Pretraining (pretext check on held-out frames)",
            "",
            ("| run " if several else "")
            + "| loss initial | loss final | retrieval top-1 | random init | chance "
            "| view consistency frames / scene | random init |",
            ("|---" if several else "") + "|---|---|---|---|---|---|---|",
        ]
        for name, m in pretrain.items():
            lines.append(
                (f"| {name} " if several else "") + f"| {m.get('loss_initial', float('nan')):.3f} "
                f"| {m.get('loss_final', float('nan')):.3f} "
                f"| {m.get('retrieval_top1_heldout', float('nan')):.4f} "
                f"| {m.get('retrieval_top1_random_init', float('nan')):.4f} "
                f"| {m.get('retrieval_chance', float('nan')):.4f} "
                f"| {_num(m.get('view_consistency_frames'))} / "
                f"{_num(m.get('view_consistency_scene'))} "
                f"| {_num(m.get('view_consistency_frames_random_init'))} / "
                f"{_num(m.get('view_consistency_scene_random_init'))} |"
            )
        lines.append("")
    lines += ["![report](report.png)", "", f"Total wall time: {minutes:.1f} min."]
    return "\n".join(lines) + "\n"


def _num(v: Any, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _pca_rgb(feats: torch.Tensor) -> np.ndarray:
    x = feats.double() - feats.double().mean(0)
    _, _, v = torch.pca_lowrank(x, q=3, center=False)
    y = (x @ v[:, :3]).numpy()
    lo, hi = np.percentile(y, 2, axis=0), np.percentile(y, 98, axis=0)
    return np.clip((y - lo) / np.maximum(hi - lo, 1e-9), 0, 1)


@torch.no_grad()
def feature_image(
    module: PPKTPretrainModule, frame: Frame, voxel_size: float, features: list[str], up_axis: int
) -> np.ndarray:
    """Student features of every point of ``frame``, PCA → RGB, painted at each point's pixel."""
    module.eval()
    sample = frame_to_sample(frame, min_depth=module.cfg.data.min_depth, max_depth=module.cfg.data.max_depth)
    uv = sample.pair_uv.long()
    if uv.shape[0] < 3:
        raise DataError(
            f"{frame.scene}/{frame.name}: {uv.shape[0]} points with depth in range, too few for a PCA "
            "rendering"
        )
    grid = module.cfg.data.voxel
    voxelize: Voxelize[PairedSample] = Voxelize(voxel_size, features, up_axis, grid=grid)
    s = voxelize(sample)
    assert s.coords is not None and s.feats is not None and s.inverse is not None
    coords = torch.cat([torch.zeros(len(s.coords), 1, dtype=torch.int32), s.coords], dim=1)
    point_feats = module.student(SparseTensor(s.feats, coords))[s.inverse]
    img = np.ones((*frame.shape, 3))
    img[uv[:, 1].numpy(), uv[:, 0].numpy()] = _pca_rgb(point_feats)
    return img


def plot_report(path: Path, rows: list[dict[str, Any]], panels: list[tuple[str, np.ndarray]]) -> None:
    """mIoU against the labels: limited reconstructions and the probe (left, fraction of the scenes) and
    limited annotations (right, points per scene, when the demo ran them), then the feature panels."""
    la = [r for r in rows if r["labels_mode"] == "points_per_scene"]
    width = max(3, len(panels))
    fig = plt.figure(figsize=(4.2 * width, 8))
    # one grid whose columns both rows divide evenly: the plots on top, the panels below
    top = 2 if la else 1
    cols = math.lcm(top, max(1, len(panels)))
    grid = fig.add_gridspec(2, cols)
    axes = [fig.add_subplot(grid[0, i * cols // top : (i + 1) * cols // top]) for i in range(top)]
    for init, color in (("scratch", "tab:gray"), ("pretrained", "tab:blue")):
        for ax, labels_mode, mode, style in (
            (axes[0], "scenes", "finetune", "-o"),
            (axes[0], "scenes", "probe", "--s"),
            (axes[-1], "points_per_scene", "finetune", "-o"),
        ):
            if labels_mode == "points_per_scene" and not la:
                continue
            rs = sorted(
                (
                    r
                    for r in rows
                    if r["init"] == init and r["mode"] == mode and r["labels_mode"] == labels_mode
                ),
                key=lambda r: r["labels"],
            )
            if rs:
                ax.errorbar(
                    [r["labels"] for r in rs],
                    [r["miou_mean"] for r in rs],
                    yerr=[r["miou_se"] for r in rs],
                    fmt=style,
                    color=color,
                    capsize=3,
                    label=f"{init} ({mode})",
                )
    axes[0].set_xlabel("fraction of labelled training scenes (limited reconstructions)")
    if la:
        axes[1].set_xlabel("labelled points per training scene (limited annotations)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_ylabel("test mIoU (%, ± s.e.)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    step = cols // max(1, len(panels))
    for i, (title, img) in enumerate(panels):
        a = fig.add_subplot(grid[1, i * step : (i + 1) * step])
        a.imshow(img)
        a.set_title(title)
        a.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _image_row(fig: Any, panels: list[tuple[str, np.ndarray]], rows: int, row: int) -> None:
    """Draw titled images as row ``row`` (0-based) of a ``rows × len(panels)`` grid."""
    for i, (title, img) in enumerate(panels):
        a = fig.add_subplot(rows, len(panels), row * len(panels) + i + 1)
        a.imshow(img)
        a.set_title(title)
        a.axis("off")


def pretraining_panels(
    trained: PPKTPretrainModule, random_init: PPKTPretrainModule, frame: Frame
) -> list[tuple[str, np.ndarray]]:
    """RGB of ``frame`` next to PCA renderings of the trained and the random-init student's point features."""
    d = trained.cfg.data
    args = (d.voxel_size, list(d.features), d.up_axis)
    with torch.no_grad():
        return [
            (f"{frame.scene}/{frame.name} (RGB)", frame.color),
            ("pretrained features (PCA)", feature_image(trained, frame, *args)),
            ("random-init features (PCA)", feature_image(random_init, frame, *args)),
        ]


def save_panels(path: Path, panels: list[tuple[str, np.ndarray]]) -> None:
    """One row of titled images."""
    fig = plt.figure(figsize=(4.2 * len(panels), 3.6))
    _image_row(fig, panels, rows=1, row=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
