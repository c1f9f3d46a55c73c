"""distill — fit a saturating macro model to a simulated long-term trace; export the schedule.

Stage entry: ``distill.fitting.fit(FitConfig, traces_path, out_dir)`` (``rmaat fit``), and
``distill.sensitivity.sensitivity(SensitivityConfig, sweep_dir, out_dir)``
(``rmaat sensitivity``). Modules, each importing only those before it: ``models`` (NumPy
model functions, their bounds and guesses, as lmfit Models), ``curves`` (reading and
checking the curve to fit), ``engine`` (lmfit fits of one curve, the uncertainty check,
model selection), ``global_fit`` (shared shape across a sweep), ``retention`` (the schedule,
its bands, ``retention.json``), ``plots``, ``fitting`` (the stage: ``FitConfig``, ``fit``,
run directories), ``sensitivity``, ``synthetic`` (traces with known parameters in the
simulator's layouts), ``cli``.

Importing this package imports neither lmfit nor SciPy; they load when a fit runs.
"""
