"""`python -m host_tools COMMAND ...`: one entry point for every host tool.

Each feature module exposes `add_commands(subparsers)`, which adds its sub-commands and sets
`func` on each; heavy imports happen inside the handlers so that `--help` stays fast.
"""
import argparse
import importlib
import sys

from host_tools.errors import CliError

_COMMAND_MODULES = (
    "host_tools.fleet.keys",
    "host_tools.fleet.provision",
    "host_tools.fleet.deploy",
    "host_tools.cloud.hub.cli",
    "host_tools.cloud.orders.cli",
    "host_tools.cloud.commerce.cli",
    "host_tools.harness.demo",
)


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m host_tools")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
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
