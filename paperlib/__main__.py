"""Command line: ``python -m paperlib {swap,loraild,sweep,rewire} ...``."""

from __future__ import annotations

import argparse
import importlib
import sys

#: modules that each add their sub-commands with ``register(subparsers)``
COMMAND_MODULES = ("paperlib.swap.cli", "paperlib.loraild.cli", "paperlib.rewire.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m paperlib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is not None and name.startswith(err.name):
                continue  # that part of the package is not installed / not written yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
