"""distill — fit a saturating macro model to a simulated long-term trace; export the schedule.

Stage entry: ``distill.fitting.fit(FitConfig, traces_path, out_dir)`` (``rmaat fit``), and
``distill.sensitivity.sensitivity(SensitivityConfig, sweep_dir, out_dir)``
(``rmaat sensitivity``). Modules: ``models`` (NumPy model functions and their registry),
``fitting`` (lmfit fits, selection, the stage entry), ``global_fit`` (shared shape across a
sweep), ``retention`` (RF, RF_inf, bands, ``retention.json``), ``sensitivity``, ``plots``,
``synthetic`` (traces with known parameters in the simulator's layouts), ``cli``.

Importing this package imports neither lmfit nor SciPy; they load when a fit runs.
"""
