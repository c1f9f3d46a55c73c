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

A second line follows what each hand-off does to the trace of a fact written before it. Let
``d_t`` be the change of the memory segment t reads (the fact's trace in it) and ``dx_t`` the
change of the blocks' unscaled memory output of segment t. Per hand-off t = 1 .. T-2, medians
over the (example, fact) pairs written before segment t:

``gain``    ``||dx_t|| / ||d_t||``: how much the blocks enlarge the trace they read;
``cos``     the cosine between ``dx_t`` and ``d_t``: whether they write it back as they read it;
``growth``  ``||d_{t+1}|| / ||d_t||``: what the hand-off makes of the trace;
``size``    the mean ``||m_t||`` of the memory segment t reads (unchanged examples).

Under the integrating reading ``d_{t+1} = (1 - RF) d_t + RF dx_t``, so the growth along ``d_t``
is ``1 - RF + RF gain cos``, above 1 wherever ``gain cos > 1``; unscaled (``none``, RMT, RLT)
``d_{t+1} = dx_t`` and the growth is the gain; under the literal reading ``d_{t+1} = RF dx_t``.
The model's best checkpoint is evaluated, in eval mode. Where several runs share a folder (a
model's seeds in the retention benchmark's layout), a last line per folder gives their means, and
the mean over them of the product of the growths. A benchmark, not a test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from astro_rmaat.cli_args import ArgumentParser, positive_int, run_main

#: seed of the replacement values
SEED = 0


def memory_states(model, tokens):
    """(plan, [the memory state handed into segment t, t = 0 .. T-1]): the model's own state, which
    under the literal reading is the unscaled output (``reads`` scales it)."""
    plan = model.plan(tokens)
    states = [model.initial_memory(plan)]
    for t in range(plan.n_segments - 1):
        states.append(model.step(plan, t, states[-1]))
    return plan, states


def _reading(model) -> str:
    cfg = model.cfg
    if cfg.effective_retention == "none":
        return "none"
    return cfg.retention_reading                                               # literal | integrating


def reads(model, plan, states) -> list:
    """The memory each segment t's blocks read (B, M, D), t = 0 .. T-1."""
    if _reading(model) != "literal":
        return list(states)
    return [s if t == 0 else s * model.retention_scale(plan, t)[:, None, None] for t, s in enumerate(states)]


def block_outputs(model, plan, states) -> list:
    """The blocks' unscaled memory output of segment t (B, M, D), t = 0 .. T-2: the state handed on,
    or, under the integrating reading ``S_{t+1} = S_t + RF (x_t - S_t)``, ``S_t + (S_{t+1} - S_t) / RF``."""
    if _reading(model) != "integrating":
        return list(states[1:])
    return [s + (n - s) / model.retention_scale(plan, t + 1)[:, None, None]
            for t, (s, n) in enumerate(zip(states[:-1], states[1:]))]


def _changed_value(tokens: np.ndarray, pos: np.ndarray, j: int, rng) -> np.ndarray:
    """``tokens`` with fact j of every example given another value (key and position kept)."""
    from rmaat_model.data import assoc

    n = tokens.shape[0]
    changed = tokens.copy()
    fact = changed[np.arange(n), pos[:, j]] - assoc.FACT_OFFSET
    key, value = fact // assoc.N_VALUES, fact % assoc.N_VALUES
    other = (value + rng.integers(1, assoc.N_VALUES, size=n)) % assoc.N_VALUES   # never the same
    changed[np.arange(n), pos[:, j]] = assoc.FACT_OFFSET + key * assoc.N_VALUES + other
    return changed


def fact_sensitivity(model, tokens: np.ndarray, segment_len: int) -> dict:
    """On assoc ``tokens`` (n, L): ``weights`` {age: mean relative change of the memory entering the
    query's segment when a fact of that age changes its value}, ``steps`` [mean hand-off update size,
    t = 0 .. T-2] and ``handoffs`` {t: (gain, cos, growth medians, mean memory size), t = 1 .. T-2}
    (module doc)."""
    import torch

    from rmaat_model.data import assoc

    pos, ages = assoc.fact_slots(tokens, segment_len)                      # (n, K), in the order written
    n, K = ages.shape
    written = pos // segment_len                                           # the segment of each fact
    rng = np.random.default_rng(SEED)
    was_training = model.training
    model.eval()
    weights: dict[int, list[float]] = {}
    per_t: dict[int, list[list[np.ndarray]]] = {}
    with torch.inference_mode():
        plan, s0 = memory_states(model, torch.from_numpy(tokens))
        T = plan.n_segments
        r0, x0 = reads(model, plan, s0), block_outputs(model, plan, s0)
        steps = [float((b - a).flatten(1).norm(dim=1).mean()) for a, b in zip(s0[:-1], s0[1:])]
        norm = s0[-1].flatten(1).norm(dim=1)
        for j in range(K):
            _, s1 = memory_states(model, torch.from_numpy(_changed_value(tokens, pos, j, rng)))
            rel = ((s1[-1] - s0[-1]).flatten(1).norm(dim=1) / norm).numpy()
            for a, r in zip(ages[:, j].tolist(), rel.tolist()):
                weights.setdefault(a, []).append(r)
            r1, x1 = reads(model, plan, s1), block_outputs(model, plan, s1)
            for t in range(1, T - 1):
                d, dn = (r1[t] - r0[t]).flatten(1), (r1[t + 1] - r0[t + 1]).flatten(1)
                dx = (x1[t] - x0[t]).flatten(1)
                size = d.norm(dim=1)
                keep = ((written[:, j] < t) & (size > 0).numpy())              # the trace reaches t
                if not keep.any():
                    continue
                cols = (dx.norm(dim=1) / size, torch.nn.functional.cosine_similarity(dx, d, dim=1),
                        dn.norm(dim=1) / size)
                acc = per_t.setdefault(t, [[], [], []])
                for a, c in zip(acc, cols):
                    a.append(c.numpy()[keep])
    model.train(was_training)
    handoffs = {t: (*(float(np.median(np.concatenate(a))) for a in acc), float(r0[t].flatten(1).norm(dim=1).mean()))
                for t, acc in sorted(per_t.items())}
    return {"weights": {a: float(np.mean(v)) for a, v in sorted(weights.items())}, "steps": steps,
            "handoffs": handoffs}


def bands(T: int) -> list[tuple[int, int]]:
    """The ages 1 .. T-1, one by one up to seven, else in five bands of about equal width."""
    if T - 1 <= 7:
        return [(a, a) for a in range(1, T)]
    edges = np.linspace(1, T, 6).round().astype(int)
    return [(int(lo), int(hi) - 1) for lo, hi in zip(edges[:-1], edges[1:])]


def _band_cells(T: int, means: list[float]) -> str:
    """The weights of ``bands(T)`` (one mean per band) as the output prints them."""
    return "; ".join(f"{lo if lo == hi else f'{lo}-{hi}'}: {100 * w:.1f} %" for (lo, hi), w in zip(bands(T), means))


def _hand_cells(hand: dict) -> list[str]:
    """A hand-off table ({t: (gain, cos, growth, memory size)}) as four columns of t's values."""
    return [" ".join(f"{hand[t][i]:.2f}" for t in sorted(hand)) for i in range(4)]


def main(argv=None) -> int:
    ap = ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="finished assoc run directories")
    ap.add_argument("--examples", type=positive_int, default=512, help="test examples (default 512)")
    args = ap.parse_args(argv)
    import torch

    from astro_rmaat.config import from_dict
    from rmaat_model.checkpoint import load_weights
    from rmaat_model.train_config import TrainConfig, load_data

    torch.set_num_threads(1)
    groups: dict[tuple, list[dict]] = {}
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
        out = fact_sensitivity(model, test.tokens[:args.examples].numpy(), cfg.model.segment_len)
        weights, steps, hand = out["weights"], out["steps"], out["handoffs"]
        band_means = [np.mean([weights[a] for a in range(lo, hi + 1) if a in weights]) for lo, hi in bands(T)]
        print(f"{run}: the memory's change when one fact's value changes, by the fact's age: {_band_cells(T, band_means)}. "
              f"Hand-off update sizes, t = 0 .. {T - 2}: {' '.join(f'{s:.2f}' for s in steps)}")
        if hand:
            cols = _hand_cells(hand)
            print(f"{run}: an earlier fact's trace through hand-off t = {min(hand)} .. {max(hand)} "
                  f"({_reading(model)}): gain {cols[0]}; cos {cols[1]}; growth {cols[2]}; memory size {cols[3]}")
        groups.setdefault((str(run.resolve().parent), T, _reading(model)), []).append({"bands": band_means, "hand": hand})
    for (folder, T, reading), members in groups.items():
        if len(members) > 1:
            print(summary(folder, T, reading, members))
    return 0


def summary(folder: str, T: int, reading: str, members: list[dict]) -> str:
    """One line: the means over the runs of one folder (a model's seeds) of their fact weights by
    band and of their hand-off medians, and the mean over the runs of each run's product of the
    growths, what the hand-offs make of a fact written in the first segment."""
    n = len(members)
    means = [np.mean([m["bands"][i] for m in members]) for i in range(len(bands(T)))]
    line = f"{folder} (mean over {n} runs): fact weight by age {_band_cells(T, means)}"
    ts = sorted(set.intersection(*(set(m["hand"]) for m in members)))
    if ts:
        cols = _hand_cells({t: [np.mean([m["hand"][t][i] for m in members]) for i in range(4)] for t in ts})
        product = np.mean([np.prod([m["hand"][t][2] for t in ts]) for m in members])
        line += (f". Hand-off t = {ts[0]} .. {ts[-1]} ({reading}): gain {cols[0]}; cos {cols[1]}; growth {cols[2]} "
                 f"({product:.2f}x over them); memory size {cols[3]}")
    return line


if __name__ == "__main__":
    run_main(main)
