"""Secrets typed or piped on standard input, so they stay out of shell history and `ps`."""
import sys

from host_tools.errors import CliError

MAX_SECRET = 1024  # characters: far more than any key or password, far less than a pasted file


def read_secret(what, max_chars=MAX_SECRET):
    """One line from standard input: typed without echo at a terminal (getpass), else read
    as is (a pipe or a file). A clear error when there is none or it is absurdly long."""
    if sys.stdin is not None and sys.stdin.isatty():
        import getpass
        try:
            line = getpass.getpass(f"{what}: ", stream=sys.stderr)
        except EOFError:
            line = ""
    else:
        line = sys.stdin.readline(max_chars + 2) if sys.stdin else ""
        if len(line.rstrip("\r\n")) > max_chars:
            raise CliError(f"the {what} on standard input is longer than {max_chars} characters; "
                           "pass only the value, on one line")
    line = line.strip()
    if not line:
        raise CliError(f"no {what} on standard input")
    if len(line) > max_chars:
        raise CliError(f"the {what} is longer than {max_chars} characters")
    return line


def arg_or_stdin(value, what):
    """A command-line value as given, or with '-' the line read_secret() reads."""
    return read_secret(what) if value == "-" else value
