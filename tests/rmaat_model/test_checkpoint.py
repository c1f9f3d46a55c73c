"""safetensors round trip: identical logits, the schedule inside, the config beside."""

from __future__ import annotations

import json

import pytest
import torch

from astro_rmaat import config as cfgio
from astro_rmaat.errors import DataError
from rmaat_model import checkpoint
from rmaat_model.model import build_model
from rmaat_model.model_config import ModelConfig

from model_fixtures import one_thread  # noqa: F401  (autouse)
from model_fixtures import write_retention

SMALL = dict(vocab_size=20, n_classes=3, max_len=160, d_model=16, n_heads=2, n_layers=2, d_ff=32,
             segment_len=16, n_mem=3)


@pytest.mark.parametrize("arch, retention, head", [("rmaat", "ltp", "cls"), ("rmaat", "learned", "match"),
                                                    ("transformer", "none", "cls")])
def test_round_trip_gives_identical_logits(tmp_path, arch, retention, head):
    rfile = write_retention(tmp_path / "retention.json", tau=2.0)
    cfg = ModelConfig(arch=arch, retention=retention, retention_file=str(rfile), head=head, **SMALL)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():                         # not the initial values
            p.add_(0.01 * torch.randn_like(p))
    x = torch.randint(1, 20, (3, 100))
    x[0, 30:] = 0
    x2 = torch.randint(1, 20, (3, 50)) if head == "match" else None
    path = checkpoint.save(model, cfg, tmp_path / "run" / "model.safetensors")
    rfile.unlink()                                            # the schedule travels in the weights
    loaded, cfg2 = checkpoint.load(path)
    assert cfg2 == cfg
    assert torch.equal(model(x, x2), loaded.eval()(x, x2))
    if cfg.has_memory:
        assert torch.equal(loaded.rf_table, model.rf_table)
        assert isinstance(loaded.rf_table, torch.nn.Parameter) == (retention == "learned")
    sidecar = json.loads(checkpoint.sidecar_path(path).read_text())
    assert cfgio.from_dict(ModelConfig, sidecar) == cfg        # the JSON beside rebuilds the model
    checkpoint.sidecar_path(path).unlink()                     # ... and the file alone suffices
    assert torch.equal(checkpoint.load(path)[0].eval()(x, x2), model(x, x2))


def test_bad_checkpoints_are_named(tmp_path):
    cfg = ModelConfig(arch="rmt", retention="none", **SMALL)
    path = checkpoint.save(build_model(cfg), None, tmp_path / "model.safetensors")
    with pytest.raises(DataError, match="do not exist"):
        checkpoint.load(tmp_path / "missing.safetensors")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="broken.safetensors.*not a readable safetensors"):
        checkpoint.load(broken)
    # weights of one arch under the config of another
    other = tmp_path / "other.safetensors"
    checkpoint.save(build_model(ModelConfig(arch="transformer", **SMALL)), None, other)
    cfg_other = json.loads(checkpoint.sidecar_path(path).read_text())
    from safetensors.torch import load_file, save_file
    save_file(load_file(str(other)), str(tmp_path / "mixed.safetensors"))
    checkpoint.sidecar_path(tmp_path / "mixed.safetensors").write_text(json.dumps(cfg_other))
    with pytest.raises(DataError, match="mixed.safetensors.*do not fit"):
        checkpoint.load(tmp_path / "mixed.safetensors")


def test_a_learned_table_stored_before_its_range_field_loads_unbounded():
    """Before ``retention_range`` a learned table was unconstrained: a stored learned config
    without the field reads "free"; for another schedule the field is not read and takes
    today's default, so nothing about such a model changes."""
    from rmaat_model.model_config import with_legacy_layout
    learned = cfgio.from_dict(ModelConfig, with_legacy_layout({"arch": "rmaat", "retention": "learned"}))
    assert learned.retention_range == "free" and ModelConfig().retention_range == "unit"
    for data in ({"arch": "rmaat", "retention": "ltp"}, {"arch": "rmaat"}, {"arch": "rmt"}):
        assert cfgio.from_dict(ModelConfig, with_legacy_layout(data)).retention_range == "unit"
    kept = with_legacy_layout({"retention": "learned", "retention_range": "unit"})
    assert kept["retention_range"] == "unit"                 # a stored value is never overridden


def test_a_checkpoint_from_before_the_layout_field_rebuilds_pre_ln_with_identical_outputs():
    """fixtures/pre_norm_rmaat.safetensors was written by revision c18666a (pre-LN blocks, literal
    RF, no ``norm`` / ``retention_reading`` in its stored config) together with the logits it
    gave on fixed tokens; loading it today must rebuild that model, not today's default."""
    from pathlib import Path
    fixtures = Path(__file__).parent / "fixtures"
    expected = json.loads((fixtures / "pre_norm_rmaat.expected.json").read_text())
    model, cfg = checkpoint.load(fixtures / "pre_norm_rmaat.safetensors")
    assert cfg.norm == "pre" and cfg.retention_reading == "literal"
    assert ModelConfig().norm == "post"                      # ... which is not today's default
    x = torch.tensor(expected["tokens"])
    with torch.no_grad():
        logits = model.eval()(x)
    torch.testing.assert_close(logits, torch.tensor(expected["logits"]), rtol=1e-5, atol=1e-6)
    post = build_model(cfg.__class__(**{**cfgio.to_dict(cfg), "norm": "post"}), rf_table=model.rf_table)
    post.load_state_dict(model.state_dict())                 # same weights, the other layout
    assert not torch.allclose(post.eval()(x), logits, atol=1e-3)
