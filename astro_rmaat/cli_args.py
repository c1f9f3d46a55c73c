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
from pathlib import Path
from typing import Callable, NoReturn


def usage_message(prog: str, message: str) -> str:
    """A command-line error as one line: the command, the parser's message (its line breaks
    folded), and where the command's options are listed."""
    return f"{prog}: {' '.join(message.split())} ('{prog} --help' lists what it takes)"


def _int_from(low: int, expected: str) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``low``; anything else is the parser's one-line error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {expected}")
        return value
    return parse


#: argparse ``type`` of a count that must be at least 1, and of one that may be 0
positive_int = _int_from(1, "a positive integer")
count_int = _int_from(0, "an integer >= 0")


def run_main(main: Callable[[], int | None]) -> NoReturn:
    """A bench's or script's entry: exit with ``main()``'s status, and a project error a user
    can fix (``RmaatError``: a bad value the parser let through) as one line,
    ``error: <prog>: <message>``, exit status 2, as the ``rmaat`` command reports it."""
    from astro_rmaat.errors import RmaatError

    try:
        status = main()
    except RmaatError as exc:
        sys.stderr.write(f"error: {Path(sys.argv[0]).name}: {exc}\n")
        sys.exit(2)
    sys.exit(status or 0)


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with a one-line ``error`` (module doc)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {usage_message(self.prog, message)}\n")
        sys.exit(2)
