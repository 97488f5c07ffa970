"""`python -m host_tools COMMAND ...`: one entry point for every host tool.

Each feature module exposes `add_commands(subparsers)`, which adds its sub-commands and sets
`func` on each; heavy imports happen inside the handlers so that `--help` stays fast.
"""
import argparse
import importlib
import sys

from host_tools.errors import CliError

_COMMAND_MODULES = (
    "host_tools.keys",
    "host_tools.provision",
    "host_tools.hub.cli",
    "host_tools.orders.cli",
    "host_tools.demo",
)


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m host_tools")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # a feature not built yet
        module.add_commands(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
