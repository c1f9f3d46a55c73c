"""The package matplotlib style. Plot helpers wrap their drawing in ``with plot_style():``."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

STYLE_FILE = Path(__file__).with_name("rmaat.mplstyle")


@contextlib.contextmanager
def plot_style() -> Iterator[None]:
    """Use the astro-rmaat style for the duration of the block (never set globally)."""
    import matplotlib.pyplot as plt

    with plt.style.context(str(STYLE_FILE)):
        yield


def new_axes(ax=None, **subplot_kw):
    """Return ``ax`` or a fresh one from a new figure (helpers take ``ax=None``)."""
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax
    _, ax = plt.subplots(**subplot_kw)
    return ax
