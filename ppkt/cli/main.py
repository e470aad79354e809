"""``ppkt <command>``: a thin layer that builds objects from a config and calls library code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ppkt.errors import PPKTError


def _cmd_synth(args: argparse.Namespace) -> None:
    from ppkt.data.synth import synthesize

    path = synthesize(
        args.out,
        scenes=args.scenes,
        frames_per_scene=args.frames_per_scene,
        seed=args.seed,
        image_size=(args.height, args.width),
    )
    print(f"[ppkt] wrote {args.scenes} scenes × {args.frames_per_scene} frames to {path}")


def _cmd_pretrain(args: argparse.Namespace) -> None:
    from ppkt.config import PretrainConfig, load_config
    from ppkt.training.pretrain import run_pretrain

    cfg = load_config(PretrainConfig, args.config, args.overrides)
    run_pretrain(cfg, args.out, resume=args.resume)


def _cmd_demo(args: argparse.Namespace) -> None:
    from ppkt.config import PretrainConfig, load_config
    from ppkt.training.pretrain import run_pretrain

    overrides = list(args.overrides)
    if args.quick:
        overrides = [
            "data.synth.scenes=6",
            "data.synth.frames_per_scene=8",
            "trainer.max_epochs=2",
            *overrides,
        ]
    cfg = load_config(PretrainConfig, None, overrides)
    run_pretrain(cfg, f"{args.out}/pretrain")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppkt",
        description="Contrastive pixel-to-point knowledge transfer: pretrain 3D networks from 2D ones.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="render synthetic indoor RGB-D scenes (pybullet, CPU) to a folder")
    p.add_argument("--out", required=True, help="output folder (one sub-folder per scene)")
    p.add_argument("--scenes", type=int, default=4)
    p.add_argument("--frames-per-scene", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--width", type=int, default=320)
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

    p = sub.add_parser("demo", help="the main job on the embedded default data, offline")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--quick", action="store_true", help="a small, fast version (used by the tests)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="pretraining config overrides")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except PPKTError as e:
        print(f"ppkt: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
