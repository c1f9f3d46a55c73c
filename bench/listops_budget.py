"""ListOps at an equal wall-clock budget: RMAAT vs RMT vs Transformer.

    PYTHONPATH=$PWD python bench/listops_budget.py --minutes 3 [--data runs/listops] [--out runs/bench]

Generates ListOps with the official algorithm and length range (500 < length < 2000,
sequences padded to 2000) unless ``--data`` already holds ``basic_{train,val,test}.tsv``,
then trains each model for the same wall-clock budget (``TrainConfig.max_minutes``) at
equal width and depth. Each run's cosine schedule is sized to the steps the model can take
in the budget, from the median time of a few probe steps (not counted in the budget). Prints
validation and test accuracy of each run's best-on-validation checkpoint, the steps it
managed, and the majority-class baseline. Benchmarks are not tests: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from astro_rmaat.cli_args import ArgumentParser, count_int, positive_int, run_main
from astro_rmaat.config import from_dict, to_dict
from rmaat_model.data.generate import listops
from rmaat_model.train import RESULTS_FILE, train
from rmaat_model.train_config import TrainConfig

MODELS = {  # arch -> (method, retention)
    "rmaat": ("amrb", "ltp"),
    "rmt": ("bptt", "none"),
    "elastic": ("amrb", "none"),
    "transformer": ("bptt", "none"),
}


def ensure_data(data: Path, n_train: int, n_val: int, n_test: int, seed: int, workers: int) -> Path:
    if all((data / listops.SPLIT_FILES[s]).is_file() for s in ("train", "val", "test")):
        return data
    print(f"generating ListOps ({n_train}/{n_val}/{n_test}, official settings) into {data}",
          file=sys.stderr)
    listops.generate_files(data, n_train=n_train, n_val=n_val, n_test=n_test, seed=seed,
                           workers=workers, progress=True)
    return data


def make_config(arch: str, args, steps: int, minutes: float | None) -> TrainConfig:
    method, retention = MODELS[arch]
    d = to_dict(TrainConfig())
    d.update(task="listops", data_dir=str(args.data), max_len=args.max_len,
             batch_size=args.batch_size, steps=steps, eval_every=max(1, steps // args.evals),
             eval_batches=args.eval_batches, seed=args.seed, method=method,
             max_minutes=minutes, device=args.device)
    d["model"].update(arch=arch, d_model=args.d_model, n_heads=args.n_heads,
                      n_layers=args.n_layers, d_ff=2 * args.d_model, dropout=0.1,
                      segment_len=args.segment_len, n_mem=args.n_mem,
                      retention=args.retention_mode if arch == "rmaat" else retention,
                      retention_file=args.retention)
    d["optim"].update(lr=args.lr, warmup_steps=max(1, steps // 10))
    return from_dict(TrainConfig, d)


def seconds_per_step(arch: str, args, spec, train_ds) -> float:
    """Median wall time of one optimiser step (forward + backward + AdamW) on real batches."""
    import statistics

    import torch

    from rmaat_model.amrb import forward_backward
    from rmaat_model.data.base import collate
    from rmaat_model.model import build_model
    from rmaat_model.optim import make_optimizer
    from rmaat_model.train_config import model_config_for
    cfg = make_config(arch, args, steps=1000, minutes=None)
    torch.manual_seed(args.seed)
    model = build_model(model_config_for(cfg, spec)).to(args.torch_device)
    opt, _ = make_optimizer(model, cfg)
    times = []
    for i in range(args.probe_steps + 1):
        idx = range(i * args.batch_size, (i + 1) * args.batch_size)
        batch = collate([train_ds[j % len(train_ds)] for j in idx], spec.pad_id)
        t0 = time.perf_counter()
        forward_backward(model, batch["tokens"].to(args.torch_device),
                         batch["label"].to(args.torch_device), method=cfg.method)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if args.torch_device.type == "cuda":
            torch.cuda.synchronize()
        if i:                                   # the first step warms up
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, required=True, help="wall-clock budget per model")
    ap.add_argument("--data", type=Path, default=Path("runs/listops"))
    ap.add_argument("--out", type=Path, default=Path("runs/bench_listops"))
    ap.add_argument("--models", default="rmaat,rmt,transformer")
    ap.add_argument("--n-train", type=positive_int, default=20_000)
    ap.add_argument("--n-val", type=positive_int, default=1_000)
    ap.add_argument("--n-test", type=positive_int, default=1_000)
    ap.add_argument("--gen-workers", type=positive_int, default=2)
    ap.add_argument("--max-len", type=positive_int, default=2000)
    ap.add_argument("--batch-size", type=positive_int, default=16)
    ap.add_argument("--d-model", type=positive_int, default=64)
    ap.add_argument("--n-heads", type=positive_int, default=4)
    ap.add_argument("--n-layers", type=positive_int, default=2)
    ap.add_argument("--segment-len", type=positive_int, default=250)
    ap.add_argument("--n-mem", type=positive_int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--retention", default=None,
                    help="retention.json for RMAAT (default: the shipped astro_rmaat/data/retention/default.json)")
    ap.add_argument("--retention-mode", default="ltp", choices=["ltp", "stream", "learned", "none"])
    ap.add_argument("--evals", type=positive_int, default=8, help="evaluations per run")
    ap.add_argument("--eval-batches", type=positive_int, default=16)
    ap.add_argument("--probe-steps", type=positive_int, default=4)
    ap.add_argument("--seed", type=count_int, default=0)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)

    ensure_data(args.data, args.n_train, args.n_val, args.n_test, args.seed, args.gen_workers)
    from rmaat_model.data.base import load_split
    from rmaat_model.distributed import pick_device
    args.torch_device = pick_device(args.device)
    spec, train_ds = load_split("listops", args.data, "train", args.max_len)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    root = args.out / stamp
    rows = []
    for arch in args.models.split(","):
        sps = seconds_per_step(arch, args, spec, train_ds)
        # evaluations and data loading share the budget: size the schedule to ~85 % of it
        steps = max(2, int(0.85 * args.minutes * 60 / sps))
        print(f"{arch}: ~{sps:.2f} s/step -> schedule of {steps} steps in {args.minutes} min",
              file=sys.stderr)
        run = train(make_config(arch, args, steps, args.minutes), root / arch)
        res = json.loads((run / RESULTS_FILE).read_text())
        meta = json.loads((run / "meta.json").read_text())
        rows.append((arch, res, meta, sps))

    maj = rows[0][1]["majority"]
    print(f"\nListOps, {args.minutes} min per model, length <= {args.max_len}, "
          f"d_model {args.d_model}, {args.n_layers} layers, batch {args.batch_size}, "
          f"train {args.n_train}; runs in {root}")
    print(f"RMAAT retention: {args.retention_mode} from {args.retention or 'the shipped default'}")
    print("| model | method | s/step (probe) | steps | best step | val acc % | test acc % |")
    print("|---|---|---|---|---|---|---|")
    for arch, res, meta, sps in rows:
        print(f"| {arch} | {MODELS[arch][0]} | {sps:.2f} | {res['steps_done']} | {res['best_step']} | "
              f"{100 * res['val_acc']:.1f} | {100 * res['test_acc']:.1f} |")
    print(f"| majority class ({maj['class']}) | - | - | - | - | {100 * maj['val_acc']:.1f} | "
          f"{100 * maj['test_acc']:.1f} |")
    return 0


if __name__ == "__main__":
    run_main(main)
