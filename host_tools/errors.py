"""The one error type the CLI turns into a single clear line and a non-zero exit."""


class CliError(Exception):
    """A problem the user can fix: the message says what was wrong and what to do."""
