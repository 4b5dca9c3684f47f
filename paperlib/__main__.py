"""Command line: ``python -m paperlib {swap,loraild,sweep,rewire} ...``."""

from __future__ import annotations

import argparse
import importlib
import sys

#: the module that adds each sub-command (with ``register(subparsers)``)
COMMANDS = {"swap": "paperlib.swap.cli", "loraild": "paperlib.loraild.cli", "sweep": "paperlib.loraild.cli",
            "rewire": "paperlib.rewire.cli"}
COMMAND_MODULES = tuple(dict.fromkeys(COMMANDS.values()))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every sub-command, or only of ``command``'s module when it names one.

    Each module imports what its commands need (torch, scipy, ...): a sweep should not wait for
    the swap analysis' imports before it starts its worker processes.
    """
    parser = argparse.ArgumentParser(prog="python -m paperlib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in (COMMANDS[command],) if command in COMMANDS else COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is not None and name.startswith(err.name):
                continue  # that part of the package is not installed / not written yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
