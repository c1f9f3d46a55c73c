"""The pipeline report: figures and ``report.md`` built only from the stages' files.

Like BMTK's plotting tools, the report finds every output through the run directories
(``config.json`` says what was run); it never receives numbers from the code that
produced them, so every figure in it can be redrawn from the files alone.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from astro_rmaat import runs
from astro_rmaat.retention import load_retention
from astro_rmaat.style import plot_style
from astro_rmaat.traces import read_traces, select_curve
from distill.plots import plot_schedule
from rmaat_model.metrics import read_metrics
from rmaat_model.model_config import MEMORY_ARCHS


# --------------------------------------------------------------------------- reading
def segments_of(train_dir: Path) -> int | None:
    """Number of segments T the model saw for the longest sequence (max_len / segment_len)."""
    mc_path = train_dir / "model.config.json"
    if not mc_path.is_file():
        return None
    mc = json.loads(mc_path.read_text())
    if mc.get("arch") not in MEMORY_ARCHS or not mc.get("segment_len"):
        return None
    return int(math.ceil(mc["max_len"] / mc["segment_len"]))


def accuracy_by_age_of(train_dir: Path) -> dict[int, float] | None:
    """Test accuracy of a run's best checkpoint by the age of the fact (segments between fact and
    query), recomputed from its files; None for a task without ages."""
    cfg = json.loads((train_dir / "config.json").read_text())
    if not (cfg.get("task") == "assoc" or (cfg.get("task") == "recall" and cfg.get("recall_min_segments"))):
        return None
    from rmaat_model.evaluate import accuracy_by_age
    from astro_rmaat.config import from_dict
    from rmaat_model.checkpoint import BEST_FILE, load_weights
    from rmaat_model.train_config import TrainConfig, load_data

    _, data = load_data(from_dict(TrainConfig, cfg), splits=("test",))
    by_age = accuracy_by_age(load_weights(train_dir, BEST_FILE), data["test"])
    return {int(a): v["acc"] for a, v in by_age.items()}


def collect(sim_dir: Path, fit_dir: Path, train_dirs: dict[str, Path],
            data_dir: Path | None = None) -> dict[str, Any]:
    """Every number the report prints, read back from the run directories."""
    samples = read_traces(sim_dir / "samples.parquet")
    slow = samples.attrs.get("slow_variable", "p_l")
    t, p = select_curve(samples, slow)
    dp = np.diff(p)
    sim_meta = json.loads((sim_dir / "meta.json").read_text())
    sim = {"model": samples.attrs.get("model"), "slow_variable": slow,
           "tau_cycle_s": samples.attrs.get("tau_cycle_s"), "n_boundaries": int(t.size),
           "first_increment": float(dp[0]), "last_increment": float(dp[-1]),
           "last_over_first": float(dp[-1] / dp[0]) if dp[0] != 0 else math.nan,
           "wall_time_s": sim_meta.get("wall_time_s"), "target": sim_meta.get("brian2_target")}
    fit_doc = json.loads((fit_dir / "fit.json").read_text())
    ret = load_retention(fit_dir / "retention.json")
    cands = []
    for c in fit_doc["candidates"]:
        cands.append({"name": c["name"], "k": c.get("k"), "r2": c.get("r2"), "aicc": c.get("aicc"),
                      "bic": c.get("bic"), "akaike_weight": c.get("akaike_weight"),
                      "uncertainties_ok": c.get("uncertainties_ok")})
    chosen = next(c for c in fit_doc["candidates"] if c["name"] == fit_doc["chosen"])
    fit = {"chosen": fit_doc["chosen"], "criterion": fit_doc.get("criterion"),
           "params": {k: v for k, v in chosen["params"].items()}, "candidates": cands,
           "p_inf": ret.p_inf, "tau_cycle_s": ret.tau_cycle_s}
    training: dict[str, Any] = {}
    T_train = None
    for arch, d in train_dirs.items():
        res = json.loads((d / "results.json").read_text())
        meta = json.loads((d / "meta.json").read_text())
        cfg = json.loads((d / "config.json").read_text())
        training[arch] = {"val_acc": res.get("val_acc"), "test_acc": res.get("test_acc"),
                          "best_step": res.get("best_step"), "steps_done": res.get("steps_done"),
                          "majority_test": (res.get("majority") or {}).get("test_acc"),
                          "majority": res.get("majority"),
                          "method": cfg.get("method"), "wall_time_s": meta.get("wall_time_s"),
                          "segments": segments_of(d), "by_age": accuracy_by_age_of(d),
                          "n_classes": json.loads((d / "model.config.json").read_text()).get("n_classes")}
        T_train = T_train or training[arch]["segments"]
    T_show = T_train or 8
    T_show = min(T_show, ret.max_segments)
    schedule = {"T": T_show, "rf": ret.rf(T_show).tolist(), "rf_stream": ret.rf_stream(T_show).tolist()}
    data = None
    if data_dir is not None and (data_dir / "config.json").is_file():
        data = json.loads((data_dir / "config.json").read_text())
    return {"simulation": sim, "fit": fit, "schedule": schedule, "training": training, "data": data}


# --------------------------------------------------------------------------- figures
#: variables worth a panel, in order: RMAAT network (x, s, p_s) and tripartite synapse
#: (astrocyte Ca2+ and IP3, gliotransmitter-modulated release, GB calcium); the slow
#: variable is always the last panel
PANELS = ("x", "s", "p_s", "C", "Gamma_S", "c", "I")
def plot_traces(traces_path: Path, samples_path: Path):
    """Every recorded variable over time, with the slow variable at cycle boundaries; a Figure."""
    import matplotlib.pyplot as plt

    df = read_traces(traces_path)
    samples = read_traces(samples_path)
    slow = samples.attrs.get("slow_variable")
    present = set(df["variable"])
    variables = [v for v in PANELS if v in present and v != slow][:3]
    variables += [slow] if slow in present else []
    with plot_style():
        fig, axes = plt.subplots(len(variables), 1, figsize=(7.0, 1.7 * len(variables)), sharex=True)
        axes = np.atleast_1d(axes)
        for ax, var in zip(axes, variables):
            sub = df[df["variable"] == var]
            for el, grp in sub.groupby("element"):
                ax.plot(grp["t_s"], grp["value"], lw=0.8, alpha=0.8)
            if var == slow:
                ss = samples[samples["variable"] == var]
                ax.plot(ss["t_s"], ss["value"], "k.", ms=2.5, label="cycle boundaries")
                ax.legend(loc="lower right")
            ax.set_ylabel(f"{var} [{sub['unit'].iloc[0]}]")
        axes[-1].set_xlabel("time [s]")
        fig.suptitle(f"{df.attrs.get('model')}: every element of each recorded variable")
    return fig


def plot_training(train_dirs: dict[str, Path], axes=None):
    import matplotlib.pyplot as plt

    with plot_style():
        if axes is None:
            _, axes = plt.subplots(1, 2, figsize=(9, 3.4))
        for arch, d in train_dirs.items():
            rows = read_metrics(d)
            step = [r["step"] for r in rows]
            axes[0].plot(step, [r["train_loss"] for r in rows], marker=".", label=arch)
            axes[1].plot(step, [r["val_acc"] for r in rows], marker=".", label=arch)
        axes[0].set_xlabel("step"); axes[0].set_ylabel("training loss")
        axes[1].set_xlabel("step"); axes[1].set_ylabel("validation accuracy")
        axes[1].legend()
    return axes


def plot_forgetting(retention_path: Path, training: dict[str, Any], axes=None):
    """The astrocyte's LTP curve and the schedule it gives (left) beside each model's accuracy
    against the age of the fact (right): the biology's retention and the model's."""
    import matplotlib.pyplot as plt

    ret = load_retention(retention_path)
    with_ages = {a: r for a, r in training.items() if r.get("by_age")}
    with plot_style():
        if axes is None:
            _, axes = plt.subplots(1, 2, figsize=(9, 3.4))
        T = max((max(r["by_age"]) + 1 for r in with_ages.values()), default=16)
        T = min(T, ret.max_segments)
        k = np.arange(len(ret.p))
        axes[0].plot(k, ret.p / ret.p_inf, color="k", label="p / p_inf (LTP trace)")
        axes[0].bar(np.arange(1, T + 1), ret.rf(T) / ret.rf(T).max(), color="tab:green", alpha=0.4,
                    label=f"RF(t, {T}) / max")
        axes[0].set_xlim(0, max(T, 20) + 0.5)
        axes[0].set_xlabel("cycle = segment")
        axes[0].set_title("astrocyte LTP -> schedule")
        axes[0].legend(fontsize=8)
        for arch, r in with_ages.items():
            ages = sorted(r["by_age"])
            axes[1].plot(ages, [r["by_age"][a] for a in ages], marker="o", ms=3, label=arch)
        chance = next((1 / r["n_classes"] for r in with_ages.values() if r.get("n_classes")), None)
        if chance:
            axes[1].axhline(chance, color="grey", ls=":", lw=1, label="chance")
        axes[1].set_ylim(0, 1.02)
        axes[1].set_xlabel("age of the fact (segments before the query)")
        axes[1].set_ylabel("test accuracy")
        axes[1].set_title("forgetting curves")
        axes[1].legend(fontsize=8)
    return axes


def schedule_sentence(training: dict[str, Any]) -> str:
    """One sentence: what the model with the distilled schedule reached, beside the others."""
    names = list(training)
    if not names:
        return ""
    first, r0 = names[0], training[names[0]]

    def describe(r):
        txt = _pct(r["test_acc"])
        if r.get("by_age"):
            ages = sorted(r["by_age"])
            txt += f" (age {ages[0]}: {_pct(r['by_age'][ages[0]])}, age {ages[-1]}: {_pct(r['by_age'][ages[-1]])})"
        return txt

    others = "; ".join(f"{a}: {describe(training[a])}" for a in names[1:])
    chance = f"; chance {_pct(1 / r0['n_classes'])}" if r0.get("n_classes") else ""
    return (f"With the schedule distilled from the astrocyte, {first} reached {describe(r0)} on test"
            + (f", against {others}" if others else "") + f"{chance}.")


# --------------------------------------------------------------------------- markdown
def _f(x: Any, fmt: str = ".4g") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return format(x, fmt)


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def render(results: dict[str, Any], cfg: dict[str, Any], walls: dict[str, float],
           rel: dict[str, str]) -> str:
    sim, fit, sch, tr = results["simulation"], results["fit"], results["schedule"], results["training"]
    lines = [
        "# astro-rmaat pipeline report", "",
        f"Model family **{sim['model']}**, task **{cfg['task']}**, seed {cfg['seed']}"
        + (" (quick setting: tiny sizes, numbers are not meaningful)" if cfg.get("quick") else "") + ".",
        "Every number below is read back from the stage directories (`sim/`, `fit/`, `train/`).", "",
        "## 1. Biophysics: the long-term astrocytic trace", "",
        f"![traces]({rel['traces']})", "",
        f"`{sim['slow_variable']}` sampled at {sim['n_boundaries']} cycle boundaries "
        f"(tau_cycle = {_f(sim['tau_cycle_s'])} s; Brian2 target {sim['target']}, "
        f"{_f(sim['wall_time_s'], '.1f')} s): first increment {_f(sim['first_increment'])}, last "
        f"{_f(sim['last_increment'])}, ratio last/first **{_f(sim['last_over_first'], '.3f')}** "
        "(it integrates and saturates).", "",
        "## 2. Macro model", "",
        f"![fit]({rel['fit']})", "",
        "| model | k | R² | AICc | BIC | Akaike weight | uncertainties |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in fit["candidates"]:
        mark = " **(chosen)**" if c["name"] == fit["chosen"] else ""
        lines.append(f"| {c['name']}{mark} | {c['k']} | {_f(c['r2'], '.6f')} | {_f(c['aicc'], '.2f')} | "
                     f"{_f(c['bic'], '.2f')} | {_f(c['akaike_weight'], '.3f')} | "
                     f"{'ok' if c['uncertainties_ok'] else 'NOT estimable'} |")
    lines += ["", f"Chosen by {fit['criterion']}: **{fit['chosen']}** with "
              + ", ".join(f"{k} = {_f(v['value'])} ± {_f(v['stderr'])}" for k, v in fit["params"].items())
              + f"; asymptote p_inf = {_f(fit['p_inf'])}.", "",
              "## 3. Retention schedule", "",
              f"![schedule]({rel['schedule']})", "",
              f"RF(t, T = {sch['T']}) handed to RMAAT (one STP cycle = one segment):", "",
              "| t | " + " | ".join(str(i + 1) for i in range(sch["T"])) + " |",
              "|---|" + "---|" * sch["T"],
              "| RF(t, T) | " + " | ".join(_f(v, ".3f") for v in sch["rf"]) + " |",
              "| RF_inf(t) | " + " | ".join(_f(v, ".3f") for v in sch["rf_stream"]) + " |", ""]
    lines += ["## 4. Training at equal steps and sizes", ""]
    data = results.get("data")
    if data and data.get("task") == "listops":
        lines += [f"ListOps generated by the official algorithm: {data['n_train']} / {data['n_val']} / "
                  f"{data['n_test']} train / val / test trees of {data['min_length']} < length < "
                  f"{data['max_length']} tokens (the LRA range is 500–2000; set it with "
                  "`--set min_len=500 --set max_len=2000`).", ""]
    if any(r.get("by_age") for r in tr.values()):
        lines += [f"![forgetting]({rel['forgetting']})", "", schedule_sentence(tr), ""]
    lines += [
              f"![training]({rel['training']})", "",
              "| model | gradient | segments | steps | best step | val acc | test acc | wall [s] |",
              "|---|---|---|---|---|---|---|---|"]
    majority = None
    for arch, r in tr.items():
        majority = majority if majority is not None else r["majority_test"]
        lines.append(f"| {arch} | {r['method']} | {r['segments'] or '–'} | {r['steps_done']} | "
                     f"{r['best_step']} | {_pct(r['val_acc'])} | {_pct(r['test_acc'])} | "
                     f"{_f(r['wall_time_s'], '.0f')} |")
    near_prior = [a for a, r in tr.items() if r["test_acc"] is not None and majority is not None
                  and r["test_acc"] - majority < 0.03]
    if near_prior:
        lines += ["", f"{', '.join(near_prior)}: within 3 points of the majority class — still "
                  "predicting close to the label prior. Runs with one seed see the same batches, so "
                  "prior-like models have near-identical training losses (they follow the batches' "
                  "label mix)."]
    lines += ["", f"Majority-class baseline on test: {_pct(majority)}. Accuracies are those of the "
              "best-on-validation checkpoint."]
    if cfg.get("task") == "listops":
        lines += ["The paper's full-budget ListOps figures are RMAAT 38.9% and Transformer 36.4%; "
                  "minutes on two CPU cores are far from that."]
    lines += ["",
              "## Stage wall times", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in walls.items()]
    return "\n".join(lines) + "\n"


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with runs.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_report(out: Path, cfg, *, sim_dir: Path, fit_dir: Path, train_dirs: dict[str, Path],
                 walls: dict[str, float], data_dir: Path | None = None) -> Path:
    """Figures in ``out/figures``, ``out/results.json`` and ``out/report.md`` (atomic)."""
    from astro_rmaat.config import to_dict

    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    results = collect(sim_dir, fit_dir, train_dirs, data_dir)
    fig = plot_traces(sim_dir / "traces.parquet", sim_dir / "samples.parquet")
    _save(fig, figs / "traces.png")
    Ts = sorted({4, results["schedule"]["T"], 16})
    with plot_style():
        _save(plot_schedule(fit_dir / "retention.json", Ts).figure, figs / "schedule.png")
        _save(plot_training(train_dirs)[0].figure, figs / "training.png")
        if any(r.get("by_age") for r in results["training"].values()):
            _save(plot_forgetting(fit_dir / "retention.json", results["training"])[0].figure,
                  figs / "forgetting.png")
    rel = {"traces": "figures/traces.png", "schedule": "figures/schedule.png",
           "training": "figures/training.png", "forgetting": "figures/forgetting.png",
           "fit": os.path.relpath(fit_dir / "fit.png", out)}
    runs.atomic_write_json(out / "results.json", {**results, "stage_walls_s": walls})
    cfg_dict = to_dict(cfg)
    return runs.atomic_write_text(out / "report.md", render(results, cfg_dict, walls, rel))
