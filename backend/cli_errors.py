"""The one error type the command line prints without a traceback."""


class CLIError(Exception):
    """A problem the user can fix (bad path, unreachable server); the message says how."""
