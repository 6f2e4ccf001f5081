"""The single user-facing error type.

Anything that is the user's fault (bad path, bad argument, unusable data) raises HarError with a message
that names the file or argument and the problem. The CLI prints it as one line and exits non-zero.
"""


class HarError(Exception):
    """An error caused by the user's input, reported as one clear line without a traceback."""
