"""An ``argparse`` parser whose errors are one line, as the ``rmaat`` command's are.

``argparse`` reports a bad argument as its usage block followed by the message; the benches
and scripts of this repository use this parser instead, so a bad value there reads like a bad
value anywhere else in the project: ``error: <prog>: <what was wrong> ('<prog> --help' lists
what it takes)`` on stderr, exit status 2, before anything is written.

Third-party imports: none.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with a one-line ``error`` (module doc)."""

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())
        sys.stderr.write(f"error: {self.prog}: {message} ('{self.prog} --help' lists what it takes)\n")
        sys.exit(2)
