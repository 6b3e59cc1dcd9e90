"""The command line: ``python -m gpugrad <command>``.

To add a command (``train``, ``info``, ``bench``, ...): write a ``_cmd_<name>(args) -> int``
handler, and register it in ``build_parser`` with its own sub-parser and arguments. Handlers
import what they need lazily, so ``--version`` and ``--help`` stay fast.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__


def _cmd_chapter(args: argparse.Namespace) -> int:
    """Run the autodiff chapter's examples and check every result."""
    from .chapter import main as chapter_main  # noqa: PLC0415 - imported only when the command runs

    return chapter_main()


def _cmd_train(args: argparse.Namespace) -> int:
    """Train an MLP classifier (digits by default) and report its test accuracy."""
    from .train import TrainConfig, parse_hidden, train  # noqa: PLC0415

    try:
        cfg = TrainConfig(
            hidden=parse_hidden(args.hidden), activation=args.activation, epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
            weight_decay=args.weight_decay, device=args.device, seed=args.seed, data=args.data,
            out=args.out, progress=not args.no_progress)
        train(cfg)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"gpugrad train: error: {err}", file=sys.stderr)
        return 2
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    """Versions, CUDA devices, and whether every fused kernel file compiles (each one is compiled)."""
    import platform  # noqa: PLC0415

    import numpy  # noqa: PLC0415

    from . import backend  # noqa: PLC0415
    from . import cuda as gg_cuda  # noqa: PLC0415

    print(f"gpugrad {__version__}")
    print(f"python {platform.python_version()} ({platform.machine()}), numpy {numpy.__version__}")
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

    train = commands.add_parser(
        "train", help="train an MLP on real data (8x8 digits by default), on the GPU when there is one",
        description="Train an MLP classifier. The default data is scikit-learn's 8x8 digits "
                    "(pip install 'gpugrad[train]'); --data trains on your own .npz with arrays X and y.")
    train.add_argument("--data", metavar="FILE.npz", help="arrays X (samples x features) and y (labels)")
    train.add_argument("--hidden", default="256", help="hidden layer sizes, e.g. 128,64 (default: 256)")
    train.add_argument("--activation", default="relu", help="relu, gelu, tanh, sigmoid, leaky_relu, silu")
    train.add_argument("--epochs", type=int, default=40)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default="adam")
    train.add_argument("--weight-decay", type=float, default=0.0)
    train.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", metavar="DIR", help="write checkpoint.gg, metrics.json and curves.png here")
    train.add_argument("--no-progress", action="store_true", help="one line per epoch instead of a bar")
    train.set_defaults(handler=_cmd_train)

    info = commands.add_parser("info", help="versions, CUDA devices, and whether the kernels compile")
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
