"""Text, Retrieval and Image loaders read tiny fixtures written in the official formats,
at the LRA lengths; missing or malformed files say what to obtain."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from astro_rmaat.errors import ConfigError, DataError
from rmaat_model.data import base, image, retrieval, text


# --------------------------------------------------------------------------- base
def test_collate_right_pads_with_zero():
    batch = [{"tokens": torch.tensor([5, 6, 7]), "tokens2": torch.tensor([1]), "label": 1},
             {"tokens": torch.tensor([9]), "tokens2": torch.tensor([2, 3]), "label": 0}]
    out = base.collate(batch)
    assert out["tokens"].tolist() == [[5, 6, 7], [9, 0, 0]]
    assert out["tokens2"].tolist() == [[1, 0], [2, 3]]
    assert out["label"].tolist() == [1, 0] and out["label"].dtype == torch.long


def test_registry_names_every_lra_task():
    assert set(base.TASKS) >= {"listops", "text", "retrieval", "image", "pathfinder", "recall"}
    with pytest.raises(ConfigError, match="'imdb'.*listops, text, retrieval, image, pathfinder"):
        base.load_split("imdb", ".", "train")
    with pytest.raises(ConfigError, match="max_len"):
        base.load_split("text", ".", "train", max_len=0)


# --------------------------------------------------------------------------- text
def _imdb(root):
    reviews = {"train/pos": [b"great film", "tr\u00e8s bien ".encode() * 500],
               "train/neg": [b"dull", b"awful acting", b"meh"],
               "test/pos": [b"loved it"], "test/neg": [b"no"]}
    for sub, texts in reviews.items():
        (root / "aclImdb" / sub).mkdir(parents=True)
        for i, t in enumerate(texts):
            (root / "aclImdb" / sub / f"{i}_{7 + i}.txt").write_bytes(t)
    (root / "aclImdb" / "train" / "unsup").mkdir()       # present in the release, ignored
    return reviews


def test_text_reads_imdb_bytes(tmp_path):
    reviews = _imdb(tmp_path)
    spec, train = base.load_split("text", tmp_path, "train")
    assert spec == base.TaskSpec("text", 257, 2, 4000, 0, False)
    assert len(train) == 5 and sorted(train.labels) == [0, 0, 0, 1, 1]
    items = [train[i] for i in range(len(train))]
    long = max(items, key=lambda it: len(it["tokens"]))
    assert len(long["tokens"]) == 4000 and long["label"] == 1    # 5500 bytes cut to 4000
    assert long["tokens"].tolist() == [b + 1 for b in reviews["train/pos"][1][:4000]]
    short = [it for it in items if len(it["tokens"]) == 4][0]
    assert short["tokens"].tolist() == [b + 1 for b in b"dull"] and short["label"] == 0
    _, val = base.load_split("text", tmp_path / "aclImdb", "val", max_len=1000)
    _, test = base.load_split("text", tmp_path, "test")
    assert val.files == test.files and len(val) == 2               # test doubles as val
    _, train1k = text.load_split(tmp_path, "train", 1000)
    assert max(len(train1k[i]["tokens"]) for i in range(5)) == 1000


def test_text_missing_files(tmp_path):
    with pytest.raises(DataError, match="aclImdb.*aclImdb_v1.tar.gz"):
        base.load_split("text", tmp_path, "train")
    (tmp_path / "aclImdb" / "train" / "pos").mkdir(parents=True)
    with pytest.raises(DataError, match="neg"):
        base.load_split("text", tmp_path, "train")


# --------------------------------------------------------------------------- retrieval
def _aan_line(label, a, b):
    return f"{label}\tid{len(a)}\tid{len(b)}\t{a}\t{b}\n"


def test_retrieval_reads_aan_pairs(tmp_path):
    doc = "Citation networks " * 300                                # 5400 bytes
    lines = [_aan_line("1.0", doc, "short"), _aan_line("0", "x", "y" * 10)]
    (tmp_path / "tsv_data").mkdir()
    for split in ("train", "eval", "test"):
        (tmp_path / "tsv_data" / f"new_aan_pairs.{split}.tsv").write_text("".join(lines))
    spec, ds = base.load_split("retrieval", tmp_path, "val")
    assert spec == base.TaskSpec("retrieval", 257, 2, 4000, 0, True)
    assert len(ds) == 2 and ds.labels == [1, 0]
    first = ds[0]
    assert len(first["tokens"]) == 4000
    assert first["tokens"].tolist() == [b + 1 for b in doc.encode()[:4000]]
    assert first["tokens2"].tolist() == [b + 1 for b in b"short"]
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=base.collate)
    batch = next(iter(loader))
    assert batch["tokens"].shape == (2, 4000) and batch["tokens2"].shape == (2, 10)
    # a header line is skipped
    (tmp_path / "new_aan_pairs.train.tsv").write_text("label\tid1\tid2\ttext1\ttext2\n" + lines[1])
    _, ds = retrieval.load_split(tmp_path, "train")
    assert len(ds) == 1 and ds[0]["label"] == 0


def test_retrieval_bad_files(tmp_path):
    with pytest.raises(DataError, match="new_aan_pairs.test.tsv.*tsv_data"):
        base.load_split("retrieval", tmp_path, "test")
    (tmp_path / "new_aan_pairs.train.tsv").write_text("1\tid\tid\tonly four\n")
    with pytest.raises(DataError, match="line 1.*5 tab-separated"):
        base.load_split("retrieval", tmp_path, "train")
    (tmp_path / "new_aan_pairs.train.tsv").write_text(_aan_line("0", "a", "b") + _aan_line("2", "a", "b"))
    with pytest.raises(DataError, match="line 2.*0 or 1"):
        base.load_split("retrieval", tmp_path, "train")


# --------------------------------------------------------------------------- image
def _cifar_batch(path, rgb, labels):
    with open(path, "wb") as fh:
        pickle.dump({b"batch_label": b"fixture", b"labels": list(labels),
                     b"data": rgb, b"filenames": [b"x.png"] * len(labels)}, fh, protocol=2)


def test_image_reads_cifar_in_grey(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        rgb = rng.integers(0, 256, size=(4, 3072), dtype=np.uint8)
        _cifar_batch(root / f"data_batch_{i}", rgb, [(i + k) % 10 for k in range(4)])
    test_rgb = np.zeros((3, 3072), dtype=np.uint8)
    test_rgb[0, :1024] = 255                                       # pure red
    test_rgb[1, :] = 255                                           # white
    test_rgb[2, 1024 + 1 * 32 + 2] = 200                           # green pixel at row 1, col 2
    _cifar_batch(root / "test_batch", test_rgb, [3, 4, 5])
    sizes = {}
    for split in base.SPLITS:
        spec, ds = base.load_split("image", tmp_path, split)
        assert spec == base.TaskSpec("image", 257, 10, 1024, 0, False)
        sizes[split] = len(ds)
    assert sizes == {"train": 18, "val": 2, "test": 3}             # 90 % / 10 % of 20, test
    _, test = image.load_split(root, "test")
    assert test[0]["tokens"].unique().tolist() == [round(0.2989 * 255) + 1]
    assert test[1]["tokens"].unique().tolist() == [256]
    t2 = test[2]["tokens"]
    assert t2.shape == (1024,) and int(t2[34]) == round(0.5870 * 200) + 1
    assert int((t2 != 1).sum()) == 1 and test[2]["label"] == 5
    _, val = image.load_split(root, "val")
    assert [val[i]["label"] for i in range(2)] == [(5 + 2) % 10, (5 + 3) % 10]  # last two of batch 5


def test_image_bad_files(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py.*cifar-10-python.tar.gz"):
        base.load_split("image", tmp_path, "train")
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    _cifar_batch(root / "data_batch_1", np.zeros((2, 3072), np.uint8), [0, 1])
    with pytest.raises(DataError, match="data_batch_2"):
        base.load_split("image", tmp_path, "train")
    (root / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="test_batch"):
        base.load_split("image", tmp_path, "test")
    _cifar_batch(root / "test_batch", np.zeros((2, 100), np.uint8), [0, 1])
    with pytest.raises(DataError, match="3072"):
        base.load_split("image", tmp_path, "test")
    with pytest.raises(ConfigError, match="1024"):
        base.load_split("image", tmp_path, "test", max_len=2048)


@pytest.mark.parametrize("task", base.SYNTHETIC_TASKS)
def test_synthetic_task_larger_than_memory_is_refused_before_it_is_generated(task, monkeypatch):
    """All splits' int64 tokens against the machine's memory: one byte short refuses, naming
    max_len; exactly enough generates (and holds that many tokens)."""
    import importlib

    from astro_rmaat import resources

    module = importlib.import_module(base.TASKS[task])
    L = 64
    n = sum(module.SPLIT_SIZES.values())
    monkeypatch.setattr(resources, "memory_limit_bytes", lambda: n * L * 8 - 1)
    with pytest.raises(ConfigError, match=rf"max_len = {L}: the {task} task's {n:,} sequences"):
        base.load_split(task, None, "val", max_len=L)
    monkeypatch.setattr(resources, "memory_limit_bytes", lambda: n * L * 8)
    held = sum(base.load_split(task, None, split, max_len=L)[1].tokens.numel() for split in base.SPLITS)
    assert held * 8 == n * L * 8
