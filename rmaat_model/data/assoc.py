"""``assoc``: seeded key -> value recall whose accuracy can be read by the age of the fact.

Each example is ``T`` segments of ``N`` tokens (``max_len = T * N``). ``K`` key -> value
*facts* sit at fact slots of segments 1 .. T-1 (1-based; the first ``FACT_WINDOW`` = 8
positions of each segment, as ``recall`` keeps its answer in a window), drawn uniformly
without replacement, so a fact is equally likely in any of those segments. A fact is one token that
names its key and its value (id ``FACT_OFFSET + key * N_VALUES + value``), so what is measured
is how long the memory keeps a fact, not how a block binds two neighbouring tokens (a
two-token key, value layout left every model of the benchmark's size at the plateau of
guessing among the values present, 31.6 to 41.2 % at K = 4, ``key_blind_accuracy``, within a
CPU budget). Keys are distinct within an
example; values may repeat. The last segment holds distractors and, as its last two tokens,
the query marker and a *key token* naming one of the K keys; the label is that key's value.
Every other position holds a distractor token from a separate alphabet.

The *age* of an example is the number of segments between the queried fact and the query:
``age = T - s`` for a fact in segment ``s`` (1-based), so ages run 1 .. T-1, uniformly. An
accuracy-by-age curve is a model's forgetting curve. Unlike ``recall`` (the fact always in
segment 1, where a falling retention schedule writes hardest), ``assoc`` puts facts
everywhere, and with K > 1 the memory must hold several facts at once (the multi-query
associative recall family of tasks, Arora et al. 2023, with one query per sequence).

Layout of the vocabulary (``VOCAB_SIZE`` tokens)::

    0                         padding (never produced: the task has fixed length)
    1                         query marker
    2 .. 2+N_KEYS-1           key tokens (what the query asks for)
    then N_KEYS * N_VALUES    facts: key k has value v (label = v)
    then N_DISTRACTORS        distractors

Every split comes from its own fixed seed: the same (split, T, N, K) gives the same arrays.
The generator is NumPy only; ``AssocDataset`` wraps its arrays for torch.
"""

from __future__ import annotations

import numpy as np

from astro_rmaat.errors import ConfigError

NAME = "assoc"
QUERY_ID = 1
N_KEYS = 16
N_VALUES = 8                     # label alphabet: chance accuracy = 1/8
N_DISTRACTORS = 16
KEY_OFFSET = 2
FACT_OFFSET = KEY_OFFSET + N_KEYS
DISTRACTOR_OFFSET = FACT_OFFSET + N_KEYS * N_VALUES
VOCAB_SIZE = DISTRACTOR_OFFSET + N_DISTRACTORS
N_CLASSES = N_VALUES
FACT_WINDOW = 8                  # facts sit among the first FACT_WINDOW positions of a segment
DEFAULT_SEGMENT_LEN = 16
DEFAULT_PAIRS = 4
DEFAULT_MAX_LEN = 4 * DEFAULT_SEGMENT_LEN
SPLIT_SIZES = {"train": 8192, "val": 1024, "test": 2048}
SPLIT_SEEDS = {"train": 21, "val": 22, "test": 23}


def check_layout(max_len: int, segment_len: int, pairs: int) -> int:
    """T = max_len / segment_len after checking that the layout can hold the task."""
    for name, value in (("max_len", max_len), ("segment_len", segment_len), ("pairs", pairs)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"assoc {name} = {value!r}: expected a positive integer")
    if segment_len < 2:
        raise ConfigError(f"assoc segment_len = {segment_len}: expected at least 2 (the query "
                          "marker and its key)")
    if max_len % segment_len:
        raise ConfigError(f"assoc max_len = {max_len} is not a multiple of segment_len = {segment_len}: "
                          "expected max_len = T * segment_len")
    T = max_len // segment_len
    if T < 2:
        raise ConfigError(f"assoc max_len = {max_len} with segment_len = {segment_len} gives T = {T} "
                          "segment(s): expected T >= 2 (facts before the query's segment)")
    per_seg = min(FACT_WINDOW, segment_len)
    slots = (T - 1) * per_seg
    if pairs > slots:
        raise ConfigError(f"assoc pairs = {pairs}: the {T - 1} segment(s) before the query hold at most "
                          f"{slots} facts ({per_seg} per segment); expected pairs <= {slots}")
    if pairs > N_KEYS:
        raise ConfigError(f"assoc pairs = {pairs}: keys are distinct within an example and there are "
                          f"{N_KEYS}; expected pairs <= {N_KEYS}")
    return T


def generate(n: int, max_len: int, segment_len: int, pairs: int, seed: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` examples: tokens (n, max_len) int64, labels (n,), ages (n,) in 1 .. T-1."""
    T = check_layout(max_len, segment_len, pairs)
    rng = np.random.default_rng(seed)
    per_seg = min(FACT_WINDOW, segment_len)
    n_slots = (T - 1) * per_seg
    tokens = rng.integers(DISTRACTOR_OFFSET, VOCAB_SIZE, size=(n, max_len), dtype=np.int64)
    # K distinct positions and K distinct keys per example (argsort of uniforms = a permutation)
    pos = np.argsort(rng.random((n, n_slots)), axis=1)[:, :pairs]            # (n, K)
    keys = np.argsort(rng.random((n, N_KEYS)), axis=1)[:, :pairs]            # (n, K)
    values = rng.integers(0, N_VALUES, size=(n, pairs))                       # (n, K)
    rows = np.arange(n)[:, None]
    seg = pos // per_seg                                                      # 0-based segment
    pos = seg * segment_len + pos % per_seg
    tokens[rows, pos] = FACT_OFFSET + keys * N_VALUES + values
    which = rng.integers(0, pairs, size=n)                                    # the queried fact
    idx = np.arange(n)
    tokens[:, -2] = QUERY_ID
    tokens[:, -1] = KEY_OFFSET + keys[idx, which]
    labels = values[idx, which].astype(np.int64)
    ages = (T - 1 - seg[idx, which]).astype(np.int64)                         # 1 .. T-1
    return tokens, labels, ages


def answer_from_tokens(tokens: np.ndarray) -> int:
    """The label of one example read back from its tokens alone (the task's definition)."""
    key = int(tokens[-1]) - KEY_OFFSET
    facts = tokens[:-2][(tokens[:-2] >= FACT_OFFSET) & (tokens[:-2] < DISTRACTOR_OFFSET)] - FACT_OFFSET
    hits = facts[facts // N_VALUES == key]
    if len(hits) != 1 or tokens[-2] != QUERY_ID:
        raise ValueError("not an assoc example: the queried key must have exactly one fact")
    return int(hits[0] % N_VALUES)


def values_present(tokens: np.ndarray) -> np.ndarray:
    """(n, N_VALUES) int: how many of each example's facts carry each value (its keys ignored)."""
    tokens = np.asarray(tokens)
    is_fact = (tokens >= FACT_OFFSET) & (tokens < DISTRACTOR_OFFSET)
    rows = np.nonzero(is_fact)[0]
    value = (tokens[is_fact] - FACT_OFFSET) % N_VALUES
    counts = np.zeros((tokens.shape[0], N_VALUES), dtype=np.int64)
    np.add.at(counts, (rows, value), 1)
    return counts


def key_blind_score(tokens: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """(n,) what each answer scores when the queried key is ignored: the share of the example's
    facts that carry the answered value. The queried fact is one of the K uniformly, so an
    answer that depends on the example's values but not on the key is right with exactly this
    probability: a model's accuracy exceeds the mean of its answers' scores, beyond sampling
    error, only if its answers use the key."""
    counts = values_present(tokens)
    answers = np.asarray(answers)
    return counts[np.arange(len(answers)), answers] / counts.sum(axis=1)


def fact_slots(tokens: np.ndarray, segment_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Where each example's K facts sit: ``(positions (n, K), ages (n, K))``, in the order written
    (j = 0 the oldest), ages in segments between the fact and the query. A ``segment_len`` other
    than the examples' is refused where some fact falls outside the fact window of the segments
    it implies (a longer one does on any but the smallest sets of examples); a shorter one that
    divides the true one and is at least ``FACT_WINDOW`` leaves every fact in a window, and the
    tokens cannot tell it."""
    tokens = np.asarray(tokens)
    n, L = tokens.shape
    is_fact = (tokens >= FACT_OFFSET) & (tokens < DISTRACTOR_OFFSET)
    counts = is_fact.sum(axis=1)
    if not n or counts.min() == 0 or (counts != counts[0]).any() or (tokens[:, -2] != QUERY_ID).any():
        raise ValueError("not assoc examples of one K: every example needs the same number of facts, "
                         "and a query")
    where = np.nonzero(is_fact)[1].reshape(n, int(counts[0]))               # (n, K) positions, in order
    if (L % segment_len or where.max() >= L - segment_len
            or (where % segment_len).max() >= min(FACT_WINDOW, segment_len)):
        raise ValueError(f"segment_len = {segment_len} does not fit these examples of {L} tokens: expected "
                         f"L = T * segment_len with every fact before the query's segment, among the first "
                         f"{FACT_WINDOW} positions of its own")
    return where, (L // segment_len - 1 - where // segment_len).astype(np.int64)


def every_query(tokens: np.ndarray, segment_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each example asked about each of its K facts in turn: ``(tokens (n, K, L), labels (n, K),
    ages (n, K))``, where ``tokens[i, j]`` is example i with its query's key token naming its
    j-th fact (in the order written: j = 0 the oldest, ``fact_slots``), ``labels[i, j]`` that
    fact's value and ``ages[i, j]`` its age. One of the K is the example as generated.

    A model's answers to the K questions of an example differ only through the key: a memory
    that ignores the key gives one answer to all K (see ``key_blind_score``)."""
    tokens = np.asarray(tokens)
    where, ages = fact_slots(tokens, segment_len)
    facts = np.take_along_axis(tokens, where, axis=1) - FACT_OFFSET
    asked = np.repeat(tokens[:, None, :], where.shape[1], axis=1)           # (n, K, L)
    asked[:, :, -1] = KEY_OFFSET + facts // N_VALUES
    return asked, facts % N_VALUES, ages


def key_blind_accuracy(tokens: np.ndarray) -> dict[str, float]:
    """What a memory of the facts' values without their keys can score on these examples.

    The queried fact is one of the K uniformly, so given the values present (with their
    multiplicities) a value v is the answer with probability count(v) / K; the best such a
    memory can do is to answer the most frequent value, scoring max count / K per example
    (``"best"``), and one that answers any value present, uniformly, scores 1 / (distinct values)
    (``"uniform"``). Above ``"best"`` a model must know which key holds which value. Means over
    the examples. (K = 4 over 8 values: 0.412 and 0.316 in expectation; K = 1: 1 and 1.)"""
    counts = values_present(tokens)
    k = counts.sum(axis=1)
    if np.any(k == 0):
        raise ValueError("not assoc examples: every example needs at least one fact")
    return {"best": float(np.mean(counts.max(axis=1) / k)),
            "uniform": float(np.mean(1.0 / (counts > 0).sum(axis=1)))}


def task_spec(max_len: int):
    from rmaat_model.data.base import PAD_ID, TaskSpec

    return TaskSpec(name=NAME, vocab_size=VOCAB_SIZE, n_classes=N_CLASSES, max_len=max_len,
                    pad_id=PAD_ID, pair=False)


def load_split(data_dir, split: str, max_len: int | None = None, *,
               segment_len: int = DEFAULT_SEGMENT_LEN, pairs: int = DEFAULT_PAIRS):
    """(TaskSpec, AssocDataset) of ``split``; ``data_dir`` is ignored (nothing to read)."""
    import torch

    from rmaat_model.data.base import check_fits_memory, check_max_len, check_split
    from rmaat_model.data.synthetic import RecallDataset

    check_split(split)
    L = check_max_len(max_len, DEFAULT_MAX_LEN)
    check_fits_memory(NAME, sum(SPLIT_SIZES.values()), L)
    tokens, labels, ages = generate(SPLIT_SIZES[split], L, segment_len, pairs, SPLIT_SEEDS[split])
    dataset = RecallDataset(torch.from_numpy(tokens), torch.from_numpy(labels))
    dataset.ages = torch.from_numpy(ages)      # (n,) segments between fact and query
    return task_spec(L), dataset
