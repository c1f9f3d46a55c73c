"""``rmaat fit`` and ``rmaat sensitivity`` (click commands; lmfit/SciPy load only when run)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from astro_rmaat.config import flag_overrides


def _models(value: str | None) -> list[str] | None:
    return None if value is None else [m.strip() for m in value.split(",") if m.strip()]


def _need(value, what: str) -> None:
    if value is None:
        raise click.UsageError(f"{what} is required (or use --show-defaults)")


@click.command(name="fit")
@click.argument("traces", type=click.Path(path_type=Path), required=False)
@click.option("--out", "out_dir", type=click.Path(path_type=Path),
              help="run directory to create (refused if it holds a finished run)")
@click.option("--variable", default=None, help="trace variable (default: the trace's slow variable, else p_l)")
@click.option("--element", type=int, default=None, help="fit one element instead of the elements' mean")
@click.option("--models", default=None, help="comma-separated candidates, e.g. exp,hill,double_exp,power,mm")
@click.option("--criterion", type=click.Choice(["aicc", "bic"]), default=None, help="model choice (default aicc)")
@click.option("--offset", type=click.Choice(["free", "zero", "first"]), default=None,
              help="p(0): fitted (default), fixed at 0, or fixed at the first sample")
@click.option("--seed", type=int, default=None, help="seed of the starting points and the band")
@click.option("--n-starts", type=int, default=None, help="seeded starting points per model")
@click.option("--tau-cycle", type=float, default=None, help="cycle length in s (default: from the trace)")
@click.option("--group-by", default=None, help="sweep only: also fit a shared shape within each value of this key")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="FitConfig JSON file")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="override a FitConfig field")
@click.option("--show-defaults", is_flag=True,
              help="print the full FitConfig (defaults + --config + options) as JSON and exit")
def fit_command(traces, out_dir, variable, element, models, criterion, offset, seed, n_starts,
                tau_cycle, group_by, config_path, sets, show_defaults):
    """Fit saturating macro models to TRACES and write retention.json.

    TRACES is a samples/traces Parquet file, a simulation run directory (its samples.parquet),
    or a sweep directory (a global fit with a shared time constant).
    """
    from astro_rmaat.config import load_config
    from distill import fitting
    from distill.global_fit import is_sweep_dir

    overrides = flag_overrides(dict(variable=variable, element=element, models=_models(models),
                                    criterion=criterion, offset=offset, seed=seed, n_starts=n_starts,
                                    tau_cycle_s=tau_cycle, group_by=group_by))
    cfg = load_config(fitting.FitConfig, config_path, [*sets, *overrides])
    if show_defaults:
        from astro_rmaat.config import to_dict
        from astro_rmaat.runs import to_json
        click.echo(to_json(to_dict(cfg)), nl=False)
        return
    _need(traces, "TRACES (a traces file, simulation run or sweep directory)")
    _need(out_dir, "--out DIR")
    out = fitting.fit(cfg, traces, out_dir)
    fit_doc = json.loads((out / "fit.json").read_text())
    if is_sweep_dir(traces):
        g = fit_doc["global"]
        click.echo(fit_doc["report"])
        click.echo(f"\nmodel chosen by summed {cfg.criterion.upper()} over {len(fit_doc['grid'])} "
                   f"sweep points: {fit_doc['chosen']}")
        for p, e in g["shared_params"].items():
            s = "not estimated" if e["stderr"] is None else f"{e['stderr']:.3g}"
            click.echo(f"  shared {p} = {e['value']:.6g} ± {s}")
        c = g["comparison_with_independent_fits"]
        f_p = c.get("f_p")
        click.echo(f"  global - independent: dAICc = {c['delta_aicc_global_minus_independent']:.2f}, "
                   f"F-test p = {'n/a' if f_p is None else format(f_p, '.3g')}; shared shape "
                   f"{'supported' if c['shared_supported'] else 'NOT supported'}")
        if not g["uncertainties_ok"]:
            click.echo("  WARNING: uncertainties not estimated: " + "; ".join(g["uncertainty_problems"]))
        for grp in fit_doc.get("groups") or []:
            click.echo(f"\nwithin {fit_doc['group_by']} = {grp['value']}: "
                       + grp.get("summary", grp.get("note", "")))
    else:
        chosen = fit_doc["chosen"]
        click.echo(fit_doc["reports"][chosen])
        click.echo("\n" + fit_doc["comparison"])
        click.echo(f"\nchosen model ({cfg.criterion.upper()}): {chosen}")
        ch = next(c for c in fit_doc["candidates"] if c["name"] == chosen)
        for p, e in ch["params"].items():
            s = "fixed" if not e["vary"] else ("not estimated" if e["stderr"] is None else f"{e['stderr']:.3g}")
            click.echo(f"  {p} = {e['value']:.6g} ± {s}")
        if not ch["uncertainties_ok"]:
            click.echo("  WARNING: uncertainties not estimated: " + "; ".join(ch["uncertainty_problems"]))
    from astro_rmaat.retention import load_retention
    r = load_retention(out / "retention.json")
    T = min(8, r.max_segments)
    click.echo(f"RF(t, {T}) = " + " ".join(f"{v:.4f}" for v in r.rf(T)))
    click.echo(f"wrote {out / 'retention.json'}, {out / 'fit.json'}, {out / 'fit.png'}")


@click.command(name="sensitivity")
@click.argument("sweep_dir", type=click.Path(path_type=Path), required=False)
@click.option("--out", "out_dir", type=click.Path(path_type=Path),
              help="run directory to create")
@click.option("--model", default=None, help="macro model for every point (default: best summed AICc)")
@click.option("--seed", type=int, default=None, help="seed of the fits' starting points and draws")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="SensitivityConfig JSON file")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="override a SensitivityConfig field (fit.* for the fits)")
@click.option("--show-defaults", is_flag=True,
              help="print the full SensitivityConfig as JSON and exit")
def sensitivity_command(sweep_dir, out_dir, model, seed, config_path, sets, show_defaults):
    """How the fitted macro parameters and the retention schedule move across SWEEP_DIR."""
    from astro_rmaat.config import load_config
    from distill.sensitivity import SensitivityConfig, sensitivity, summary_text

    overrides = flag_overrides({"model": model, "fit.seed": seed})
    cfg = load_config(SensitivityConfig, config_path, [*sets, *overrides])
    if show_defaults:
        from astro_rmaat.config import to_dict
        from astro_rmaat.runs import to_json
        click.echo(to_json(to_dict(cfg)), nl=False)
        return
    _need(sweep_dir, "SWEEP_DIR")
    _need(out_dir, "--out DIR")
    out = sensitivity(cfg, sweep_dir, out_dir)
    click.echo(summary_text(out))
    click.echo(f"wrote {out / 'sensitivity.csv'}, {out / 'elasticity.csv'}, {out / 'sensitivity.png'}")
