"""The single user-facing error type, and `command`: our commands named as the user started them (for fixes).

Anything that is the user's fault (bad path, bad argument, unusable data) raises HarError with a message
that names the file or argument and the problem. The CLI prints it as one line and exits non-zero.
"""

import os
import sys


class HarError(Exception):
    """An error caused by the user's input, reported as one clear line without a traceback."""


def command(name: str = "") -> str:
    """A command line as the user started this process, for usage lines and the fixes an error suggests:
    ``har-model NAME`` through the installed console script, else ``python train.py NAME``."""
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    base = "har-model" if program in ("har-model", "har-model.exe") else "python train.py"
    return f"{base} {name}".rstrip()
