"""The ``dishtracker`` command: one entry point for the daemon and its tools.

Subcommands register their own arguments; heavy modules (PyAV, ONNX
Runtime, torch) are imported only by the subcommand that needs them, so
``dishtracker --help`` is instant. ``calibrate`` lives in the separate
``calibration`` package (site tools may import the daemon, never the
reverse): it is looked up by name only when that subcommand runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from edge import __version__
from edge.errors import DishTrackerError

Handler = Callable[[argparse.Namespace], int]


def _sim(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from edge.sim.live import parse_size
    from edge.sim.writer import write_sequence

    size = parse_size(args.size)
    total = round(args.seconds * args.fps)
    with tqdm(total=total, desc=f"sim seed {args.seed}", unit="frame",
              disable=args.quiet) as bar:
        summary = write_sequence(
            args.out, seed=args.seed, seconds=args.seconds, fps=args.fps, size=size,
            difficulty=args.difficulty, balanced=args.balanced, menu=args.menu,
            angle_deg=args.angle,
            progress=lambda n: bar.update(n - bar.n),
        )
    print(f"wrote {summary.out}: {summary.frames} frames, {summary.trays} trays, "
          f"{summary.objects} objects")
    return 0


def _add_sim(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sim", help="render a synthetic checkout sequence with ground truth")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--fps", type=float, default=20.0)
    p.add_argument("--size", default="640x480", help="WxH")
    p.add_argument("--difficulty", default="standard", choices=["easy", "standard", "hard"])
    p.add_argument("--balanced", action="store_true", help="dish classes uniform (training)")
    p.add_argument("--angle", type=float, default=0.0, metavar="DEG",
                   help="camera roll: trays travel at DEG degrees, clockwise from "
                        "left-to-right (default 0)")
    p.add_argument("--menu", default="base", choices=["base", "site2"],
                   help="site2 adds dishes the shipped model never saw (few-label benchmark)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_sim)


def _run(args: argparse.Namespace) -> int:
    import asyncio
    import faulthandler

    faulthandler.enable()  # a watchdog kill (SIGABRT) prints every thread's stack

    from edge.checks import load_checked
    from edge.observability import configure_logging

    configure_logging(args.log_level)
    config = load_checked(args.config)  # every problem at once, as check-config lists them
    from edge.daemon import serve  # after the check: a refusal need not import aiortc
    server = config.server.model_copy(update={
        k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None})
    config = config.model_copy(update={"server": server})
    return asyncio.run(serve(config, config_path=args.config))


def _check_config(args: argparse.Namespace) -> int:
    import json

    from edge.checks import check_site
    from edge.config import load_config

    errors = check_site(args.file)
    if args.json:
        print(json.dumps({"file": str(args.file), "valid": not errors, "errors": errors}))
    elif errors:
        print("\n".join(f"{args.file}: {line}" for line in errors), file=sys.stderr)
    else:
        config = load_config(args.file)
        n = len(config.streams)
        print(f"valid: {args.file} ({n} stream{'' if n == 1 else 's'}, model "
              f"{config.detector.model}, {config.detector.backend})")
    return 2 if errors else 0


def _add_daemon(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run the daemon (no --config: built-in defaults)")
    p.add_argument("--config", type=Path, default=None, help="site config (TOML)")
    p.add_argument("--host", default=None, help="override server.host")
    p.add_argument("--port", type=int, default=None, help="override server.port")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"])
    p.set_defaults(handler=_run)
    c = sub.add_parser("check-config", help="run the daemon's start checks on a site config "
                                            "and list every problem; exit 2 on any")
    c.add_argument("file", type=Path)
    c.add_argument("--json", action="store_true",
                   help='print {"file", "valid", "errors": ["field.path: reason", ...]}')
    c.set_defaults(handler=_check_config)


def _lazy(module: str, adder: str, runner: str) -> tuple[Callable[..., None], Handler]:
    """Argument adder and runner of a subcommand whose module loads only when used."""

    def add(p: argparse.ArgumentParser) -> None:
        getattr(importlib.import_module(module), adder)(p)

    def run(args: argparse.Namespace) -> int:
        return int(getattr(importlib.import_module(module), runner)(args))

    return add, run


_EVAL = {
    "detector": ("edge.eval.cli_detector", "add_eval_detector_arguments", "run_eval_detector",
                 "mAP of a detector on a simulator sequence or a COCO dataset"),
    "tracking": ("edge.eval.cli_tracking", "add_eval_tracking_arguments", "run_eval_tracking",
                 "bills, MOTA/IDF1/HOTA of the full system and baselines on simulator "
                 "sequences, or of the generic tracker on MOTChallenge ones"),
    "learning": ("edge.eval.cli_learning", "add_eval_learning_arguments", "run_eval_learning",
                 "learning on the job: sequences played as one service, a scripted cashier "
                 "correcting every wrong bill"),
}
_CALIBRATE = {
    "dataset": ("calibration.dataset", "add_dataset_arguments", "run_dataset",
                "export simulator seeds as a COCO detection dataset"),
    "pretrain": ("calibration.pretrain", "add_pretrain_arguments", "run_pretrain",
                 "crop-level warm-up of the backbone on the dataset's objects"),
    "train": ("calibration.train", "add_train_arguments", "run_train",
              "fine-tune the detector (transfer learning from ImageNet)"),
    "export": ("calibration.export", "add_export_arguments", "run_export",
               "export a training checkpoint to the ONNX contract"),
    "scene": ("calibration.scene", "add_scene_arguments", "run_scene",
              "estimate counter region, tray direction and speed, and a checkout line"),
    "propose": ("calibration.propose", "add_propose_arguments", "run_propose",
                "rank unlabelled crops by similarity to a few labelled ones"),
    "select": ("calibration.select", "add_select_arguments", "run_select",
               "pick the K frames of a video that show the most distinct dish views"),
    "bank": ("calibration.bank", "add_bank_arguments", "run_bank",
             "a model's known-class bank: prototypes and thresholds for unknown dishes"),
    "quantize": ("calibration.quantize", "add_quantize_arguments", "run_quantize",
                 "INT8 (QDQ) quantization of an ONNX detector for the CPU or TensorRT"),
    "engine": ("calibration.engine", "add_engine_arguments", "run_engine",
               "build and cache a TensorRT engine from an ONNX model (GPU box)"),
}

_TOKEN = {
    "show": ("edge.web.cli_token", "add_show_arguments", "run_show",
             "print the page's links with the owner's token"),
    "rotate": ("edge.web.cli_token", "add_rotate_arguments", "run_rotate",
               "give a token a new value (printed once, with the links)"),
    "create": ("edge.web.cli_token", "add_create_arguments", "run_create",
               "make a named token with a role (printed once, with the links)"),
    "revoke": ("edge.web.cli_token", "add_revoke_arguments", "run_revoke",
               "remove a named token; its holder is refused from the next request"),
    "list": ("edge.web.cli_token", "add_list_arguments", "run_list",
             "name every token and its role (no secrets)"),
}

_MODELS = {
    "list": ("edge.web.cli_models", "add_list_arguments", "run_list",
             "the models on the box, their state and what shadows"),
    "add": ("edge.web.cli_models", "add_add_arguments", "run_add",
            "upload an ONNX model as a candidate"),
    "shadow": ("edge.web.cli_models", "add_model_arguments", "run_shadow",
               "run a model beside the serving one on a sample of frames"),
    "promote": ("edge.web.cli_models", "add_model_arguments", "run_promote",
                "make a model serve every stream (between two frames)"),
    "rollback": ("edge.web.cli_models", "add_rollback_arguments", "run_rollback",
                 "serve the model that served before the serving one again"),
    "retire": ("edge.web.cli_models", "add_model_arguments", "run_retire",
               "stop shadowing a model and mark it retired"),
}

_LABEL = {
    "import": ("edge.label.cli", "add_import_arguments", "run_import",
               "add the frames of a `calibrate select` folder to the labelling workspace"),
    "export": ("edge.label.cli", "add_export_arguments", "run_export",
               "write the workspace's labels as a COCO dataset for `calibrate train`"),
}


def _add_group(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_: str,
    table: dict[str, tuple[str, str, str, str]], argv: Sequence[str],
) -> None:
    group = sub.add_parser(name, help=help_)
    gsub = group.add_subparsers(dest=f"{name}_command", required=True)
    for cmd, (module, adder, runner, text) in table.items():
        p = gsub.add_parser(cmd, help=text)
        add, run = _lazy(module, adder, runner)
        # only import the module whose arguments are actually needed
        if len(argv) >= 2 and argv[0] == name and argv[1] == cmd:
            add(p)
        p.set_defaults(handler=run)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The full argument parser (subcommand modules load lazily)."""
    parser = argparse.ArgumentParser(prog="dishtracker", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"dishtracker {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_daemon(sub)
    _add_sim(sub)
    _add_group(sub, "eval", "evaluate a detector, or tracking and billing", _EVAL, argv)
    _add_group(sub, "calibrate",
               "site tools: dataset, training, scene, quantization, engines", _CALIBRATE, argv)
    _add_group(sub, "token", "the access tokens: show, rotate, create, revoke, list",
               _TOKEN, argv)
    _add_group(sub, "models", "the running daemon's models: list, add, shadow, promote, "
                              "rollback, retire", _MODELS, argv)
    _add_group(sub, "label", "the labelling workspace: import frames, export labels",
               _LABEL, argv)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dishtracker``; returns the process exit code (2 for bad input)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    try:
        return int(args.handler(args))
    except DishTrackerError as err:
        print(f"dishtracker: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dishtracker: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
