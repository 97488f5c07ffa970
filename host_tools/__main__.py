"""`python -m host_tools COMMAND ...`: one entry point for every host tool.

Each feature module exposes `add_commands(subparsers)`, which adds its sub-commands and sets
`func` on each; heavy imports happen inside the handlers so that `--help` stays fast.
"""
import argparse
import importlib
import os
import sys

from host_tools.errors import CliError

_COMMAND_MODULES = (
    "host_tools.fleet.keys",
    "host_tools.fleet.provision",
    "host_tools.fleet.deploy",
    "host_tools.fleet.ota",
    "host_tools.cloud.hub.cli",
    "host_tools.cloud.dps.cli",
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
    except OSError as exc:
        # the environment refused (a folder that is a file, no permission, disk full): the
        # commands name what they could not do where they can; this is the last word
        if os.environ.get("HOST_TOOLS_TRACEBACK"):
            raise
        where = " ".join(str(f) for f in (exc.filename, exc.filename2) if f)
        print(f"error: {where + ': ' if where else ''}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        # a bug, not the user's doing: still one line (HOST_TOOLS_TRACEBACK=1 shows where)
        if os.environ.get("HOST_TOOLS_TRACEBACK"):
            raise
        print(f"error: internal error ({type(exc).__name__}: {exc}); "
              "HOST_TOOLS_TRACEBACK=1 shows where", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
