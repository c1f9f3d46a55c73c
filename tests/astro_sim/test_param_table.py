"""One table per family: the config fields, Brian2 units and SI factors all derive from it."""

from __future__ import annotations

import dataclasses

import pytest

from astro_sim import param_table as pt
from astro_sim.network import params as net
from astro_sim.tripartite import param_sets as ps
from astro_sim.tripartite import params as tri


def test_config_fields_are_the_table_rows_in_order():
    assert [f.name for f in dataclasses.fields(net.NetworkParams)] == [r.name for r in net.PARAMS]
    assert net.NetworkParams() == net.NetworkParams(**{r.name: r.value for r in net.PARAMS})
    assert [f.name for f in dataclasses.fields(tri.TripartiteParams)] == [p.name for p in tri.PARAMS]
    assert tri.TripartiteParams() == tri.TripartiteParams(**{p.name: p.value for p in tri.PARAMS})
    settable = [n for n, v in tri.VARIABLES.items() if v.init is not None]
    assert [f.name for f in dataclasses.fields(tri.InitialState)] == settable
    with pytest.raises(TypeError, match="come from a table"):
        @pt.params_dataclass(net.PARAMS)
        class Restated:
            tau_n_ms: float = 10.0


def test_every_unit_of_every_table_is_in_the_unit_table():
    used = {r.unit for r in net.PARAMS} | {p.unit for rows in ps.PARAMETER_SETS.values() for p in rows}
    used |= {v.unit for v in tri.VARIABLES.values()}
    assert used <= set(pt.UNITS)
    for r in net.PARAMS:                   # the key carries its unit; the symbol drops it
        assert r.unit == "1" or (r.name.endswith(f"_{r.unit}") and net.symbol(r) + f"_{r.unit}" == r.name)


def test_unit_table_agrees_with_brian2():
    """si is the unit in SI base units, and base is the dimension of the unit itself."""
    from brian2.units.fundamentalunits import get_dimensions

    for sym, u in pt.UNITS.items():
        q = pt.quantity(1.0, sym)
        assert get_dimensions(q) == get_dimensions(pt.base_unit(sym)), sym
        assert float(q / pt.base_unit(sym)) == pytest.approx(u.si, rel=1e-12), sym
        assert pt.declaration(sym) == u.base
    ns = net.namespace(net.NetworkParams())
    assert set(ns) == {"tau_n", "lam", "tau_s", "beta", "tau_ps", "gamma_s", "tau_pl", "gamma_l",
                       "c_T", "l_T"}
    assert float(ns["tau_pl"]) == 10.0 and float(ns["tau_n"]) == pytest.approx(0.01)
