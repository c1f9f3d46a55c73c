"""Parameter tables: each parameter stated once, as a row, and what derives from the rows.

A model family keeps one table of its parameters (name, default, unit, meaning, and where
the value comes from). From it derive:

* the frozen config dataclass (:func:`table_dataclass`): one field per row, in table order,
  the row's value as its default, so the config keys and their order are the table's;
* the Brian2 quantities and unit declarations (:func:`quantity`, :func:`declaration`);
* the SI values handed to a ``cpp_standalone`` binary (:func:`si_factor`);
* ``docs/parameters.md`` (``scripts/make_param_tables.py``, from each family's ``describe()``).

Units are written as the tables write them (``"uM/s"``, ``"1/(uM*s)"``, ``"ms"``; ``"1"``:
dimensionless). :data:`UNITS` is the one list of what each means to Brian2; it serves the
parameters and the trace units of every family.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Callable, Iterable


@dataclass(frozen=True)
class Param:
    name: str       # symbol as in the equations (and the config key)
    value: float    # in ``unit``
    unit: str       # a key of UNITS ("1" for dimensionless)
    meaning: str
    source: str     # where the value comes from


@dataclass(frozen=True)
class Unit:
    symbol: str     # as written in the parameter tables and in the traces' unit column
    si: float       # factor to Brian2's SI base units (concentrations: mM = mol/m^3)
    base: str       # that SI base unit in Brian2's notation (what the equations declare)
    brian: str      # the unit itself in Brian2's notation


UNITS: dict[str, Unit] = {u.symbol: u for u in (
    Unit("1", 1.0, "1", "1"),
    Unit("1/s", 1.0, "hertz", "Hz"),
    Unit("1/ms", 1e3, "hertz", "1/ms"),
    Unit("s", 1.0, "second", "second"),
    Unit("ms", 1e-3, "second", "ms"),
    Unit("uM", 1e-3, "mmolar", "umolar"),
    Unit("mM", 1.0, "mmolar", "mmolar"),
    Unit("uM/s", 1e-3, "mmolar/second", "umolar/second"),
    Unit("uM/ms", 1.0, "mmolar/second", "umolar/ms"),
    Unit("1/(uM*s)", 1e3, "metre**3/mole/second", "1/(umolar*second)"),
    Unit("1/(uM*ms)", 1e6, "metre**3/mole/second", "1/(umolar*ms)"),
    Unit("mV", 1e-3, "volt", "mV"),
    Unit("nS", 1e-9, "siemens", "nS"),
    Unit("pA", 1e-12, "amp", "pA"),
    Unit("pF", 1e-12, "farad", "pF"),
    Unit("um", 1e-6, "metre", "umetre"),
)}


@functools.cache
def brian_unit(expr: str) -> Any:
    """A unit written in Brian2's notation (``"umolar/second"``) as a Brian2 object."""
    import brian2
    return eval(expr, {"__builtins__": {}}, vars(brian2))  # the table's own constant strings


def quantity(value: float, unit: str) -> Any:
    """``value`` in the table unit ``unit`` as a Brian2 quantity."""
    return value * brian_unit(UNITS[unit].brian)


def declaration(unit: str) -> str:
    """The SI base unit Brian2 equations declare for a value in ``unit``."""
    return UNITS[unit].base


def base_unit(unit: str) -> Any:
    """The SI base unit of ``unit`` as a Brian2 object (multiplies SI values)."""
    return brian_unit(UNITS[unit].base)


def si_factor(unit: str) -> float:
    """Factor from ``unit`` to Brian2's SI base units."""
    return UNITS[unit].si


def table_dataclass(fields: Iterable[tuple[str, Any, Any]]) -> Callable[[type], type]:
    """Class decorator: a frozen dataclass whose fields are ``(name, type, default)`` rows.

    The class body holds the docstring, ``__post_init__`` and any methods; it declares no
    fields of its own (the table is their one home).
    """
    rows = list(fields)

    def wrap(cls: type) -> type:
        if cls.__dict__.get("__annotations__"):
            raise TypeError(f"{cls.__name__}: its fields come from a table; the class body "
                            "declares none")
        cls.__annotations__ = {name: tp for name, tp, _ in rows}
        for name, _, default in rows:
            setattr(cls, name, default)
        return dataclasses.dataclass(frozen=True)(cls)

    return wrap


def params_dataclass(rows: Iterable[Any]) -> Callable[[type], type]:
    """:func:`table_dataclass` with one ``float`` field per parameter row (``.name``, ``.value``)."""
    return table_dataclass((row.name, float, row.value) for row in rows)
