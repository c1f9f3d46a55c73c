"""astro_sim — Brian2 neuron–astrocyte simulations that produce ``traces.parquet``.

Two model families share one entry point, :func:`astro_sim.simulate.simulate`:
``rmaat_network`` (rate neurons, synapses, short- and long-term astrocytic processes) and
``tripartite`` (spiking tripartite synapse with Graupner–Brunel long-term efficacy).
Importing this package does not import brian2; running a simulation does.
"""
