"""Model family ``rmaat_network``: rate neurons, synapses, short- and long-term astrocytic processes.

Modules, each depending only on those above it:

``params``     the parameter table ``rmaat-network/v1``, geometry, coupling
``protocols``  the STP-cycle protocol as data
``model``      the config (``NetworkSimConfig``), the Brian2 equations and network
``run``        ``run(cfg) -> SimOutput``: the family's entry module (``astro_sim.simulate``)
``reference``  the same equations integrated with SciPy, to check the Brian2 model

Importing this package imports none of them (nor Brian2).
"""
