"""astro_sim — Brian2 neuron–astrocyte simulations that produce ``traces.parquet``.

Two model families, one subpackage each, share one entry point,
:func:`astro_sim.simulate.simulate`: ``rmaat_network`` (:mod:`astro_sim.network`: rate
neurons, synapses, short- and long-term astrocytic processes) and ``tripartite``
(:mod:`astro_sim.tripartite`: spiking tripartite synapse with Graupner–Brunel long-term
efficacy). Stage-level modules: ``simulate`` (the entry and the family registry), ``sweep``
(parameter grids, any family), ``cli`` and ``sweep_cli`` (the ``rmaat`` verbs), ``plots``;
shared by the families: ``param_table`` (parameter rows, units) and ``output`` (``SimOutput``).
Importing this package does not import brian2; running a simulation does.
"""
