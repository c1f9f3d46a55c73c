"""``assoc``: labels follow from the tokens, ages cover 1..T-1 evenly, seeded, bad layouts named."""

from __future__ import annotations

import numpy as np
import pytest

from astro_rmaat.errors import ConfigError
from rmaat_model.data import assoc


@pytest.mark.parametrize("T, K", [(2, 4), (4, 4), (8, 1), (8, 16), (16, 4)])
def test_labels_are_recoverable_from_the_tokens_and_ages_cover_every_segment(T, K):
    N = 16
    tokens, labels, ages = assoc.generate(3000, T * N, N, K, seed=5)
    assert tokens.shape == (3000, T * N) and tokens.min() >= 1 and tokens.max() < assoc.VOCAB_SIZE
    assert [assoc.answer_from_tokens(row) for row in tokens[:500]] == labels[:500].tolist()
    facts = (tokens >= assoc.FACT_OFFSET) & (tokens < assoc.DISTRACTOR_OFFSET)
    assert (facts.sum(axis=1) == K).all()                    # K facts before the query ...
    assert not facts[:, -N:].any()                           # ... none in the query's segment
    for row in tokens[:200]:                                 # ... with distinct keys
        f = row[(row >= assoc.FACT_OFFSET) & (row < assoc.DISTRACTOR_OFFSET)] - assoc.FACT_OFFSET
        assert len(set((f // assoc.N_VALUES).tolist())) == K
    # the queried fact lies `age` segments before the query's segment
    for row, age in zip(tokens[:300], ages[:300]):
        f = (row - assoc.FACT_OFFSET) // assoc.N_VALUES
        is_fact = (row >= assoc.FACT_OFFSET) & (row < assoc.DISTRACTOR_OFFSET)
        pos = int(np.flatnonzero(is_fact & (f == row[-1] - assoc.KEY_OFFSET))[0])
        assert (T - 1) - pos // N == age and pos % N < assoc.FACT_WINDOW
    assert sorted(set(ages.tolist())) == list(range(1, T))    # every age occurs ...
    counts = np.bincount(ages, minlength=T)[1:]
    assert counts.min() > 0.7 * counts.mean()                  # ... about equally often
    assert np.bincount(labels, minlength=assoc.N_VALUES).min() > 0.7 * 3000 / assoc.N_VALUES


def test_key_blind_accuracy_is_the_best_a_memory_of_the_values_alone_scores():
    """The ceiling of a memory that holds the facts' values but not their keys: the exact
    expectation over every draw of four values from eight (enumerated), met by the generated
    examples; answering the most frequent value present does score it on the labels, and
    knowing the value of the queried fact (K = 1) scores 1. key_blind_score predicts the
    accuracy of answers that ignore the queried key, and falls short of answers that read it."""
    import itertools
    from collections import Counter

    draws = [Counter(v) for v in itertools.product(range(assoc.N_VALUES), repeat=4)]
    best = np.mean([max(c.values()) / 4 for c in draws])                 # 0.4121
    uniform = np.mean([1 / len(c) for c in draws])                      # 0.3164
    tokens, labels, _ = assoc.generate(20000, 8 * 16, 16, 4, seed=9)
    counts = assoc.values_present(tokens)
    assert (counts.sum(axis=1) == 4).all()
    assert all(counts[i, labels[i]] >= 1 for i in range(len(labels)))   # the answer is among them
    got = assoc.key_blind_accuracy(tokens)
    n = len(labels)
    se_best = np.std(counts.max(axis=1) / 4) / np.sqrt(n)                 # about 0.001 each
    se_uniform = np.std(1 / (counts > 0).sum(axis=1)) / np.sqrt(n)
    assert abs(got["best"] - best) < 4 * se_best and abs(got["uniform"] - uniform) < 4 * se_uniform
    se = 0.5 / np.sqrt(n)                                                  # a realised accuracy's, at most
    assert round(best, 4) == 0.4121 and round(uniform, 4) == 0.3164
    # the strategy itself, scored on the labels (ties split evenly: each tied value's share)
    top = counts == counts.max(axis=1, keepdims=True)
    scored = np.mean(top[np.arange(len(labels)), labels] / top.sum(axis=1))
    assert abs(scored - got["best"]) < 4 * se
    # an answer that ignores the queried key scores, on average, what key_blind_score says;
    # one that reads it scores more: here the answers themselves (the labels)
    rng = np.random.default_rng(3)
    guess = np.array([rng.choice(np.flatnonzero(c)) for c in counts])      # any value present
    for answers in (guess, np.argmax(counts, axis=1)):
        score = assoc.key_blind_score(tokens, answers)
        assert abs(np.mean(answers == labels) - score.mean()) < 4 * se
    assert abs(assoc.key_blind_score(tokens, guess).mean() - got["uniform"]) < 4 * se
    truth = assoc.key_blind_score(tokens, labels)
    assert np.mean(labels == labels) - truth.mean() > 0.5               # the key's worth: 1 - E[count / 4]
    one, _, _ = assoc.generate(500, 4 * 16, 16, 1, seed=9)
    assert assoc.key_blind_accuracy(one) == {"best": 1.0, "uniform": 1.0}
    with pytest.raises(ValueError, match="at least one fact"):
        assoc.key_blind_accuracy(np.full((2, 32), assoc.DISTRACTOR_OFFSET))


@pytest.mark.parametrize("T,K", [(2, 1), (8, 4), (16, 4), (8, 16)])
def test_every_query_asks_each_fact_of_an_example_once(T, K):
    """every_query: K questions per example, one about each fact in the order written; each
    question's label is what its tokens say (the task's definition) and its age that fact's;
    one of the K is the example as generated. Examples without facts, with different K, or
    with a segment length that puts a fact in the query's segment, are refused."""
    n = 300
    tokens, labels, ages = assoc.generate(n, T * 16, 16, K, seed=5)
    asked, values, fact_ages = assoc.every_query(tokens, 16)
    assert asked.shape == (n, K, T * 16) and values.shape == fact_ages.shape == (n, K)
    for i in range(n):
        for j in range(K):
            assert assoc.answer_from_tokens(asked[i, j]) == values[i, j]
            assert (asked[i, j, :-1] == tokens[i, :-1]).all()              # only the key differs
    same = (asked == tokens[:, None, :]).all(axis=2)                         # (n, K)
    assert (same.sum(axis=1) == 1).all()
    j = same.argmax(axis=1)
    assert (values[np.arange(n), j] == labels).all() and (fact_ages[np.arange(n), j] == ages).all()
    assert fact_ages.min() >= 1 and fact_ages.max() <= T - 1
    assert (np.diff(fact_ages, axis=1) <= 0).all()                           # oldest first
    with pytest.raises(ValueError, match="does not fit"):                 # ages need the layout's segments
        assoc.every_query(tokens, 16 * T)
    if T >= 4:   # longer segments that still fit the length put some fact outside the fact window
        with pytest.raises(ValueError, match="among the first 8 positions"):
            assoc.every_query(tokens, 32)
    with pytest.raises(ValueError, match="same number of facts"):        # facts missing, or K mixed
        assoc.every_query(np.full((2, T * 16), assoc.DISTRACTOR_OFFSET), 16)
    if K > 1:
        fewer = assoc.generate(1, T * 16, 16, K - 1, seed=6)[0]
        with pytest.raises(ValueError, match="same number of facts"):
            assoc.every_query(np.concatenate([tokens[:1], fewer]), 16)


def test_splits_are_seeded_and_distinct():
    a = assoc.load_split(None, "train", 64, segment_len=16, pairs=4)[1]
    b = assoc.load_split(None, "train", 64, segment_len=16, pairs=4)[1]
    c = assoc.load_split(None, "test", 64, segment_len=16, pairs=4)[1]
    assert (a.tokens == b.tokens).all() and (a.labels == b.labels).all() and (a.ages == b.ages).all()
    assert not (a.tokens[:100] == c.tokens[:100]).all()
    spec, _ = assoc.load_split(None, "val", 128, segment_len=16, pairs=4)
    assert spec.vocab_size == assoc.VOCAB_SIZE and spec.n_classes == 8 and spec.max_len == 128


def test_bad_layouts_are_named():
    with pytest.raises(ConfigError, match=r"pairs = 9: the 1 segment\(s\) before the query hold at most 8"):
        assoc.generate(4, 32, 16, 9, seed=0)
    with pytest.raises(ConfigError, match="T = 1 segment.*expected T >= 2"):
        assoc.generate(4, 16, 16, 1, seed=0)
    with pytest.raises(ConfigError, match="not a multiple of segment_len"):
        assoc.generate(4, 40, 16, 1, seed=0)
    with pytest.raises(ConfigError, match="pairs = 0: expected a positive integer"):
        assoc.generate(4, 64, 16, 0, seed=0)
    with pytest.raises(ConfigError, match="pairs = 20: keys are distinct"):
        assoc.generate(4, 16 * 4, 16, 20, seed=0)
    with pytest.raises(ConfigError, match=r"pairs = 7: the 2 segment\(s\) before the query hold at most 6"):
        assoc.generate(4, 9, 3, 7, seed=0)


def test_a_train_config_with_a_layout_that_cannot_hold_the_pairs_is_refused_before_anything_runs():
    from rmaat_model.model_config import ModelConfig
    from rmaat_model.train_config import TrainConfig
    with pytest.raises(ConfigError, match="assoc pairs = 20"):
        TrainConfig(task="assoc", max_len=32, assoc_pairs=20, model=ModelConfig(segment_len=16, max_len=32))
    with pytest.raises(ConfigError, match="norm = 'mid': expected one of 'post', 'pre'"):
        ModelConfig(norm="mid")
    with pytest.raises(ConfigError, match="retention_reading = 'scaled': expected one of 'integrating', 'literal'"):
        ModelConfig(retention_reading="scaled")


def test_recall_with_varying_lengths_keeps_its_answer_in_segment_one_and_records_the_age():
    from rmaat_model.data import synthetic as recall
    tokens, labels, ages = recall.generate_varying(2000, 256, 3, segment_len=16, min_segments=2)
    lengths = (tokens != 0).cumsum(1).argmax(1) + 1                # index of the last real token + 1
    assert ((lengths % 16) == 0).all() and (ages == lengths // 16 - 1).all()
    assert sorted(set(ages.tolist())) == list(range(1, 16))
    assert (tokens[np.arange(2000), lengths - 1] == recall.QUERY_ID).all()
    answers = tokens[:, :recall.ANSWER_WINDOW] - recall.ANSWER_OFFSET
    hit = (answers >= 0) & (answers < recall.N_CLASSES)
    assert (hit.sum(1) == 1).all() and (answers[hit] == labels).all()
    fixed, fixed_labels = recall.generate(50, 64, 3)               # the fixed-length task unchanged
    assert (fixed[:, -1] == recall.QUERY_ID).all() and (fixed != 0).all()
    with pytest.raises(ConfigError, match="min_segments = 1: expected an integer in 2 .. 16"):
        recall.generate_varying(4, 256, 0, segment_len=16, min_segments=1)


def test_assoc_trains_from_the_cli_without_a_data_directory(run_cli, tmp_path):
    proc = run_cli("train", "--task", "assoc", "--model", "elastic", "--out", tmp_path / "run", "--quiet",
                   "--set", "assoc_pairs=2", "--set", "max_len=64", "--set", "model.segment_len=16",
                   "--set", "model.d_model=16", "--set", "model.n_heads=2", "--set", "model.n_layers=1",
                   "--set", "steps=4", "--set", "eval_every=2", "--set", "eval_batches=1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["n_test"] == assoc.SPLIT_SIZES["test"] and 0.0 <= res["test_acc"] <= 1.0
