"""bench/fact_sensitivity.py: a fact's weight in the memory the query reads, by its age."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sens():
    spec = importlib.util.spec_from_file_location("fact_sensitivity", ROOT / "bench" / "fact_sensitivity.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _model(retention: str):
    import torch
    from rmaat_model.data import assoc
    from rmaat_model.model import build_model
    from rmaat_model.model_config import ModelConfig

    torch.manual_seed(0)
    return build_model(ModelConfig(arch="rmaat", vocab_size=assoc.VOCAB_SIZE, n_classes=assoc.N_CLASSES,
                                   max_len=8 * 16, segment_len=16, n_mem=4, d_model=32, n_heads=2, d_ff=64,
                                   n_layers=1, dropout=0.0, retention=retention))


def test_a_memory_blind_to_the_tokens_holds_no_fact_and_a_seeing_one_holds_every_age(sens):
    """An untrained model's memory moves when a fact of any age changes its value; with every
    token embedded alike it cannot see the facts, and moves by exactly 0 at every age."""
    import torch
    from rmaat_model.data import assoc

    tokens = assoc.generate(64, 8 * 16, 16, 4, seed=1)[0]
    model = _model("ltp")
    weights, steps = sens.fact_weights(model, tokens, 16)
    assert sorted(weights) == list(range(1, 8)) and len(steps) == 7
    assert all(w > 0 for w in weights.values())
    with torch.no_grad():
        model.tok_emb.weight.copy_(model.tok_emb.weight[:1].expand_as(model.tok_emb.weight))
    blind, _ = sens.fact_weights(model, tokens, 16)
    assert all(w == 0.0 for w in blind.values())


def test_bad_input_is_one_line(tmp_path):
    for argv, needle in (([str(tmp_path)], "expected a finished run directory"),
                         ([str(tmp_path), "--examples", "0"], "expected a positive count")):
        proc = subprocess.run([sys.executable, str(ROOT / "bench" / "fact_sensitivity.py"), *argv],
                              capture_output=True, text=True, cwd=ROOT,
                              env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
        assert proc.returncode == 2 and needle in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
