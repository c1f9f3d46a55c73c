"""The forgetting-curve benchmark's report pieces (``bench/retention_curve.py``): results.csv
written and read back, the tables of mean ± sd per setting and model (with assoc's key-blind
ceiling and binding), the rank tests between two models' runs and the figure of accuracy by age
beside the astrocyte's LTP curve. All of them
work on the results rows the benchmark gathers (one dict per run); none trains anything.
"""

from __future__ import annotations

import csv
import os
import statistics
from pathlib import Path


def write_results(path: Path, rows: list[dict], size_columns) -> None:
    """results.csv, atomically: one row per run, the sizes' columns (``size_columns``, in order)
    after the setting, then the accuracies, the share of predictions among the values present,
    their key-blind score and the share of answers that change with the key (assoc), the accuracy
    at every age, a learned table's RF at every hand-off, and the accuracy over every fact of
    each age (assoc, K > 1)."""
    ages = sorted({int(k[4:]) for r in rows for k in r if k.startswith("age_")})
    handoffs = sorted({int(k[3:]) for r in rows for k in r if k.startswith("rf_")})
    every = sorted({int(k[10:]) for r in rows for k in r if k.startswith("every_age_")})
    cols = ["task", "T", "K", "model", "seed", "steps", *size_columns, "test_acc",
            "best_val_acc", "pred_present", "blind_acc", "key_use", "train_wall_s", "trained_on"] + [f"age_{a}" for a in ages] + [f"rf_{t}" for t in handoffs] + [f"every_age_{a}" for a in every]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in sorted(rows, key=lambda r: (r["T"], r["K"], r["model"], r["seed"])):
            w.writerow({c: r.get(c, "") for c in cols})
    os.replace(tmp, path)


def _number(v: str) -> int | float:
    try:
        return int(v)
    except ValueError:
        return float(v)   # also "1e-05", as csv writes a small float


def read_results(path: Path) -> list[dict]:
    """The rows of a results.csv, numbers as numbers and empty cells left out."""
    with open(path, newline="") as fh:
        return [{k: (v if k in ("task", "model", "trained_on") else _number(v)) for k, v in r.items() if v != ""}
                for r in csv.DictReader(fh)]


def table(rows: list[dict], order: list[str], column: str = "test_acc") -> str:
    """Markdown: one line per model (in ``order``, the models the rows hold), one column per
    setting (T, K), each cell the mean ± sd of the runs' ``column`` (a fraction) in % and their
    count; rows without the column are left out."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if column in r:
            groups.setdefault((r["T"], r["K"], r["model"]), []).append(r)
    settings = sorted({(T, K) for T, K, _ in groups})
    present = {m for _, _, m in groups}
    lines = ["| model | " + " | ".join(f"T={T}, K={K}" for T, K in settings) + " |",
             "|" + "---|" * (len(settings) + 1)]
    for m in (m for m in order if m in present):
        cells = []
        for T, K in settings:
            accs = [r[column] for r in groups.get((T, K, m), [])]
            if not accs:
                cells.append("")
                continue
            mean = statistics.fmean(accs)
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            cells.append(f"{100 * mean:.1f} ± {100 * sd:.1f} (n={len(accs)})")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def compare(rows: list[dict], pairs: list[tuple[str, str]], column: str = "test_acc") -> str:
    """Per setting holding both models of a pair: medians, means and a two-sided Mann-Whitney U
    test of the runs' ``column`` (test accuracy by default; a fraction, printed in %, or in
    points for any other column), exact or tie-corrected: bench/retention_curve.py's doc."""
    from scipy.stats import mannwhitneyu

    groups: dict[tuple, list[float]] = {}
    for r in rows:
        if column in r:
            groups.setdefault((r["T"], r["K"], r["model"]), []).append(r[column])
    what, unit = ("", " %") if column == "test_acc" else (f" ({column})", " points")
    lines = []
    for T, K in sorted({(r["T"], r["K"]) for r in rows}):
        for a, b in pairs:
            x, y = groups.get((T, K, a)), groups.get((T, K, b))
            if not x or not y:
                continue
            if len(x) < 2 or len(y) < 2:
                lines.append(f"T={T}, K={K}: {a} vs {b}{what}: n = {len(x)}, {len(y)}; a test needs 2 seeds a side")
                continue
            exact = len(set(x) | set(y)) == len(x) + len(y)       # no ties
            res = mannwhitneyu(x, y, alternative="two-sided", method="exact" if exact else "asymptotic")
            lines.append(
                f"T={T}, K={K}: {a} vs {b}{what}: median {100 * statistics.median(x):.1f} vs "
                f"{100 * statistics.median(y):.1f}{unit}, mean {100 * statistics.fmean(x):.1f} vs "
                f"{100 * statistics.fmean(y):.1f}{unit}; Mann-Whitney U = {res.statistic:g}, two-sided "
                f"p = {res.pvalue:.3g} ({'exact' if exact else 'normal approximation'}; n = {len(x)}, {len(y)})")
    return "\n".join(lines) + ("\n" if lines else "")


def with_binding(rows: list[dict]) -> list[dict]:
    """The rows that carry ``blind_acc`` (assoc), each with ``binding`` = test_acc - blind_acc
    (to the 4 decimals both are stored with, so equal bindings tie in the rank test)."""
    return [dict(r, binding=round(r["test_acc"] - r["blind_acc"], 4)) for r in rows if "blind_acc" in r]


def comparisons(rows: list[dict], pairs) -> str:
    """``--compare``: the rank test of the test accuracies, and of the binding where rows carry it."""
    return compare(rows, pairs) + compare(with_binding(rows), pairs, "binding")


def report(rows: list[dict], order: list[str], segment_len: int) -> str:
    """The accuracy table (models in ``order``); for assoc, with what a memory of the values
    present without their keys scores on each setting's test split (segments of
    ``segment_len``), and, for the rows that carry them, the share of answers that are such a
    value and the accuracy above the answers' key-blind score."""
    text = table(rows, order)
    settings = sorted({(r["T"], r["K"]) for r in rows if r["task"] == "assoc"})
    if not settings:
        return text
    from rmaat_model.data import assoc

    ceilings = []
    for T, K in settings:
        tokens = assoc.generate(assoc.SPLIT_SIZES["test"], T * segment_len, segment_len, K, assoc.SPLIT_SEEDS["test"])[0]
        blind = assoc.key_blind_accuracy(tokens)
        ceilings.append(f"T={T}, K={K}: {100 * blind['best']:.1f} % (any value present: {100 * blind['uniform']:.1f} %)")
    text += ("\nKey-blind ceiling (a memory of the facts' values without their keys, answering the most "
             "frequent; test split): " + "; ".join(ceilings) + ". Above it a model binds keys to values.\n")
    if any("pred_present" in r for r in rows):
        text += ("\nAnswers that are the value of one of the example's facts, % (a key-blind memory: 100; "
                 "no memory: about the share of the 8 values present):\n\n" + table(rows, order, "pred_present"))
    gains = with_binding(rows)
    if gains:
        text += ("\nBinding: test accuracy minus what the same answers score when the queried key is ignored "
                 "(blind_acc), points (0 ± about 1 for answers that ignore the key):\n\n"
                 + table(gains, order, "binding"))
    asked = [r for r in rows if r.get("key_use") is not None]
    if asked:
        text += ("\nAnswers that change when the query names another of the example's facts, % (0 for a "
                 "model that ignores the key; reading the key is not binding, the line above says "
                 "whether it pays):\n\n" + table(asked, order, "key_use"))
    return text


def forgetting_curves(sub: list[dict]) -> tuple[bool, dict[str, tuple[list[int], list[float]]]]:
    """The curves of one setting's rows: ``(every, {model: (ages, mean accuracy over its runs)})``,
    over every fact (``every_age_a``) where all the rows have it (assoc, K > 1: no draw of the
    queried fact), else by each example's one query (``age_a``)."""
    every = bool(sub) and all("every_age_1" in r for r in sub)
    prefix = "every_age_" if every else "age_"
    curves = {}
    for m in dict.fromkeys(r["model"] for r in sub):
        rs = [r for r in sub if r["model"] == m]
        ages = sorted({int(k[len(prefix):]) for r in rs for k in r if k.startswith(prefix)})
        curves[m] = (ages, [statistics.fmean(r[f"{prefix}{a}"] for r in rs if f"{prefix}{a}" in r) for a in ages])
    return every, curves


def plot(path: Path, rows: list[dict]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from astro_rmaat import retention
    from astro_rmaat.style import plot_style

    settings = sorted({(r["T"], r["K"]) for r in rows})
    with plot_style():
        fig, axes = plt.subplots(1, len(settings) + 1, figsize=(3.4 * (len(settings) + 1), 3.2), squeeze=False)
        ax = axes[0, 0]
        sched = retention.load_retention(retention.default_retention_path())
        t = np.arange(len(sched.p))
        ax.plot(t, sched.p / sched.p_inf, color="k", label="p_l / p_inf (astrocyte LTP)")
        Tmax = max(T for T, _ in settings)
        ax.bar(np.arange(1, Tmax + 1), sched.rf(Tmax), color="tab:green", alpha=0.5,
               label=f"RF(t, {Tmax})")
        ax.set_xlim(0, max(Tmax, 20))
        ax.set_xlabel("cycles / segments")
        ax.set_title("LTP curve -> schedule")
        ax.legend(fontsize=7)
        for ax, (T, K) in zip(axes[0, 1:], settings):
            sub = [r for r in rows if r["T"] == T and r["K"] == K]
            every, curves = forgetting_curves(sub)
            for i, (m, (ages, mean)) in enumerate(curves.items()):
                ax.plot(ages, mean, marker="o", ms=3, ls=("-", "--", ":")[(i // 7) % 3], label=m)
            ax.axhline(1 / 8, color="grey", ls=":", lw=1)
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("age of the fact (segments)")
            task = sub[0].get("task", "assoc")
            ax.set_title((f"assoc T={T}, K={K}" + (", every fact" if every else "")) if task == "assoc"
                         else f"recall, 2..{T} segments")
        axes[0, 1].set_ylabel("test accuracy")
        axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
        fig.tight_layout()
        tmp = path.with_name(path.stem + ".tmp.png")
        fig.savefig(tmp, dpi=110)
        plt.close(fig)
    os.replace(tmp, path)
