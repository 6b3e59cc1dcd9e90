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
