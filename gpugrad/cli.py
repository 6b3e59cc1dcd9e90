"""The command line: ``python -m gpugrad <command>``.

To add a command (``train``, ``info``, ``bench``, ...): write a ``_cmd_<name>(args) -> int``
handler, and register it in ``build_parser`` with its own sub-parser and arguments. Handlers
import what they need lazily, so ``--version`` and ``--help`` stay fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from . import __version__


def _cmd_chapter(args: argparse.Namespace) -> int:
    """Run the autodiff chapter's examples and check every result."""
    from .chapter import main as chapter_main  # noqa: PLC0415 - imported only when the command runs

    return chapter_main()


def _cmd_train(args: argparse.Namespace) -> int:
    """Train an MLP classifier (digits by default) or continue one (--resume); report its test accuracy.

    ``--nproc N`` (N > 1, no launcher around) checks the options here, then runs this command again
    as N processes under mpiexec, without --nproc, and returns the job's exit code.
    """
    from .distributed import launch  # noqa: PLC0415
    from .train import DEFAULTS, TrainConfig, UsageError, check_job, parse_hidden, resume, train  # noqa: PLC0415

    def run() -> int | None:
        given = {field: getattr(args, field) for field in _TRAIN_FIELDS if getattr(args, field) is not None}
        if "hidden" in given:
            given["hidden"] = parse_hidden(given["hidden"])
        if args.no_progress:
            given["progress"] = False
        if args.jit:
            given["jit"] = True
        cfg = None if args.resume else TrainConfig(**{**vars(DEFAULTS), **given})
        if args.nproc is not None and _starts_processes(args.nproc):
            check_job(args.nproc, cfg, args.resume, **(given if args.resume else {}))
            try:
                mpiexec = launch.mpiexec_command(args.nproc)
            except RuntimeError as err:
                raise UsageError(f"--nproc {args.nproc}: {err}") from None
            return launch.run(mpiexec, [sys.executable, "-m", "gpugrad", *_train_argv(args)])
        if args.resume:
            resume(args.resume, **given)
        else:
            train(cfg)
        return None

    return _run("train", run)


def _starts_processes(nproc: int) -> bool:
    """Whether ``--nproc`` asks this process to start the job's processes (not when a launcher did)."""
    from .distributed import env  # noqa: PLC0415
    from .train import UsageError  # noqa: PLC0415

    if nproc < 1:
        raise UsageError(f"--nproc {nproc}: must be a whole number of at least 1 (the number of processes: "
                         "one per GPU, or per CPU slot)")
    try:
        launched = env.from_environment()
    except RuntimeError as err:
        raise UsageError(f"--nproc {nproc}: {err}") from None
    if launched.launcher is None:
        return nproc > 1
    if launched.world_size != nproc:
        raise UsageError(f"--nproc {nproc}: {launched.launcher} started this process as one of "
                         f"{launched.world_size}; give --nproc {launched.world_size}, or leave --nproc out "
                         "under a launcher")
    return False


def _train_argv(args: argparse.Namespace) -> list[str]:
    """The train command line of ``args``, without --nproc (what each process runs)."""
    from .train import flag  # noqa: PLC0415

    argv = ["train"]
    for field in _TRAIN_FIELDS:
        value = getattr(args, field)
        if isinstance(value, bool):                     # a switch: given or not
            argv += [flag(field)] if value else []
        elif value is not None:
            argv += [flag(field), str(value)]
    if args.resume:
        argv += ["--resume", args.resume]
    if args.no_progress:
        argv.append("--no-progress")
    return argv


def _cmd_eval(args: argparse.Namespace) -> int:
    """Loss and accuracy of a trained run: on its own test set, or on --data."""
    from .classifier import evaluate_checkpoint  # noqa: PLC0415

    return _run("eval", lambda: evaluate_checkpoint(args.checkpoint, args.data, args.labels, args.device))


def _cmd_predict(args: argparse.Namespace) -> int:
    """Predicted labels and class probabilities of every sample in --data, written to --out."""
    from .classifier import predict_file  # noqa: PLC0415

    return _run("predict", lambda: predict_file(args.checkpoint, args.data, args.out, args.device))


def _run(command: str, job: Callable[[], object]) -> int:
    """Run a job; exit codes: 0 done, 2 a bad option or file (nothing started), 130 Ctrl-C, 1 a failure,
    or the code the job returns (a job of several processes). Of several processes, which all meet
    the same error (a failing one ends the job itself), rank 0 alone prints it."""
    from .distributed import env  # noqa: PLC0415
    from .train import UsageError  # noqa: PLC0415

    def say(line: str) -> None:
        try:
            rank = env.from_environment().rank
        except RuntimeError:
            rank = 0
        if rank == 0:
            print(line, file=sys.stderr)

    try:
        code = job()
    except UsageError as err:
        say(f"gpugrad {command}: error: {err}")
        return 2
    except KeyboardInterrupt:
        return 130
    except (FloatingPointError, OSError, ValueError, RuntimeError) as err:
        say(f"gpugrad {command}: failed: {err}")
        return 1
    return code if isinstance(code, int) and not isinstance(code, bool) else 0


def _cmd_info(args: argparse.Namespace) -> int:
    """Versions, CUDA devices, whether every fused kernel file compiles (each one is compiled), and the
    MPI and NCCL that multi-process training would use."""
    import platform  # noqa: PLC0415

    import numpy  # noqa: PLC0415

    from . import backend  # noqa: PLC0415
    from . import cuda as gg_cuda  # noqa: PLC0415
    from .distributed import describe  # noqa: PLC0415

    print(f"gpugrad {__version__}")
    print(f"python {platform.python_version()} ({platform.machine()}), numpy {numpy.__version__}")
    for line in describe():
        print(line)
    try:
        cp = backend.load_cupy()
    except RuntimeError as err:
        print(f"cuda: not available ({err})")
        return 0
    count = gg_cuda.device_count()
    if backend.emulated:
        print(f"cuda: {gg_cuda.get_device_name()}, {count} device(s) (GPUGRAD_EMULATE_CUDA): the CUDA code "
              "path on the CPU, kernels built with g++; no timing, no device memory")
    else:
        print(f"cupy {cp.__version__}, CUDA runtime {cp.cuda.runtime.runtimeGetVersion()}, {count} device(s)")
        for i in range(count):
            props = cp.cuda.runtime.getDeviceProperties(i)
            print(f"  cuda:{i}: {gg_cuda.get_device_name(i)}, {props['totalGlobalMem'] / 2**30:.1f} GiB, "
                  f"compute capability {props['major']}.{props['minor']}")
    from .cuda import kernels  # noqa: PLC0415

    report = kernels.compile_all()
    for file, error in report.items():
        shown = "compiles" if error is None else "FAILED to compile: " + error.strip().replace("\n", "\n    ")
        print(f"  kernels/{file}: {shown}")
    return 1 if any(report.values()) else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one sub-parser per command (each sets ``handler``)."""
    parser = argparse.ArgumentParser(
        prog="python -m gpugrad", description="gpugrad: a small tensor autodiff engine.")
    parser.add_argument("--version", action="version", version=f"gpugrad {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="<command>")

    chapter = commands.add_parser(
        "chapter", help="run the autodiff chapter's examples and check the results",
        description="Run the examples of the autodiff chapter (docs/autodiff.md) and check each result.")
    chapter.set_defaults(handler=_cmd_chapter)

    _add_train_parser(commands)
    _add_eval_parsers(commands)

    info = commands.add_parser("info", help="versions, CUDA devices, whether the kernels compile; MPI, NCCL")
    info.set_defaults(handler=_cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: sys.argv[1:]), run the chosen command and return its exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:   # --help, --version and usage errors: return their exit code
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return args.handler(args)



_TRAIN_FIELDS = ("data", "labels", "hidden", "activation", "epochs", "batch_size", "lr", "optimizer",
                 "weight_decay", "val_fraction", "test_fraction", "device", "seed", "out")


def _add_train_parser(commands: Any) -> None:
    from .nn.layers import ACTIVATIONS  # noqa: PLC0415
    from .train import DEFAULTS, OPTIMIZERS  # noqa: PLC0415

    def default(field: str) -> str:
        value = getattr(DEFAULTS, field)
        return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)

    train = commands.add_parser(
        "train", help="train an MLP on real data (8x8 digits by default), on the GPU when there is one",
        description="Train an MLP classifier. The default data is scikit-learn's 8x8 digits (pip install "
                    "'gpugrad[train]'). The data is split into training, validation (figures per epoch) and "
                    "test sets (measured once, at the end, with the weights of the epoch of lowest "
                    "validation loss). With --out DIR every epoch writes last.safetensors and "
                    "best.safetensors; Ctrl-C saves, and "
                    "--resume DIR continues exactly where the run stopped.")
    data = train.add_argument_group("data")
    data.add_argument("--data", metavar="FILE", help="FILE.npz with arrays X (samples x features) and y "
                      "(integer labels), FILE.npy of features (with --labels), or FILE.csv whose last column "
                      "is the label (default: the 8x8 digits)")
    data.add_argument("--labels", metavar="FILE.npy", help="the labels of a --data FILE.npy")
    data.add_argument("--val-fraction", type=float, metavar="F",
                      help="share of each class held out for validation "
                           f"(default: {default('val_fraction')})")
    data.add_argument("--test-fraction", type=float, metavar="F",
                      help="share of each class held out for the final test "
                           f"(default: {default('test_fraction')})")
    model = train.add_argument_group("model and optimizer")
    model.add_argument("--hidden", metavar="SIZES",
                       help=f"hidden layer sizes, e.g. 128,64; '' for none (default: {default('hidden')})")
    model.add_argument("--activation", choices=sorted(ACTIVATIONS),
                       help=f"hidden activation (default: {default('activation')})")
    model.add_argument("--optimizer", choices=OPTIMIZERS, help=f"(default: {default('optimizer')}; sgd uses "
                       "momentum 0.9)")
    model.add_argument("--lr", type=float, help=f"learning rate, above 0 (default: {default('lr')})")
    model.add_argument("--weight-decay", type=float, help=f"0 or more (default: {default('weight_decay')})")
    model.add_argument("--epochs", type=int, help=f"at least 1 (default: {default('epochs')})")
    model.add_argument("--batch-size", type=int, help=f"at least 1 (default: {default('batch_size')})")
    model.add_argument("--seed", type=int, help=f"0 to 2**63-1; the same seed repeats the run exactly "
                       f"(default: {default('seed')})")
    run = train.add_argument_group("where and how")
    run.add_argument("--device", metavar="DEVICE",
                     help="auto (CUDA when a GPU is usable), cpu, cuda or cuda:N (default: auto)")
    run.add_argument("--out", metavar="DIR", help="write last.safetensors and best.safetensors every epoch, "
                     "then metrics.json and curves.png (default: nothing is written)")
    run.add_argument("--resume", metavar="DIR", help="continue the run saved in DIR (its --out) where it "
                     "stopped, with its settings; --epochs may extend it")
    run.add_argument("--jit", action="store_true", help="trace the training step once with gg.jit and "
                     "replay it (the same numbers, less time per step: docs/jit.md)")
    run.add_argument("--no-progress", action="store_true",
                     help="one line per epoch instead of a progress bar")
    run.add_argument("--nproc", type=int, metavar="N",
                     help="train with N processes (one per GPU with --device cuda, else per CPU slot), "
                          "started with mpiexec (pip install 'gpugrad[distributed]'); --batch-size stays the "
                          "batch of each step, shared among them, so any N gives the same training and "
                          "--resume takes any N (default: 1, or the launcher's count under mpiexec)")
    train.set_defaults(handler=_cmd_train)


def _add_eval_parsers(commands: Any) -> None:
    checkpoint_help = "a run's --out directory (its best.safetensors) or a checkpoint file"
    device_help = "auto, cpu, cuda or cuda:N (default: auto)"
    ev = commands.add_parser(
        "eval", help="loss and accuracy of a trained run (its test set, or --data)",
        description="Evaluate a run saved by 'gpugrad train --out DIR': on the run's own test set (rebuilt "
                    "from its settings and data), or on all of --data.")
    ev.add_argument("--checkpoint", required=True, metavar="PATH", help=checkpoint_help)
    ev.add_argument("--data", metavar="FILE", help="labelled data: .npz (X, y), .npy (with --labels) or .csv "
                    "(default: the run's own test set)")
    ev.add_argument("--labels", metavar="FILE.npy", help="the labels of a --data FILE.npy")
    ev.add_argument("--device", default="auto", help=device_help)
    ev.set_defaults(handler=_cmd_eval)

    pr = commands.add_parser(
        "predict", help="predict the labels of --data with a trained run, into --out FILE.npz",
        description="Write the predicted label and class probabilities of each sample of --data to --out "
                    "(a .npz with arrays labels, probabilities and classes).")
    pr.add_argument("--checkpoint", required=True, metavar="PATH", help=checkpoint_help)
    pr.add_argument("--data", required=True, metavar="FILE", help="features: .npz (X), .npy or .csv")
    pr.add_argument("--out", required=True, metavar="FILE.npz", help="where to write the predictions")
    pr.add_argument("--device", default="auto", help=device_help)
    pr.set_defaults(handler=_cmd_predict)
