"""Secrets typed or piped on standard input, so they stay out of shell history and `ps`."""
import sys

from host_tools.errors import CliError


def read_secret(what):
    """One line from standard input (prompting on a terminal); a clear error when there is none."""
    if sys.stdin is None or sys.stdin.isatty():
        print(f"{what}: ", end="", file=sys.stderr, flush=True)
    line = sys.stdin.readline().strip() if sys.stdin else ""
    if not line:
        raise CliError(f"no {what} on standard input")
    return line


def arg_or_stdin(value, what):
    """A command-line value as given, or with '-' the line read_secret() reads."""
    return read_secret(what) if value == "-" else value
