"""How strongly the memory that reaches the query holds each fact of an assoc example, by the
fact's age: trained runs of ``bench/retention_curve.py`` (or any assoc run of ``rmaat train``).

    PYTHONPATH=$PWD python bench/fact_sensitivity.py RUN_DIR [RUN_DIR ...] [--examples 512]

For each run: the memory state entering the query's segment (after segment T-2) is computed
for the first ``--examples`` test examples, then again with one fact's value replaced by
another (drawn with a fixed seed; the key, the position and every other token unchanged), once
per fact. The relative change ``||m' - m|| / ||m||`` is that fact's weight in the memory the
query reads; it is printed as a mean per band of ages (segments between the fact and the query),
with the mean size of each hand-off's update ``||mem_{t+1} - mem_t||``. A memory that keeps
facts written early better than late ones, whatever the key, shows a weight rising with age.
The model's best checkpoint is evaluated, in eval mode. A benchmark, not a test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from astro_rmaat.cli_args import ArgumentParser

#: seed of the replacement values
SEED = 0


def memory_before_query(model, tokens):
    """(the memory state entering the last segment (B, M, D), [mean ||mem_{t+1} - mem_t|| per
    hand-off t = 0 .. T-2])."""
    plan = model.plan(tokens)
    m, steps = model.initial_memory(plan), []
    for t in range(plan.n_segments - 1):
        new = model.step(plan, t, m)
        steps.append(float((new - m).flatten(1).norm(dim=1).mean()))
        m = new
    return m, steps


def fact_weights(model, tokens: np.ndarray, segment_len: int) -> tuple[dict[int, float], list[float]]:
    """({age: mean relative change of the memory entering the query's segment when a fact of that
    age changes its value}, hand-off update sizes) on assoc ``tokens`` (n, L)."""
    import torch

    from rmaat_model.data import assoc

    pos, ages = assoc.fact_slots(tokens, segment_len)                      # (n, K), in the order written
    n, K = ages.shape
    rng = np.random.default_rng(SEED)
    was_training = model.training
    model.eval()
    out: dict[int, list[float]] = {}
    with torch.inference_mode():
        m0, steps = memory_before_query(model, torch.from_numpy(tokens))
        norm = m0.flatten(1).norm(dim=1)
        for j in range(K):
            changed = tokens.copy()
            fact = changed[np.arange(n), pos[:, j]] - assoc.FACT_OFFSET
            key, value = fact // assoc.N_VALUES, fact % assoc.N_VALUES
            other = (value + rng.integers(1, assoc.N_VALUES, size=n)) % assoc.N_VALUES   # never the same
            changed[np.arange(n), pos[:, j]] = assoc.FACT_OFFSET + key * assoc.N_VALUES + other
            m1, _ = memory_before_query(model, torch.from_numpy(changed))
            rel = ((m1 - m0).flatten(1).norm(dim=1) / norm).numpy()
            for a, r in zip(ages[:, j].tolist(), rel.tolist()):
                out.setdefault(a, []).append(r)
    model.train(was_training)
    return {a: float(np.mean(v)) for a, v in sorted(out.items())}, steps


def bands(T: int) -> list[tuple[int, int]]:
    """The ages 1 .. T-1, one by one up to seven, else in five bands of about equal width."""
    if T - 1 <= 7:
        return [(a, a) for a in range(1, T)]
    edges = np.linspace(1, T, 6).round().astype(int)
    return [(int(lo), int(hi) - 1) for lo, hi in zip(edges[:-1], edges[1:])]


def main(argv=None) -> int:
    ap = ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="finished assoc run directories")
    ap.add_argument("--examples", type=int, default=512, help="test examples (default 512)")
    args = ap.parse_args(argv)
    if args.examples < 1:
        ap.error(f"--examples {args.examples}: expected a positive count")
    import torch

    from astro_rmaat.config import from_dict
    from rmaat_model.checkpoint import load_weights
    from rmaat_model.train_config import TrainConfig, load_data

    torch.set_num_threads(1)
    for run in args.runs:
        cfg_file = run / "config.json"
        if not cfg_file.is_file() or not (run / "best.safetensors").is_file():
            ap.error(f"{run}: expected a finished run directory (config.json, best.safetensors)")
        cfg = from_dict(TrainConfig, json.loads(cfg_file.read_text()))
        if cfg.task != "assoc" or cfg.assoc_pairs < 1:
            ap.error(f"{run}: task {cfg.task!r}; expected an assoc run")
        test = load_data(cfg, ("test",))[1]["test"]
        model = load_weights(run, device="cpu")
        if not model.has_memory or cfg.model.arch == "elastic":
            ap.error(f"{run}: arch {cfg.model.arch!r}; expected a model that hands memory tokens on (rmaat, rmt, rlt)")
        T = cfg.max_len // cfg.model.segment_len
        weights, steps = fact_weights(model, test.tokens[:args.examples].numpy(), cfg.model.segment_len)
        cells = [f"{lo}-{hi}: {100 * np.mean([weights[a] for a in range(lo, hi + 1) if a in weights]):.1f} %"
                 for lo, hi in bands(T)]
        print(f"{run}: the memory's change when one fact's value changes, by the fact's age: {'; '.join(cells)}. "
              f"Hand-off update sizes, t = 0 .. {T - 2}: {' '.join(f'{s:.2f}' for s in steps)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
