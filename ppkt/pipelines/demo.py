"""``ppkt demo``: the main job. Pretrain on the embedded data, then fine-tune and linear-probe from scratch
and from the pretrained checkpoint at several label fractions over several seeds, and write a report."""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, as_completed, wait
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

from ppkt.config import dump_config, from_dict, to_dict
from ppkt.config.demo import DemoConfig
from ppkt.config.finetune import FinetuneConfig, SegDataConfig
from ppkt.config.pretrain import PretrainConfig, SourceConfig, share_source
from ppkt.data.readers import is_lidar_layout, open_scenes
from ppkt.errors import ConfigError
from ppkt.pipelines.finetune import run_finetune
from ppkt.pipelines.pretrain import run_pretrain
from ppkt.pipelines.report import gains, plot_report, pretraining_panels, report_markdown, summarize
from ppkt.training.common import ThreadsAtStep, load_run_checkpoint, output_dir, write_json
from ppkt.training.pretrain_module import PPKTPretrainModule
from ppkt.training.seg_data import SceneSplits, load_scene_splits


def align_finetune_data(cfg: DemoConfig) -> None:
    """The downstream task uses the pretraining data: the whole shared data section
    (:class:`~ppkt.config.pretrain.SourceConfig`: scenes, reader, voxels, features) and the student come from
    ``pretrain``, and its test scenes are exactly the scenes held out from pretraining (``data.test`` =
    ``data.heldout``, both split by :func:`~ppkt.data.splits.split_by_order`)."""
    p, f = cfg.pretrain.data, cfg.finetune.data
    default = SegDataConfig()
    for field in fields(SourceConfig):
        mine, default_value = getattr(f, field.name), getattr(default, field.name)
        if mine != default_value and mine != getattr(p, field.name):
            raise ConfigError(
                f"config key 'finetune.data.{field.name}': the demo takes it from "
                f"'pretrain.data.{field.name}' (set that one instead)"
            )
    share_source(f, p)
    f.test = p.heldout
    cfg.finetune.student = copy.deepcopy(cfg.pretrain.student)


def pretraining_runs(cfg: DemoConfig) -> dict[str, PretrainConfig]:
    """The demo's pretraining runs by folder name: ``pretrain`` (``pretrain_seeds: []``), or
    ``pretrain-seed<p>`` for every seed of ``pretrain_seeds`` (the pretraining config with that seed)."""
    if not cfg.pretrain_seeds:
        return {"pretrain": cfg.pretrain}
    runs = {}
    for p in cfg.pretrain_seeds:
        pc = copy.deepcopy(cfg.pretrain)
        pc.trainer.seed = p
        runs[f"pretrain-seed{p}"] = pc
    return runs


def run_demo(cfg: DemoConfig, out: str | Path) -> dict[str, Any]:
    start = time.time()
    out = output_dir(out)
    align_finetune_data(cfg)
    dump_config(cfg, out / "config.yaml")
    runs_cfg = pretraining_runs(cfg)
    ckpts = {pc.trainer.seed: out / name / "checkpoints" / "last.ckpt" for name, pc in runs_cfg.items()}
    jobs = demo_jobs(cfg, ckpts if cfg.pretrain_seeds else next(iter(ckpts.values())))
    # the scenes first (rendered once, into the cache), so that the scratch jobs can start beside pretraining
    splits = load_scene_splits(cfg.finetune.data)
    n = (len(splits.train), len(splits.val), len(splits.test))
    unit = "scans" if is_lidar_layout(cfg.finetune.data.layout) else "scenes"
    print(f"[ppkt] segmentation: {n[0]} train / {n[1]} val / {n[2]} test {unit}")
    overlap = cfg.overlap and cfg.workers > 1
    switch: set[str] = set()  # runs that take every core once the scratch jobs are done
    for name, pc in runs_cfg.items():
        if overlap and pc.trainer.threads is None:
            pc.trainer.threads = overlap_threads(cfg)
            if cfg.overlap_share < 1:
                switch.add(name)
    pretrain_metrics: dict[str, dict[str, Any]] = {}

    def pretrain(wait_free: Callable[[], None]) -> None:
        cores = os.cpu_count() or 1

        def take_every_core() -> None:
            print(f"[ppkt] pretraining: {cfg.overlap_share:g} of the steps done; no further job beside it")
            t = time.time()
            wait_free()
            waited = f"waited {time.time() - t:.0f} s"
            print(f"[ppkt] pretraining: {cores} threads from here ({waited})", flush=True)

        for name, pc in runs_cfg.items():
            more = [ThreadsAtStep(cfg.overlap_share, cores, take_every_core)] if name in switch else []
            pretrain_metrics[name] = run_pretrain(pc, out / name, callbacks=more)

    # scratch jobs first: with ``overlap`` they run one at a time beside pretraining, else after it
    named = sorted(((name, fc) for name, fc, _ in jobs), key=lambda job: job[1].init != "scratch")
    free = sum(1 for _, fc in named if fc.init == "scratch") if overlap else 0
    done = run_jobs(named, out / "runs", cfg.workers, splits, beside=(pretrain, free))
    by_name = {name: r for (name, _), r in zip(named, done, strict=True)}
    runs = [by_name[name] for name, _, _ in jobs]
    for (_, _, p), r in zip(jobs, runs, strict=True):
        if p is not None:
            r["pretrain_seed"] = p  # pools the cell over pretraining runs (summarize)

    rows = summarize(runs)
    gain_rows = gains(rows, runs)
    panels = feature_panels(cfg, next(iter(ckpts.values())))
    plot_report(out / "report.png", rows, panels)
    minutes = (time.time() - start) / 60
    setting = f"{len(splits.test)} test {unit[:-1]}(s), every labelled point of them" + (
        " — the training scenes themselves (`finetune.data.split: all`)"
        if cfg.finetune.data.split == "all"
        else ""
    )
    report = report_markdown(rows, gain_rows, pretrain_metrics, minutes, setting)
    (out / "report.md").write_text(report)
    keys = ("init", "mode", "labels_mode", "labels", "miou_mean", "miou_std", "miou_se", "seeds")
    result = {
        "results": [{k: r[k] for k in (*keys, "pretrain_runs") if k in r} for r in rows],
        "gains": gain_rows,
        "pretrain": next(iter(pretrain_metrics.values())),
        "wall_time_min": round(minutes, 2),
    }
    if cfg.pretrain_seeds:
        result["pretrain_runs"] = pretrain_metrics
    write_json(out / "metrics.json", result)
    print(report)
    return result


#: the demo's cells: (mode, labels_mode) of each protocol
LabelsMode = Literal["scenes", "points", "points_per_scene"]
LIMITED_RECONSTRUCTIONS: tuple[str, LabelsMode] = ("finetune", "scenes")
LIMITED_ANNOTATIONS: tuple[str, LabelsMode] = ("finetune", "points_per_scene")
LINEAR_PROBE: tuple[str, LabelsMode] = ("probe", "scenes")


def demo_jobs(cfg: DemoConfig, ckpt: Path | dict[int, Path]) -> list[tuple[str, FinetuneConfig, int | None]]:
    """Every (cell, init, seed) fine-tuning job, named, with the seed of the pretraining run it starts from:
    limited reconstructions (``label_fractions``), limited annotations (``label_points``), the linear probe
    (``probe_labels``), each from scratch and from ``ckpt`` — or from every checkpoint of ``{pretraining
    seed: checkpoint}`` (jobs ``<mode>-pretrained-p<seed>-…``). Both inits of one seed get the same config
    but ``init``, hence the same labels, data order and augmentation."""
    cells: list[tuple[tuple[str, LabelsMode], float, str]] = [
        (LIMITED_RECONSTRUCTIONS, f, f"labels{f:g}") for f in cfg.label_fractions
    ]
    cells += [(LIMITED_ANNOTATIONS, float(n), f"points{n}") for n in cfg.label_points]
    cells.append((LINEAR_PROBE, cfg.probe_labels, f"labels{cfg.probe_labels:g}"))
    threads = cfg.finetune.trainer.threads
    if cfg.workers > 1:  # share the cores between the worker processes
        threads = max(1, (os.cpu_count() or 1) // cfg.workers)
    inits: list[tuple[str, str, int | None]] = [("scratch", "scratch", None)]
    if isinstance(ckpt, dict):
        inits += [(f"pretrained-p{p}", str(path), p) for p, path in ckpt.items()]
    else:
        inits.append(("pretrained", str(ckpt), None))
    todo: list[tuple[str, FinetuneConfig, int | None]] = []
    for seed in cfg.seeds:
        for (mode, labels_mode), labels, tag in cells:
            for init, init_value, pretrain_seed in inits:
                fc: FinetuneConfig = copy.deepcopy(cfg.finetune)
                fc.init = init_value
                fc.probe, fc.labels_mode, fc.labels = mode == "probe", labels_mode, labels
                fc.trainer.seed = seed
                fc.trainer.progress_bar = False
                fc.trainer.threads = threads
                todo.append((f"{mode}-{init}-{tag}-seed{seed}", fc, pretrain_seed))
    return todo


#: a worker process's loaded scenes, by their data config (the demo's jobs share one)
_worker_splits: dict[str, SceneSplits] = {}


def _job(cfg: dict[str, Any], out: str) -> dict[str, Any]:
    """One fine-tuning run in a worker process. The process runs job after job: it imports torch and
    Lightning once and loads the scenes once per data config (``run_finetune`` seeds every run itself, so a
    run's result does not depend on what ran before it in the process). Lightning's per-run banners are
    silenced (the demo prints one line per run)."""
    import logging

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    fc = from_dict(FinetuneConfig, cfg)
    key = json.dumps(cfg["data"], sort_keys=True, default=str)
    if key not in _worker_splits:
        _worker_splits[key] = load_scene_splits(fc.data, verbose=False)
    return run_finetune(fc, out, splits=_worker_splits[key], verbose=False)


def overlap_threads(cfg: DemoConfig) -> int:
    """Threads for pretraining while one fine-tuning job (``cores / workers`` threads) runs beside it."""
    cores = os.cpu_count() or 1
    return max(1, cores - max(1, cores // cfg.workers))


def run_jobs(
    jobs: list[tuple[str, FinetuneConfig]],
    out: Path,
    workers: int,
    splits: SceneSplits,
    beside: tuple[Callable[[Callable[[], None]], None], int] | None = None,
) -> list[dict[str, Any]]:
    """Run the fine-tuning jobs in ``workers`` worker processes, each running job after job with its scenes
    loaded once (``workers == 1``: in this process, reusing the loaded ``splits``); results in job order.
    ``beside = (call, n)``: run ``call(wait_free)`` (pretraining) in this process first, the first ``n``
    jobs (those that do not need it) one at a time beside it, and the rest ``workers`` at a time once it has
    returned. ``wait_free()`` (e.g. to take the job's core) starts no further job beside ``call`` and blocks
    until the running one has ended; the jobs it did not start run after ``call``, with the rest."""

    def done(name: str, m: dict[str, Any]) -> None:
        print(f"[ppkt] {name}: test mIoU {m['test']['miou']:.2f} ({m['wall_time_s']:.0f} s)", flush=True)

    if workers == 1:
        if beside is not None:
            beside[0](lambda: None)
        results = []
        for name, fc in jobs:
            results.append(run_finetune(fc, out / name, splits=splits, verbose=False))
            done(name, results[-1])
        return results

    futures: dict[str, Future[dict[str, Any]]] = {}
    lock = threading.Lock()

    def submit(pool: ProcessPoolExecutor, name: str, fc: FinetuneConfig) -> Future[dict[str, Any]]:
        fut = pool.submit(_job, to_dict(fc), str(out / name))
        fut.add_done_callback(lambda f: None if f.cancelled() or f.exception() else done(name, f.result()))
        futures[name] = fut
        return fut

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        if beside is not None:
            call, n_free = beside
            stop: Future[Any] = Future()
            hold, fed = threading.Event(), threading.Event()

            def feed() -> None:  # one job in flight until ``call`` returns or holds the feed
                try:
                    for name, fc in jobs[:n_free]:
                        with lock:
                            if stop.done() or hold.is_set():
                                return
                            fut = submit(pool, name, fc)
                        pending: list[Future[Any]] = [fut, stop]
                        wait(pending, return_when=FIRST_COMPLETED)
                finally:
                    fed.set()

            def wait_free() -> None:  # no new job beside ``call``; wait for the running one
                hold.set()
                fed.wait()

            def stop_feeding() -> None:
                with lock:  # no submission after this
                    stop.set_result(None)
                feeder.join()

            feeder = threading.Thread(target=feed, name="ppkt-demo-feeder", daemon=True)
            feeder.start()
            try:
                call(wait_free)
            except BaseException:
                stop_feeding()
                pool.shutdown(wait=True, cancel_futures=True)  # a job not yet started never starts
                raise
            stop_feeding()
        for name, fc in jobs:
            if name not in futures:
                submit(pool, name, fc)
        for fut in as_completed(futures.values()):
            fut.result()  # raises the first failure
    return [futures[name].result() for name, _ in jobs]


def feature_panels(cfg: DemoConfig, ckpt: Path) -> list[tuple[str, Any]]:
    """RGB of one held-out frame next to PCA renderings of pretrained and random-init point features (RGB-D
    data; none for LiDAR scans)."""
    from ppkt.training.data import data_root

    p = cfg.pretrain
    if is_lidar_layout(p.data.layout):
        return []
    folders = open_scenes(data_root(p.data, verbose=False), p.data.layout)
    frame = folders[-1].read(0)  # the last scene is always held out from pretraining
    trained = load_run_checkpoint(PPKTPretrainModule, ckpt, "pretrain")
    import lightning as L

    L.seed_everything(p.trainer.seed, verbose=False)
    random_init = PPKTPretrainModule(trained.hparams["config"], trained.hparams["in_channels"])
    return pretraining_panels(trained, random_init, frame)
