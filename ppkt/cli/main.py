"""``ppkt <command>``: a thin layer that builds objects from a config and calls library code."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ppkt.errors import ConfigError, PPKTError


def _cmd_synth(args: argparse.Namespace) -> None:
    if args.lidar:
        from ppkt.data.synth.lidar import LidarModel
        from ppkt.data.synth.lidar_writer import synthesize_lidar

        lidar = LidarModel(
            beams=args.beams, azimuths=args.azimuths, fov_up=args.fov_up, fov_down=args.fov_down
        )
        path = synthesize_lidar(
            args.out,
            scenes=args.scenes,
            frames_per_scene=args.frames_per_scene,
            seed=args.seed,
            image_size=(args.height or 120, args.width or 160),
            lidar=lidar,
            cameras=args.cameras,
        )
        what = f"LiDAR sweeps with {args.cameras} camera images each (rig layout)"
    else:
        from ppkt.data.synth import synthesize

        path = synthesize(
            args.out,
            scenes=args.scenes,
            frames_per_scene=args.frames_per_scene,
            seed=args.seed,
            image_size=(args.height or 240, args.width or 320),
        )
        what = "frames"
    print(f"[ppkt] wrote {args.scenes} scenes × {args.frames_per_scene} {what} to {path}")


def _cmd_pretrain(args: argparse.Namespace) -> None:
    from ppkt.config import PretrainConfig, load_config
    from ppkt.pipelines.pretrain import run_pretrain

    cfg = load_config(PretrainConfig, args.config, args.overrides)
    run_pretrain(cfg, args.out, resume=args.resume)


def _cmd_finetune(args: argparse.Namespace) -> None:
    from ppkt.config import FinetuneConfig, load_config
    from ppkt.pipelines.finetune import run_finetune

    overrides = list(args.overrides)
    for key, value in (
        ("init", args.init),
        ("labels", args.labels),
        ("labels_mode", args.labels_mode),
        ("trainer.seed", args.seed),
    ):
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.probe:
        overrides.append("probe=true")
    cfg = load_config(FinetuneConfig, args.config, overrides)
    run_finetune(cfg, args.out)


def _cmd_evaluate(args: argparse.Namespace) -> None:
    if args.task == "retrieval":
        from ppkt.pipelines.retrieval import run_retrieval_eval

        if args.config is not None or args.overrides:
            raise ConfigError("evaluate --task retrieval takes no --config or key=value overrides")
        run_retrieval_eval(
            args.ckpt, args.data, args.out, args.layout, args.points, args.frames, args.pairing
        )
        return
    from ppkt.pipelines.finetune import run_evaluate

    run_evaluate(args.ckpt, args.data, args.out, args.split, args.config, args.overrides)


def _cmd_export(args: argparse.Namespace) -> None:
    from ppkt.pipelines.export import run_export

    run_export(args.ckpt, args.to, args.out, args.head)


def _cmd_cache_features(args: argparse.Namespace) -> None:
    from ppkt.config import PretrainConfig, load_config
    from ppkt.pipelines.cache_features import fill_feature_cache
    from ppkt.training.data import frame_splits

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    cfg = load_config(PretrainConfig, args.config, args.overrides)
    splits = frame_splits(cfg.data)
    fill_feature_cache(cfg, splits.train + splits.heldout, batch_size=args.batch_size)


def _is_demo_config(file: str | None) -> bool:
    """Whether the YAML ``file`` is a demo config (a ``pretrain:`` section at its top level); an unreadable
    file is not (:func:`~ppkt.config.load_config` then names the problem)."""
    from pathlib import Path

    import yaml

    if file is None:
        return False
    try:
        loaded = yaml.safe_load(Path(file).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(loaded, dict) and "pretrain" in loaded


def _cmd_teacher_probe(args: argparse.Namespace) -> None:
    from ppkt.config import PretrainConfig, load_config
    from ppkt.config.demo import DemoConfig
    from ppkt.pipelines.teacher_probe import run_teacher_probe

    if _is_demo_config(args.config):  # e.g. configs/scannet_benchmark.yaml: probe its pretraining data
        demo = load_config(DemoConfig, args.config, [f"pretrain.{o}" for o in args.overrides])
        cfg = demo.pretrain
    else:
        cfg = load_config(PretrainConfig, args.config, args.overrides)
    run_teacher_probe(cfg, args.out, pixels_per_frame=args.pixels, steps=args.steps)


def _cmd_demo(args: argparse.Namespace) -> None:
    from ppkt.config import load_config
    from ppkt.config.demo import QUICK_OVERRIDES, DemoConfig
    from ppkt.pipelines.demo import run_demo

    overrides = [*QUICK_OVERRIDES, *args.overrides] if args.quick else list(args.overrides)
    cfg = load_config(DemoConfig, args.config, overrides)
    run_demo(cfg, args.out)


def _cmd_bench(args: argparse.Namespace) -> None:
    from ppkt.bench import run_bench

    run_bench(
        args.out,
        quick=args.quick,
        threads=args.threads,
        cases=args.cases,
        device=args.device,
        sizes=args.sizes,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppkt",
        description="Contrastive pixel-to-point knowledge transfer: pretrain 3D networks from 2D ones.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "synth", help="render synthetic indoor RGB-D (or --lidar: LiDAR + camera) scenes (pybullet, CPU)"
    )
    p.add_argument("--out", required=True, help="output folder (one sub-folder per scene)")
    p.add_argument("--scenes", type=int, default=4)
    p.add_argument("--frames-per-scene", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--height", type=int, help="image height (default 240; --lidar: 120)")
    p.add_argument("--width", type=int, help="image width (default 320; --lidar: 160)")
    p.add_argument(
        "--lidar", action="store_true", help="LiDAR sweeps + cameras around the LiDAR, in the rig layout"
    )
    p.add_argument("--cameras", type=int, default=4, help="--lidar: cameras around the LiDAR")
    p.add_argument("--beams", type=int, default=32, help="--lidar: laser beams")
    p.add_argument("--azimuths", type=int, default=1024, help="--lidar: firings per turn")
    p.add_argument("--fov-up", type=float, default=5.0, help="--lidar: top beam elevation, degrees")
    p.add_argument("--fov-down", type=float, default=-40.0, help="--lidar: bottom beam elevation, degrees")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser(
        "pretrain", help="PPKT pretraining of the 3D student (default: embedded synthetic data)"
    )
    p.add_argument("--config", help="YAML config file (see configs/pretrain.yaml for every key)")
    p.add_argument("--out", default="runs/pretrain", help="run directory")
    p.add_argument("--resume", help="checkpoint to resume from, or 'last' for <out>/checkpoints/last.ckpt")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.voxel_size=0.04"
    )
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser("finetune", help="semantic segmentation fine-tuning or linear probing of the student")
    p.add_argument("--config", help="YAML config file (see configs/finetune.yaml for every key)")
    p.add_argument("--out", default="runs/finetune", help="run directory")
    p.add_argument(
        "--init",
        help="'scratch', a `ppkt pretrain` checkpoint, or Pointcept / MinkUNet34C (SLidR) / mmdet3d weights "
        "(init=...)",
    )
    p.add_argument(
        "--labels",
        type=float,
        help="fraction of training scenes (or of points) with labels, or labelled points per training scene "
        "with --labels-mode points_per_scene",
    )
    p.add_argument(
        "--labels-mode",
        choices=["scenes", "points", "points_per_scene"],
        help="what --labels counts: a fraction of the scenes (limited reconstructions), a fraction of each "
        "scene's points, or points per scene (limited annotations)",
    )
    p.add_argument(
        "--probe", action="store_true", help="linear probing: frozen backbone, only the head trains"
    )
    p.add_argument("--seed", type=int, help="same as trainer.seed=...")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. trainer.max_steps=100"
    )
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser(
        "evaluate",
        help="segmentation (mIoU, per-class IoU, accuracy of a finetune checkpoint) or pretext retrieval "
        "(of a pretrain checkpoint)",
    )
    p.add_argument("--task", default="segmentation", choices=["segmentation", "retrieval"])
    p.add_argument(
        "--ckpt",
        required=True,
        help="a `ppkt finetune` checkpoint, a Pointcept / SLidR / mmdet3d segmentation checkpoint (with "
        "--config / key=value: its student.name and data), or, for retrieval, a `ppkt pretrain` checkpoint",
    )
    p.add_argument(
        "--config",
        help="foreign checkpoints: the fine-tuning YAML config (student.name, data.*) to read it with",
    )
    p.add_argument(
        "--data",
        help="dataset folder, or 'synthetic' (default: the data it was trained on; for retrieval its "
        "held-out frames)",
    )
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"], help="segmentation")
    p.add_argument("--layout", help="retrieval: data.layout of --data (default: the checkpoint's)")
    p.add_argument(
        "--pairing",
        choices=["frame", "window", "scene"],
        help="retrieval: score samples of this data.pairing.mode (default: the checkpoint's)",
    )
    p.add_argument("--points", type=int, help="retrieval: points per frame (default: eval.retrieval_points)")
    p.add_argument("--frames", type=int, help="retrieval: frames (default: eval.retrieval_frames)")
    p.add_argument("--out", default="runs/evaluate", help="folder for metrics.json")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="foreign checkpoints: fine-tuning config overrides, e.g. student.name=spunet_v1m1",
    )
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser(
        "export",
        help="write a run's student as a Pointcept (SpUNet-v1m1), MinkUNet34C (SLidR), mmdet3d "
        "(MinkUNetBackbone, spconv) or ONNX file",
    )
    p.add_argument("--ckpt", required=True, help="a `ppkt pretrain` or `ppkt finetune` checkpoint")
    p.add_argument(
        "--to",
        required=True,
        choices=["pointcept", "minkunet34c", "mmdet3d", "onnx"],
        help="target: a framework's checkpoint, or the student's inference graph (onnx)",
    )
    p.add_argument("--out", required=True, help="checkpoint file to write")
    p.add_argument(
        "--head",
        default="auto",
        choices=["auto", "yes", "no"],
        help="export the run's linear head as the target's `final` layer (auto: see README)",
    )
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "cache-features",
        help="precompute the frozen teacher's features of every frame (used when teacher.cache=true)",
    )
    p.add_argument("--config", help="YAML pretraining config (see configs/pretrain.yaml)")
    p.add_argument("--batch-size", type=int, default=16, help="frames per teacher forward pass")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="pretraining config overrides")
    p.set_defaults(func=_cmd_cache_features)

    p = sub.add_parser(
        "teacher-probe",
        help="linear probe on the frozen teacher's pixel features, layer by layer (labelled RGB-D frames): "
        "the ceiling of what pretraining can transfer, and which teacher.layers carry the classes",
    )
    p.add_argument(
        "--config",
        help="YAML pretraining config, or a demo config (its pretrain section): its teacher.* and data.*",
    )
    p.add_argument("--out", default="runs/teacher_probe", help="folder for metrics.json")
    p.add_argument("--pixels", type=int, default=2000, help="labelled pixels drawn per frame")
    p.add_argument("--steps", type=int, default=300, help="full-batch Adam steps of each probe")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="pretraining config overrides")
    p.set_defaults(func=_cmd_teacher_probe)

    p = sub.add_parser("demo", help="the main job on the embedded default data, offline")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--quick", action="store_true", help="a small, fast version (used by the tests)")
    p.add_argument(
        "--config", help="YAML demo config: pretrain.*, finetune.*, label_fractions, … (see README)"
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="overrides, e.g. pretrain.trainer.max_epochs=4 finetune.trainer.max_steps=100 seeds=[0,1]",
    )
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "bench", help="benchmark sparse conv, student step, frame pipeline, pretraining (vs spconv/Open3D)"
    )
    p.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats (well under 2 min)")
    p.add_argument("--out", default="runs/bench", help="folder for bench.json")
    p.add_argument("--threads", type=int, help="torch threads for ppkt (default: torch's current setting)")
    p.add_argument(
        "--cases",
        help="comma-separated subset of: sparse_conv_layer, unet_step, gemm_efficiency, frame_pipeline, "
        "pretrain_throughput, memory, contention, step_profile (default: all; BENCHMARKS.md says what each "
        "measures)",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available, else cpu")
    p.add_argument(
        "--sizes",
        choices=["full", "quick", "tiny"],
        help="size preset (default: quick with --quick, else full; tiny is for tests)",
    )
    p.set_defaults(func=_cmd_bench)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line. ``key=value`` overrides may sit on both sides of options (``--out DIR a=1
    --config F b=2``): argparse only collects one contiguous run into the positional list, the rest is
    collected here; anything else unknown is an error."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def error_message(e: PPKTError) -> str:
    """The message of ``e``; for an error re-raised from a data-loader worker (whose message wraps the
    worker's traceback), the original message only."""
    text = str(e)
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.strip().splitlines() if line.strip()][-1]
    name = type(e).__name__
    for prefix in (f"ppkt.errors.{name}: ", f"{name}: "):
        if last.startswith(prefix):
            return last[len(prefix) :]
    return last


#: OpenMP settings the ``ppkt`` command applies unless the user set OpenMP's wait behaviour: an idle
#: OpenMP thread spins briefly (libgomp's default spins up to 300,000 times), then sleeps. When another
#: process takes a core, spinning threads make every small parallel region of a step wait for a preempted
#: thread; ``ppkt bench --cases contention`` measures it (README, "Benchmarks").
THREAD_POOL_ENV = {"GOMP_SPINCOUNT": "1000"}


def set_thread_pool_env(environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Apply :data:`THREAD_POOL_ENV` unless ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is already set. It only
    takes effect before torch loads its OpenMP runtime, so the command calls it before any torch import."""
    if "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ:
        return
    environ.update(THREAD_POOL_ENV)


def main(argv: Sequence[str] | None = None) -> int:
    set_thread_pool_env()
    args = parse_args(argv)
    try:
        args.func(args)
    except PPKTError as e:
        print(f"ppkt: error: {error_message(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
