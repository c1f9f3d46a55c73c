"""An ``argparse`` parser whose errors are one line, as the ``rmaat`` command's are.

``argparse`` reports a bad argument as its usage block followed by the message; the benches
and scripts of this repository use this parser instead, so a bad value there reads like a bad
value anywhere else in the project: ``error: <prog>: <what was wrong> ('<prog> --help' lists
what it takes)`` on stderr, exit status 2, before anything is written. ``usage_message`` is
that line without its ``error: `` prefix, which the ``rmaat`` command uses for click's errors.

Third-party imports: none.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


def usage_message(prog: str, message: str) -> str:
    """A command-line error as one line: the command, the parser's message (its line breaks
    folded), and where the command's options are listed."""
    return f"{prog}: {' '.join(message.split())} ('{prog} --help' lists what it takes)"


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with a one-line ``error`` (module doc)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {usage_message(self.prog, message)}\n")
        sys.exit(2)
