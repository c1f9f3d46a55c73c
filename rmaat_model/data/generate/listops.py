"""ListOps (Nangia & Bowman 2018, LRA settings): the generator of the official files, and the
evaluator that recomputes a label. NumPy only: ``rmaat generate listops`` imports no torch.

The generator follows the official LRA algorithm. A node at depth ``d < max_depth`` is a
value 0..9 with probability 0.75, otherwise an operator (``[MIN``, ``[MAX``, ``[MED``,
``[SM``) with ``randint(2, max_args)`` children one level deeper; at ``max_depth`` it is
always a value. The root sits at depth 1. A tree's length counts every operator token, its
closing ``]`` and every value, not the parentheses, so it equals the number of tokens the
official tokeniser produces. Trees with ``min_length < length < max_length`` (500, 2000)
are kept, de-duplicated, until the train/val/test splits (96K/2K/2K) are full.

Rendering is the official one: the operator and its children are folded into nested
binary pairs, each pair wrapped in ``( ... )``::

    [MAX 3 [MIN 4 7 ] 0 ]  ->  ( ( ( ( [MAX 3 ) ( ( ( [MIN 4 ) 7 ) ] ) ) 0 ) ] )

Files: ``basic_{train,val,test}.tsv``, tab separated, header ``Source\\tTarget``; the torch
Dataset that reads them is rmaat_model.data.listops.

Determinism: trees are drawn in fixed-size chunks, chunk ``k`` from its own stream seeded by
``SeedSequence([seed, k])``; chunks are merged in order, so the output depends on the seed
only, never on the number of worker processes.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from astro_rmaat.config import require_seed
from astro_rmaat.errors import ConfigError, DataError
from astro_rmaat.runs import atomic_path
from astro_rmaat.workers import check_local_workers
from rmaat_model.data.generate import worker_pool

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
VALUE_PROB = 0.75   # probability that a node shallower than max_depth is a value (official)
HEADER = ("Source", "Target")
SPLIT_FILES = {"train": "basic_train.tsv", "val": "basic_val.tsv", "test": "basic_test.tsv"}


@dataclass(frozen=True)
class ListOpsSettings:
    max_depth: int = 10     # deepest level of the tree (root = 1); official 10
    max_args: int = 10      # most children of an operator (fewest is 2); official 10
    min_length: int = 500   # keep trees strictly longer than this (tokens); official 500
    max_length: int = 2000  # keep trees strictly shorter than this (tokens); official 2000

    def __post_init__(self) -> None:
        if self.max_depth < 2:
            raise ConfigError(f"max_depth = {self.max_depth!r}: expected an integer >= 2")
        if self.max_args < 2:
            raise ConfigError(f"max_args = {self.max_args!r}: expected an integer >= 2")
        if not 0 <= self.min_length < self.max_length - 1:
            raise ConfigError(f"min_length = {self.min_length!r}, max_length = {self.max_length!r}:"
                              " expected 0 <= min_length < max_length - 1 (tokens)")


# --------------------------------------------------------------------------- operators
def apply_op(op: str, args: list[int]) -> int:
    """The value of ``op`` over ``args`` (MED: int of the numpy median; SM: sum mod 10)."""
    if op == "[MIN":
        return min(args)
    if op == "[MAX":
        return max(args)
    if op == "[MED":
        return int(np.median(args))
    if op == "[SM":
        return sum(args) % 10
    raise DataError(f"unknown ListOps operator {op!r}; expected one of {', '.join(OPERATORS)}")


# --------------------------------------------------------------------------- generator
def generate_tree(rng: random.Random, settings: ListOpsSettings = ListOpsSettings(),
                  depth: int = 1) -> tuple[str, int, int]:
    """One random tree: ``(source text, value, length)``; recursion mirrors the tree."""
    if depth >= settings.max_depth or rng.random() >= 1.0 - VALUE_PROB:
        value = rng.randrange(10)
        return str(value), value, 1
    n_args = rng.randint(2, settings.max_args)
    texts, values, length = [], [], 2  # the operator and its closing bracket
    for _ in range(n_args):
        text, value, sub_length = generate_tree(rng, settings, depth + 1)
        texts.append(text)
        values.append(value)
        length += sub_length
    op = rng.choice(OPERATORS)
    parts = ["( " * (n_args + 1), op, " ", texts[0], " )"]
    for text in texts[1:]:
        parts += [" ", text, " )"]
    parts.append(" ] )")
    return "".join(parts), apply_op(op, values), length


def chunk_rng(seed: int, chunk: int) -> random.Random:
    state = np.random.SeedSequence([int(seed), int(chunk)]).generate_state(4)
    return random.Random(int.from_bytes(state.tobytes(), "little"))


def generate_chunk(args: tuple[int, int, int, ListOpsSettings]) -> list[tuple[str, int, int]]:
    """``size`` accepted trees of chunk ``chunk`` (its own seeded stream)."""
    seed, chunk, size, settings = args
    rng = chunk_rng(seed, chunk)
    out = []
    while len(out) < size:
        text, value, length = generate_tree(rng, settings)
        if settings.min_length < length < settings.max_length:
            out.append((text, value, length))
    return out


def iter_trees(n: int, seed: int = 0, settings: ListOpsSettings = ListOpsSettings(), *,
               workers: int = 1, chunk_size: int = 250) -> Iterator[tuple[str, int, int]]:
    """Yield ``n`` distinct trees ``(source, label, length)``, identical for any ``workers``.

    Only a 16-byte digest of each source is kept for de-duplication, so full-size
    generation streams to disk in little memory.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"n = {n!r}: expected a non-negative number of samples")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers = {workers!r}: expected a positive number of processes")
    seen: set[bytes] = set()
    done, next_chunk = 0, 0
    pool = worker_pool(workers) if workers > 1 else None
    try:
        while done < n:
            n_chunks = math.ceil((n - done) / chunk_size)
            jobs = [(seed, next_chunk + k, chunk_size, settings) for k in range(n_chunks)]
            next_chunk += n_chunks
            results = pool.imap(generate_chunk, jobs) if pool else map(generate_chunk, jobs)
            for trees in results:
                for tree in trees:
                    key = hashlib.blake2b(tree[0].encode(), digest_size=16).digest()
                    if done < n and key not in seen:
                        seen.add(key)
                        done += 1
                        yield tree
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()


def generate(n: int, seed: int = 0, settings: ListOpsSettings = ListOpsSettings(), *,
             workers: int = 1, chunk_size: int = 250) -> list[tuple[str, int, int]]:
    """``n`` distinct trees ``(source, label, length)`` as a list (see iter_trees)."""
    return list(iter_trees(n, seed, settings, workers=workers, chunk_size=chunk_size))



def check_room(out_dir: str | Path, n_train: int, n_val: int, n_test: int,
               settings: ListOpsSettings = ListOpsSettings()) -> None:
    """Refuse sizes whose files cannot fit on ``out_dir``'s file system, before anything is
    written or generated. A lower bound: every kept tree has more than ``min_length`` tokens,
    each at least one character and a separator, and its row a tab, a label and a newline."""
    from astro_rmaat import resources

    total = n_train + n_val + n_test
    need = total * (2 * (settings.min_length + 1) + 2)
    room = resources.free_space(out_dir)
    if room is not None and need > room[1]:
        where, free, _ = room
        raise ConfigError(f"n_train = {n_train}, n_val = {n_val}, n_test = {n_test}: {total:,} trees of more than "
                          f"{settings.min_length} tokens take at least {need / 1e9:,.1f} GB, more than the "
                          f"{free / 1e9:,.1f} GB free at {str(where)!r}; expected fewer samples")


def generate_files(out_dir: str | Path, *, n_train: int = 96_000, n_val: int = 2_000,
                   n_test: int = 2_000, seed: int = 0,
                   settings: ListOpsSettings = ListOpsSettings(), workers: int = 1,
                   progress: bool = False) -> dict[str, Path]:
    """Generate the three splits into ``out_dir/basic_{train,val,test}.tsv`` (streamed).

    The first ``n_train`` distinct trees form train, the next ``n_val`` val, then test.
    ``out_dir`` is a run directory (``config.json`` first, ``meta.json`` last): a finished
    generation is never overwritten; an interrupted one with the same settings is redone.
    """
    from astro_rmaat import runs
    for name, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name} = {value!r}: expected a non-negative integer (samples)")
    if n_train + n_val + n_test == 0:
        raise ConfigError("n_train = n_val = n_test = 0: nothing to generate; expected at least "
                          "one sample (e.g. --n-train 2000 --n-val 200 --n-test 200)")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers = {workers!r}: expected a positive number of processes")
    require_seed("seed", seed)
    check_local_workers("workers", workers)
    check_room(out_dir, n_train, n_val, n_test, settings)
    config = {"task": "listops", "n_train": n_train, "n_val": n_val, "n_test": n_test,
              "seed": seed, **dataclasses.asdict(settings)}
    out = runs.prepare_run_dir(out_dir, config)
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    total = sum(sizes.values())
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, desc="listops", unit="tree")
    with runs.Stopwatch() as sw, contextlib.ExitStack() as stack:
        writers = {}
        for split in sizes:
            tmp = stack.enter_context(atomic_path(out / SPLIT_FILES[split]))
            fh = stack.enter_context(open(tmp, "w", newline=""))
            writers[split] = csv.writer(fh, delimiter="\t", lineterminator="\n")
            writers[split].writerow(HEADER)
        order = [split for split, size in sizes.items() for _ in range(size)]
        for split, (source, label, _) in zip(order, iter_trees(total, seed, settings,
                                                                workers=workers)):
            writers[split].writerow((source, label))
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    runs.finish_run(out, runs.make_meta(stage="generate-listops", seed=seed,
                                        wall_time_s=sw.elapsed, workers=workers,
                                        samples_per_s=total / max(sw.elapsed, 1e-9)))
    return {split: out / SPLIT_FILES[split] for split in sizes}


# --------------------------------------------------------------------------- evaluation
def tokenize(source: str) -> list[str]:
    """Official LRA tokenisation: ``]`` its own token, parentheses dropped, split on spaces."""
    return source.replace("]", " ] ").replace("(", " ").replace(")", " ").split()


def evaluate(source: str) -> int:
    """The value of a ListOps expression (either the parenthesised or the bare form)."""
    stack: list[tuple[str, list[int]]] = []
    result: int | None = None
    for tok in tokenize(source):
        if result is not None:
            raise DataError(f"ListOps expression has tokens after its end: {tok!r}")
        if tok in OPERATORS:
            stack.append((tok, []))
        elif tok == END:
            if not stack:
                raise DataError("ListOps expression has an unmatched ']'")
            op, args = stack.pop()
            if not args:
                raise DataError(f"ListOps operator {op} closed without arguments")
            value = apply_op(op, args)
            if stack:
                stack[-1][1].append(value)
            else:
                result = value
        elif len(tok) == 1 and tok.isdigit():
            if stack:
                stack[-1][1].append(int(tok))
            else:
                result = int(tok)
        else:
            raise DataError(f"unknown ListOps token {tok!r}; expected 0-9, "
                            f"{', '.join(OPERATORS)} or ']'")
    if stack or result is None:
        raise DataError("ListOps expression ends before all operators are closed")
    return result

