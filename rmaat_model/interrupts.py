"""Ctrl-C and SIGTERM taken as requests to stop at a step boundary (``rmaat_model.train``).

Third-party imports: none.
"""

from __future__ import annotations

import signal
import threading
from typing import Any


class StopRequests:
    """SIGINT and SIGTERM, while in the ``with`` block, recorded instead of acted on, so that a
    training loop can stop at a step boundary: ``signal`` is the first one received (None while
    none is). After it the previous handlers are back, so a second signal acts at once, unless
    ``keep``: then later signals are recorded too (a ``torchrun`` worker gets Ctrl-C twice, from
    the terminal and from its agent, and its ranks must reach the same step). Inactive off the
    main thread, where Python cannot install handlers."""

    def __init__(self, keep: bool = False) -> None:
        self.enabled = threading.current_thread() is threading.main_thread()
        self.keep = keep
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequests":
        if self.enabled:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._note)
        return self

    def _note(self, signum: int, frame) -> None:
        if self.signal is None:
            self.signal = signum
        if not self.keep:
            self._restore()

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __exit__(self, *exc) -> None:
        self._restore()

    @property
    def name(self) -> str:
        if self.signal is None:
            return "stopped (another rank was signalled)"
        return "interrupted (Ctrl-C)" if self.signal == signal.SIGINT else "stopped by SIGTERM"

    def exception(self) -> BaseException:
        """What the process leaves with: KeyboardInterrupt for SIGINT, else SystemExit(128 +
        the signal; SIGTERM's where this process got none, its peers did)."""
        if self.signal == signal.SIGINT:
            return KeyboardInterrupt()
        return SystemExit(128 + (self.signal or signal.SIGTERM))
