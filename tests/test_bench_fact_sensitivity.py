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


def _cfg(retention: str, **kw):
    from rmaat_model.data import assoc
    from rmaat_model.model_config import ModelConfig

    return ModelConfig(arch="rmaat", vocab_size=assoc.VOCAB_SIZE, n_classes=assoc.N_CLASSES, max_len=8 * 16,
                       segment_len=16, n_mem=4, d_model=32, n_heads=2, d_ff=64, n_layers=1, dropout=0.0,
                       retention=retention, **kw)


def _model(retention: str, **kw):
    import torch
    from rmaat_model.model import build_model

    torch.manual_seed(0)
    return build_model(_cfg(retention, **kw))


def test_a_memory_blind_to_the_tokens_holds_no_fact_and_a_seeing_one_holds_every_age(sens):
    """An untrained model's memory moves when a fact of any age changes its value; with every
    token embedded alike it cannot see the facts, and moves by exactly 0 at every age."""
    import torch
    from rmaat_model.data import assoc

    tokens = assoc.generate(64, 8 * 16, 16, 4, seed=1)[0]
    model = _model("ltp")
    out = sens.fact_sensitivity(model, tokens, 16)
    weights, steps = out["weights"], out["steps"]
    assert sorted(weights) == list(range(1, 8)) and len(steps) == 7
    assert all(w > 0 for w in weights.values())
    with torch.no_grad():
        model.tok_emb.weight.copy_(model.tok_emb.weight[:1].expand_as(model.tok_emb.weight))
    blind = sens.fact_sensitivity(model, tokens, 16)["weights"]
    assert all(w == 0.0 for w in blind.values())


@pytest.mark.parametrize("reading", ["integrating", "literal"])
def test_the_blocks_output_and_the_memory_read_are_the_models_own(sens, reading):
    """What the hand-off line decomposes: the blocks' unscaled memory output, recovered from the
    states (under the integrating reading by undoing RF's step), equals the output of the same
    weights with unscaled memory run on the memory the segment reads, itself the state scaled
    by RF(t, T) under the literal reading."""
    import torch
    from rmaat_model.data import assoc
    from rmaat_model.model import build_model

    tokens = torch.from_numpy(assoc.generate(32, 8 * 16, 16, 4, seed=2)[0])
    model = _model("ltp", retention_reading=reading).eval()
    twin = build_model(_cfg("none")).eval()
    twin.load_state_dict({k: v for k, v in model.state_dict().items() if k != "rf_table"}, strict=False)
    with torch.inference_mode():
        plan, states = sens.memory_states(model, tokens)
        read, out = sens.reads(model, plan, states), sens.block_outputs(model, plan, states)
        assert len(read) == 8 and len(out) == 7
        for t in range(1, 7):
            direct = twin.step(twin.plan(tokens), t, read[t])
            torch.testing.assert_close(out[t], direct, rtol=0, atol=2e-5)
            rf = float(model.retention_scale(plan, t)[0])
            assert rf < 0.5
            torch.testing.assert_close(read[t], states[t] * (rf if reading == "literal" else 1.0))


def test_a_hand_off_grows_a_trace_by_what_its_blocks_write_back(sens):
    """The hand-off line's three medians against their definitions: unscaled memory hands the
    blocks' output on, so growth equals gain at every hand-off; under the integrating reading each
    pair obeys d_{t+1} = (1 - RF) d_t + RF dx_t, so a pair's growth lies within RF (gain + 1) of
    1 - RF and the medians of every hand-off are in range; cosines are cosines. Hand-offs are
    t = 1 .. T-2 (a fact of segment 0 is the first any hand-off carries)."""
    from rmaat_model.data import assoc

    tokens = assoc.generate(64, 8 * 16, 16, 4, seed=3)[0]
    flat = sens.fact_sensitivity(_model("none"), tokens, 16)["handoffs"]
    assert sorted(flat) == list(range(1, 7))
    for gain, cos, growth, size in flat.values():
        assert growth == pytest.approx(gain, rel=1e-6) and -1 <= cos <= 1 and size > 0
    model = _model("ltp")
    hand = sens.fact_sensitivity(model, tokens, 16)["handoffs"]
    plan = model.plan(__import__("torch").from_numpy(tokens))
    for t, (gain, cos, growth, size) in hand.items():
        rf = float(model.retention_scale(plan, t + 1)[0])
        assert abs(growth - (1 - rf)) <= rf * (gain + 1e-6) and -1 <= cos <= 1


def test_a_folder_of_runs_is_summed_up_by_its_means(sens):
    """The last line per folder: each band's weight and each hand-off's medians averaged over
    the runs, and the mean of the runs' products of growths (not the product of the means)."""
    members = [{"bands": [0.1, 0.2, 0.3, 0.4, 0.5], "hand": {1: (2.0, 0.9, 1.5, 1.0), 2: (3.0, 0.8, 3.0, 2.0)}},
               {"bands": [0.3, 0.4, 0.5, 0.6, 0.7], "hand": {1: (4.0, 0.7, 0.5, 3.0), 2: (1.0, 0.6, 1.0, 4.0)}}]
    line = sens.summary("runs/ltp", 16, "integrating", members)
    assert line.startswith("runs/ltp (mean over 2 runs): fact weight by age 1-3: 20.0 %; 4-6: 30.0 %;")
    assert "13-15: 60.0 %" in line and "t = 1 .. 2 (integrating)" in line
    # products 4.5 and 0.5: their mean 2.5, where the product of the mean growths is 2.0
    assert "gain 3.00 2.00; cos 0.80 0.70; growth 1.00 2.00 (2.50x over them); memory size 2.00 3.00" in line
    assert sens.bands(4) == [(1, 1), (2, 2), (3, 3)] and sens._band_cells(4, [0.1, 0.2, 0.3]) == "1: 10.0 %; 2: 20.0 %; 3: 30.0 %"


def test_bad_input_is_one_line(tmp_path):
    for argv, needle in (([str(tmp_path)], "expected a finished run directory"),
                         ([str(tmp_path), "--examples", "0"], "argument --examples: '0': expected a positive integer")):
        proc = subprocess.run([sys.executable, str(ROOT / "bench" / "fact_sensitivity.py"), *argv],
                              capture_output=True, text=True, cwd=ROOT,
                              env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
        assert proc.returncode == 2 and needle in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
