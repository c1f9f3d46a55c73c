"""The runs of the forgetting-curve benchmark (``bench/retention_curve.py``): the models it
compares, the sizes they share, each run's TrainConfig and folder, and one run trained (or
reused) and evaluated into its results.csv rows, with the answer columns on ``assoc``
(``_assoc_answers``). ``--merge`` reads the jobs of an earlier results.csv here too. The command
line, the grid and the pool are retention_curve.py's; the tables and the figure are
``_retention_report``'s; whether a stored run may be reused is ``_run_reuse``'s.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from pathlib import Path

import _run_reuse  # (whether a finished run may be reused; the stamp of a run started here)
from _assoc_answers import answer_columns, every_query_columns  # (what a run's assoc answers hold)
from _retention_report import read_results  # (``--merge``: an earlier results.csv)

SEGMENT_LEN = 16

#: model name -> ModelConfig overrides (arch, retention, reading, norm, ...)
MODELS: dict[str, dict] = {
    "ltp": dict(retention="ltp", retention_reading="integrating"),
    "ltp-literal": dict(retention="ltp", retention_reading="literal"),
    "stream": dict(retention="stream", retention_reading="integrating"),
    "stream-literal": dict(retention="stream", retention_reading="literal"),
    "learned": dict(retention="learned", retention_reading="integrating"),
    "learned-free": dict(retention="learned", retention_reading="integrating", retention_range="free"),
    "learned-literal": dict(retention="learned", retention_reading="literal"),
    "learned-literal-free": dict(retention="learned", retention_reading="literal", retention_range="free"),
    "flat": dict(retention="flat", retention_reading="integrating"),
    "ltp-reversed": dict(retention="reversed", retention_reading="integrating"),
    "none": dict(retention="none"),
    "ltp-pre": dict(retention="ltp", retention_reading="integrating", norm="pre"),
    "ltp-literal-pre": dict(retention="ltp", retention_reading="literal", norm="pre"),
    "none-pre": dict(retention="none", norm="pre"),
    "flat-pre": dict(retention="flat", retention_reading="integrating", norm="pre"),
    "rmt": dict(arch="rmt", retention="none"),
    "rlt": dict(arch="rlt", retention="none"),
    "elastic": dict(arch="elastic", retention="none", elastic_sampling="uniform"),
    "elastic-recent": dict(arch="elastic", retention="none", elastic_sampling="recent"),
    "at-segment": dict(arch="at", at_scope="segment", retention="none"),
    "transformer": dict(arch="transformer", retention="none"),
}
FIVE_SEEDS = ("ltp", "ltp-literal", "none")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What every model of one benchmark run shares, each an option (the defaults are the
    learning test's sizes). A run folder names the fields that differ from the defaults, so the
    runs stored before an option existed stay reusable and a run of another size is never
    reused as this one."""
    layers: int = 1             # --layers: blocks
    n_mem: int = 4              # --n-mem: memory tokens of a memory model
    d_model: int = 32           # --d-model: residual width (2 heads, d_ff = 2 d_model)
    retention_lr: float = 0.1   # --retention-lr: a learned table's own learning rate
    lr: float = 5e-3            # --lr: every model's peak learning rate (reached after the warm-up, cosine decay to a tenth)
    warmup: int = 20            # --warmup: optimiser steps of linear warm-up from 0 to lr

    def for_model(self, model: str) -> "Sizes":
        """The sizes a model's run uses: a model without a learned table does not depend on the
        table's rate, so it runs (and is stored) at the default one, shared by every rate."""
        if MODELS[model].get("retention") == "learned":
            return self
        return dataclasses.replace(self, retention_lr=DEFAULT_SIZES.retention_lr)

    def folder_suffix(self) -> str:
        tags = {"layers": "L", "n_mem": "M", "d_model": "D", "retention_lr": "rlr", "lr": "lr", "warmup": "wu"}
        return "".join(f"_{tags[f.name]}{getattr(self, f.name)!r}" for f in dataclasses.fields(self)
                       if getattr(self, f.name) != getattr(DEFAULT_SIZES, f.name))

    def describe(self) -> str:
        return (f"{self.layers} block{'s' if self.layers > 1 else ''}, d_model {self.d_model}, "
                f"{self.n_mem} memory tokens, lr {self.lr:g} after {self.warmup} warm-up steps, "
                f"retention lr {self.retention_lr:g}")


DEFAULT_SIZES = Sizes()
SIZE_FIELDS = tuple(f.name for f in dataclasses.fields(Sizes))   # also results.csv's size columns and the options' names
N_MEM, RETENTION_LR = DEFAULT_SIZES.n_mem, DEFAULT_SIZES.retention_lr


def base_config(T: int, K: int, model: str, seed: int, steps: int, task: str = "assoc",
                sizes: Sizes = DEFAULT_SIZES):
    from astro_rmaat.config import from_dict, to_dict
    from rmaat_model.train_config import TrainConfig

    d = to_dict(TrainConfig())
    d.update(task=task, max_len=T * SEGMENT_LEN, batch_size=32, steps=steps,
             eval_every=max(1, steps // 6), eval_batches=4, eval_batch_size=256, seed=seed,
             device="cpu", method="amrb")
    if task == "assoc":
        d["assoc_pairs"] = K
    else:   # recall over 2..T segments: the answer in segment 1, its age = segments - 1
        d["recall_min_segments"] = 2
    d["model"].update(arch="rmaat", d_model=sizes.d_model, n_heads=2, n_layers=sizes.layers,
                      d_ff=2 * sizes.d_model, dropout=0.0, segment_len=SEGMENT_LEN, n_mem=sizes.n_mem,
                      retention_file=None)
    d["model"].update(MODELS[model])
    d["optim"].update(lr=sizes.lr, retention_lr=sizes.retention_lr, warmup_steps=sizes.warmup)
    return from_dict(TrainConfig, d)


def job_config(job: dict):
    """The TrainConfig of one job of ``jobs_for``."""
    return base_config(job["T"], job["K"], job["model"], job["seed"], job["steps"], job["task"], Sizes(**job["sizes"]))


def run_one(job: dict) -> dict:
    """Train (or reuse) one run and measure its accuracy by age on the test split; a run started
    here is stamped with ``job["code"]``, the fingerprint of the code that trains it."""
    import torch

    torch.set_num_threads(1)
    from astro_rmaat import runs
    from rmaat_model.checkpoint import load_weights
    from rmaat_model.evaluate import accuracy_by_age, predictions
    from rmaat_model.train import RESULTS_FILE, train
    from rmaat_model.train_config import load_data

    cfg = job_config(job)
    out = Path(job["dir"])
    t0 = time.perf_counter()
    if not runs.is_finished(out):
        # a fresh start replaces any stamp left beside a deleted folder; a resumed run keeps the
        # stamp of the code that started it (``main`` has checked it, or was told to reuse it)
        if job.get("code") and not (out / runs.CONFIG_FILE).is_file():
            _run_reuse.stamp(out, job["code"])
        train(cfg, out, progress=False)
        wall = time.perf_counter() - t0
    else:   # reused: the run's own elapsed time at its last evaluation, as it recorded it (or none)
        elapsed = json.loads((out / "meta.json").read_text()).get("eval_elapsed_s")
        wall = elapsed[-1] if elapsed else None
    res = json.loads((out / RESULTS_FILE).read_text())
    test = load_data(cfg, ("test",))[1]["test"]
    model = load_weights(out, device="cpu")
    rows = []
    samplings = [None]
    if cfg.model.arch == "elastic":   # the other sampling set at test time, no retraining
        samplings.append("recent" if cfg.model.elastic_sampling == "uniform" else "uniform")
    for sampling in samplings:
        if sampling is not None:
            model.set_sampling(sampling)
        predicted = predictions(model, test)
        by_age = accuracy_by_age(model, test, predicted=predicted)
        acc = sum(v["acc"] * v["n"] for v in by_age.values()) / sum(v["n"] for v in by_age.values())
        row = {"task": job["task"], "T": job["T"], "K": job["K"], "model": job["model"] + ("" if sampling is None else f"@{sampling}"),
               "seed": job["seed"], "steps": res["steps_done"], **job["sizes"], "test_acc": round(acc, 4),
               "best_val_acc": round(res["val_acc"], 4), "train_wall_s": None if wall is None else round(wall, 1),
               "trained_on": _run_reuse.trained_on(out)}
        if job["task"] == "assoc":   # the answers against the values present, and the key's use (module doc)
            row.update(answer_columns(test.tokens.numpy(), predicted.numpy()))
            row.update(every_query_columns(model, test.tokens.numpy(), SEGMENT_LEN))
        row.update({f"age_{a}": round(v["acc"], 4) for a, v in by_age.items()})
        if cfg.model.effective_retention == "learned":   # the evaluated table: RF(t, T) at hand-off t = 1 .. T-1
            rf = model.rf_table[job["T"] - 1, :job["T"] - 1].tolist()
            row.update({f"rf_{t}": round(v, 4) for t, v in enumerate(rf, 1)})
        rows.append(row)
    return {"rows": rows}


def setting_name(task: str, T: int, K: int, steps: int, sizes: Sizes = DEFAULT_SIZES) -> str:
    """A run folder's setting: the steps always, and the sizes that differ from the defaults
    (``Sizes``), so that a run of another budget or size is never reused as this one."""
    return f"{task}_T{T}_K{K}_steps{steps}" + sizes.folder_suffix()


def make_job(T: int, K: int, model: str, seed: int, steps: int, out: Path, task: str, sizes: Sizes) -> dict:
    """One run: its setting, model, seed and folder (``sizes``: the model's own, ``Sizes.for_model``)."""
    return {"T": T, "K": K, "model": model, "seed": seed, "steps": steps, "task": task,
            "sizes": dataclasses.asdict(sizes),
            "dir": str(out / "runs" / setting_name(task, T, K, steps, sizes) / model / f"seed{seed}")}


def jobs_for(grid, models, steps: int, out: Path, seeds5: int, seeds3: int, task: str = "assoc",
             sizes: Sizes = DEFAULT_SIZES) -> list[dict]:
    jobs = []
    for T, K in grid:
        for model in models:
            n = seeds5 if model in FIVE_SEEDS else seeds3
            jobs += [make_job(T, K, model, seed, steps, out, task, sizes.for_model(model)) for seed in range(n)]
    return jobs


def known_models() -> list[str]:
    """Every model name a results row can carry, in table order (the elastic runs' test-time
    sampling swaps too)."""
    return list(MODELS) + [f"{x}@{s}" for x in ("elastic", "elastic-recent") for s in ("uniform", "recent")]


def earlier_jobs(out: Path, task: str, steps: int, sizes: Sizes) -> list[dict]:
    """``--merge``: the jobs of the runs that ``out``'s results.csv lists (none without the file),
    one per run folder (an elastic run's rows for both samplings are one run). ValueError names
    the first row that does not name a finished run of this benchmark on ``task`` at ``steps``
    and ``sizes`` (the table pools the runs of a setting and model, and states one budget)."""
    from astro_rmaat import runs

    path = out / "results.csv"
    if not path.is_file():
        return []
    try:
        rows = read_results(path)
    except (ValueError, TypeError, csv.Error) as e:
        raise ValueError(f"{path} is not a results.csv this benchmark wrote ({e})") from None
    jobs: dict[str, dict] = {}
    for n, r in enumerate(rows, 2):   # line 1 is the header
        where = f"{path} line {n}"
        try:
            row_task, T, K, seed, row_steps = r["task"], int(r["T"]), int(r["K"]), int(r["seed"]), int(r["steps"])
            model = r["model"].split("@")[0]
            # a row written before a size was an option ran at its default
            row_sizes = Sizes(**{k: type(getattr(DEFAULT_SIZES, k))(r[k]) for k in SIZE_FIELDS if k in r})
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: expected task, T, K, model, seed and steps ({e!r} missing or malformed)") from None
        if model not in MODELS:
            raise ValueError(f"{where}: model {r['model']!r}; expected one of {', '.join(MODELS)}")
        own = sizes.for_model(model)
        if (row_task, row_steps, row_sizes) != (task, steps, own):
            raise ValueError(f"{where}: {r['model']} seed {seed} ran on {row_task} for {row_steps} steps at "
                             f"{row_sizes.describe()}; expected this invocation's {task}, {steps} steps and "
                             f"{own.describe()}")
        job = make_job(T, K, model, seed, steps, out, task, own)
        if not runs.is_finished(Path(job["dir"])):
            raise ValueError(f"{where} ({model} seed {seed}, T={T}, K={K}): no finished run at {job['dir']}; "
                             f"expected the run the row was measured on (or remove the row)")
        jobs.setdefault(job["dir"], job)
    return list(jobs.values())
