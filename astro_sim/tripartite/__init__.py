"""Model family ``tripartite``: spiking tripartite synapse with Graupner–Brunel efficacy.

Modules, each depending only on those above it:

``param_sets``   named, versioned parameter sets (values, units, meanings, sources)
``params``       the family's parameter and state-variable tables, ``TripartiteParams``,
                 ``InitialState``
``protocols``    spike and IP3 protocols as data (``SpikeProtocolConfig``, ``make_stimulus``)
``reference``    SciPy integrations of the astrocytes (the G-ChI rest state; NEST's
                 ``astrocyte_lr_1994``)
``model``        the config (``TripartiteSimConfig``), the Brian2 equations and network
``standalone``   one ``cpp_standalone`` build per code signature, rerun with run_args
``run``          ``run(cfg) -> SimOutput`` and the sweep hooks: the family's entry module
``nest_models``  NEST's ``astrocyte_lr_1994`` and ``tsodyks_synapse`` -> ``iaf_psc_exp`` in Brian2
``nest_parity``  NEST's own test protocols and the comparison with NEST's numbers

Importing this package imports none of them (nor Brian2).
"""
