"""ListOps: the generator follows the official algorithm, the evaluator recomputes its labels,
and official-format TSV files from any source load."""

from __future__ import annotations

import collections
import random

import pytest
import torch

from astro_rmaat.errors import ConfigError, DataError, RunExistsError
from rmaat_model.data import base, listops
from rmaat_model.data.generate import listops as listops_gen


@pytest.fixture(scope="module")
def trees():
    return listops_gen.generate(240, seed=11)


def _parse(tokens):
    """Bare token list -> nested (op, [children]) / int, via a recursive descent."""
    pos = 0

    def node():
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok in listops_gen.OPERATORS:
            kids = []
            while tokens[pos] != listops_gen.END:
                kids.append(node())
            pos += 1
            return (tok, kids)
        return int(tok)

    tree = node()
    assert pos == len(tokens)
    return tree


def _official_render(tree):
    """The LRA rendering: fold (op, c1, ..., cn, ']') into nested pairs, '( a b )' each."""
    def fold(t):
        if isinstance(t, int):
            return t
        op, kids = t
        pair = (op, fold(kids[0]))
        for kid in kids[1:]:
            pair = (pair, fold(kid))
        return (pair, listops_gen.END)

    def to_string(t):
        if isinstance(t, tuple):
            return "( " + to_string(t[0]) + " " + to_string(t[1]) + " )"
        return str(t)

    return to_string(fold(tree))


def _walk(tree, depth=1):
    """Yield (depth, op or None, n_args) for every node."""
    if isinstance(tree, int):
        yield depth, None, 0
        return
    op, kids = tree
    yield depth, op, len(kids)
    for kid in kids:
        yield from _walk(kid, depth + 1)


def _reference_value(tree):
    if isinstance(tree, int):
        return tree
    op, kids = tree
    vals = sorted(_reference_value(k) for k in kids)
    n = len(vals)
    return {"[MIN": vals[0], "[MAX": vals[-1], "[SM": sum(vals) % 10,
            "[MED": int(vals[n // 2] if n % 2 else (vals[n // 2 - 1] + vals[n // 2]) / 2)}[op]


def test_evaluator_reproduces_generated_labels(trees):
    assert len({t[0] for t in trees}) == len(trees)          # de-duplicated
    for source, label, length in trees:
        assert listops_gen.evaluate(source) == label
        tree = _parse(listops_gen.tokenize(source))
        assert _reference_value(tree) == label              # independent evaluation
        assert len(listops_gen.tokenize(source)) == length      # official length = token count
        assert 500 < length < 2000


def test_rendering_is_the_official_nested_pair_form(trees):
    for source, _, _ in trees[:40]:
        assert _official_render(_parse(listops_gen.tokenize(source))) == source


def test_tree_statistics_follow_official_bounds(trees):
    ops, args, depths_op, depths_val = collections.Counter(), [], [], []
    for source, _, _ in trees:
        for depth, op, n in _walk(_parse(listops_gen.tokenize(source))):
            if op is None:
                depths_val.append(depth)
            else:
                ops[op] += 1
                args.append(n)
                depths_op.append(depth)
    assert set(ops) == set(listops_gen.OPERATORS)
    total = sum(ops.values())
    for op in listops_gen.OPERATORS:                            # uniform choice of operator
        assert abs(ops[op] / total - 0.25) < 0.03
    assert min(args) >= 2 and max(args) <= 10               # randint(2, 10) children
    assert set(args) == set(range(2, 11))
    assert max(depths_op) <= 9 and max(depths_val) <= 10   # depth < 10 for operators
    assert min(depths_op) == 1                              # the root is an operator
    labels = collections.Counter(t[1] for t in trees)
    # the label skew of LRA ListOps: 0 and 9 are the commonest classes
    assert labels[0] + labels[9] > 0.25 * len(trees)          # uniform would give 0.2


def test_value_probability_below_max_depth():
    # unconditioned trees: the root is a value with probability 0.75
    rng = random.Random(5)
    n = 4000
    values = sum(listops_gen.generate_tree(rng)[2] == 1 for _ in range(n))
    assert abs(values / n - listops_gen.VALUE_PROB) < 0.03


def test_known_answers():
    assert listops_gen.evaluate("[MAX 3 [MIN 4 7 ] 0 ]") == 4
    assert listops_gen.evaluate("( ( ( ( [MAX 3 ) ( ( ( [MIN 4 ) 7 ) ] ) ) 0 ) ] )") == 4
    assert listops_gen.evaluate("[MED 1 2 3 4 ]") == 2          # int(numpy median 2.5)
    assert listops_gen.evaluate("[SM 9 9 9 ]") == 7
    assert listops.encode("( ( [SM 1 ) ] )") == [listops.VOCAB["[SM"], listops.VOCAB["1"],
                                                 listops.VOCAB["]"]]
    for bad in ("[MAX 3", "3 4", "[MAX ]", "[FOO 1 ]", "]"):
        with pytest.raises(DataError):
            listops_gen.evaluate(bad)


def test_same_seed_same_data_whatever_the_workers():
    one = listops_gen.generate(40, seed=3, workers=1, chunk_size=10)
    two = listops_gen.generate(40, seed=3, workers=2, chunk_size=10)
    assert one == two
    assert listops_gen.generate(40, seed=4, chunk_size=10) != one


def test_generated_files_load_through_the_registry(tmp_path):
    paths = listops_gen.generate_files(tmp_path, n_train=30, n_val=6, n_test=4, seed=2)
    header = paths["train"].read_text().splitlines()[0]
    assert header == "Source\tTarget"
    sizes = {}
    for split in base.SPLITS:
        spec, ds = base.load_split("listops", tmp_path, split)
        sizes[split] = len(ds)
        assert spec == base.TaskSpec("listops", 16, 10, 2000, 0, False)
        for i in range(len(ds)):
            item = ds[i]
            assert item["tokens"].dtype == torch.long and 0 < int(item["tokens"].min())
            assert int(item["tokens"].max()) < spec.vocab_size
            assert item["label"] == listops_gen.evaluate(ds.text(i))
    assert sizes == {"train": 30, "val": 6, "test": 4}
    spec, ds = base.load_split("listops", tmp_path, "train", max_len=100)
    batch = base.collate([ds[0], ds[1]])
    assert batch["tokens"].shape == (2, 100) and batch["label"].shape == (2,)
    with pytest.raises(RunExistsError):
        listops_gen.generate_files(tmp_path, n_train=30, n_val=6, n_test=4, seed=2)


def test_room_check_is_a_lower_bound_of_the_files_and_refuses_before_writing(tmp_path, monkeypatch):
    """check_room's bytes never exceed what generate_files writes (header rows aside), and one
    byte less free than that bound refuses before the folder exists."""
    from astro_rmaat import resources

    sizes = dict(n_train=12, n_val=3, n_test=3)
    settings = listops_gen.ListOpsSettings(min_length=100, max_length=400)
    bound = 18 * (2 * (settings.min_length + 1) + 2)
    out = tmp_path / "gen"
    monkeypatch.setattr(resources, "free_space", lambda path: (tmp_path, bound - 1, None))
    with pytest.raises(ConfigError, match=rf"18 trees of more than 100 tokens take at least .* GB, more than"):
        listops_gen.generate_files(out, seed=1, settings=settings, **sizes)
    assert not out.exists()
    monkeypatch.setattr(resources, "free_space", lambda path: (tmp_path, bound, None))
    paths = listops_gen.generate_files(out, seed=1, settings=settings, **sizes)
    written = sum(p.stat().st_size - len("Source\tTarget\n") for p in paths.values())
    assert written >= bound


def test_official_format_written_elsewhere_loads(tmp_path):
    # as another generator writes it: csv-free, CRLF-free, plain text lines
    rows = ["( ( ( ( [MAX 3 ) ( ( ( [MIN 4 ) 7 ) ] ) ) 0 ) ] )\t4",
            "( ( ( [SM 9 ) 9 ) ] )\t8"]
    (tmp_path / "basic_val.tsv").write_text("Source\tTarget\n" + "\n".join(rows) + "\n")
    spec, ds = listops.load_split(tmp_path, "val")
    assert len(ds) == 2 and ds.labels == [4, 8]
    v = listops.VOCAB
    assert ds[1]["tokens"].tolist() == [v["[SM"], v["9"], v["9"], v["]"]]
    assert [listops_gen.evaluate(ds.text(i)) for i in range(2)] == ds.labels


def test_bad_inputs_are_reported(tmp_path):
    with pytest.raises(DataError, match="rmaat generate listops"):
        base.load_split("listops", tmp_path, "train")
    with pytest.raises(ConfigError, match="listops.*pathfinder"):
        base.load_split("lisops", tmp_path, "train")
    with pytest.raises(ConfigError, match="split"):
        base.load_split("listops", tmp_path, "dev")
    (tmp_path / "basic_train.tsv").write_text("src\tlabel\n[MAX 1 ]\t1\n")
    with pytest.raises(DataError, match="header"):
        listops.load_split(tmp_path, "train")
    (tmp_path / "basic_train.tsv").write_text("Source\tTarget\n[MAX 1 ]\tten\n")
    with pytest.raises(DataError, match="line 2"):
        listops.load_split(tmp_path, "train")
    (tmp_path / "basic_train.tsv").write_text("Source\tTarget\n[MAX 1 ]\t1\n[MAX 1 [FIRST 2 ] ]\t1\n")
    with pytest.raises(DataError, match="line 3.*FIRST"):
        listops.load_split(tmp_path, "train")
    (tmp_path / "basic_train.tsv").write_text("Source\tTarget\n[MAX 1 12 ]\t1\n")
    with pytest.raises(DataError, match="line 2.*'12'"):
        listops.load_split(tmp_path, "train")
    with pytest.raises(ConfigError):
        listops_gen.ListOpsSettings(min_length=2000, max_length=500)
    with pytest.raises(ConfigError):
        listops_gen.generate_files(tmp_path / "x", n_train=-1)
