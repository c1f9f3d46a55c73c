"""Errors meant for people.

Every bad input is reported as one of these, with a message that names the value, the
file or the key, and what was expected. The CLI prints the message (no traceback) and
exits with status 2.
"""


class RmaatError(Exception):
    """Base class of every error the user can fix by changing their input."""


class ConfigError(RmaatError, ValueError):
    """A configuration value is unknown, of the wrong type, or out of range."""


class DataError(RmaatError, ValueError):
    """An input file is missing, malformed, or of the wrong schema version."""


class RunExistsError(RmaatError, FileExistsError):
    """The output directory already holds a finished (or a different) run."""


class OutputError(RmaatError, OSError):
    """The output location cannot be created or written (permissions, read-only, full)."""


class RunBusyError(RunExistsError):
    """Another live process holds the run directory's lock."""


def show(value: object, digits: int = 6) -> str:
    """A number as people read it in a message: ``5`` or ``0.123457``, never ``np.float64(5.0)``.

    Numpy scalars become Python numbers; floats keep ``digits`` significant digits;
    anything that is not a number is shown by its ``repr``.
    """
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():
        value = item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}"
