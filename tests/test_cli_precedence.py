"""One precedence rule for every verb (astro_rmaat.config.PRECEDENCE, printed by
``rmaat --help``): explicit flag > --set KEY=VALUE > --config FILE > built-in defaults.

Each case gives one key four values — the default, one in a config file, one in --set, one
in a flag — and reads the result back from --show-defaults with each layer added in turn.
"""

from __future__ import annotations

import json

import pytest

from astro_rmaat.config import PRECEDENCE
from rmaat_app.cli import main

#: verb, dotted key in the shown config, config-file content, --set item, flag args, the
#: three values expected (config only, config + --set, config + --set + flag)
CASES = [
    ("simulate", "model", {"model": "tripartite"}, "model=rmaat_network",
     ["--model", "tripartite"], ("tripartite", "rmaat_network", "tripartite")),
    ("simulate", "protocol.n_cycles", {"protocol": {"n_cycles": 7}}, "protocol.n_cycles=9",
     None, (7, 9, None)),
    ("fit", "seed", {"seed": 3}, "seed=5", ["--seed", "8"], (3, 5, 8)),
    ("fit", "models", {"models": ["exp"]}, 'models=["hill"]', ["--models", "mm,exp"],
     (["exp"], ["hill"], ["mm", "exp"])),
    ("sensitivity", "fit.seed", {"fit": {"seed": 3}}, "fit.seed=5", ["--seed", "8"], (3, 5, 8)),
    ("train", "steps", {"steps": 11}, "steps=12", ["--steps", "13"], (11, 12, 13)),
    ("train", "model.arch", {"model": {"arch": "rmt"}}, "model.arch=rlt", ["--model", "elastic"],
     ("rmt", "rlt", "elastic")),
    ("pipeline", "task", {"task": "listops"}, "task=recall", ["--task", "listops"],
     ("listops", "recall", "listops")),
]


def _shown(capsys, argv) -> dict:
    try:
        main([*argv, "--show-defaults"])
    except SystemExit as exc:
        pytest.fail(f"rmaat {' '.join(argv)} --show-defaults exited {exc.code}: {capsys.readouterr().err}")
    return json.loads(capsys.readouterr().out)


def _get(data: dict, dotted: str):
    for part in dotted.split("."):
        data = data[part]
    return data


@pytest.mark.parametrize("verb, key, file_data, set_item, flag, expected", CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_flag_beats_set_beats_config_beats_default(verb, key, file_data, set_item, flag,
                                                   expected, tmp_path, capsys):
    default = _get(_shown(capsys, [verb]), key)
    # each layer must change the value, or the case could not tell the layers apart
    assert default != expected[0] and expected[0] != expected[1] and expected[1] != expected[2]
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(file_data))
    layers = [["--config", str(cfg)], ["--set", set_item], flag]
    for n, want in enumerate(expected, 1):
        if layers[n - 1] is None:
            continue
        argv = [verb, *[a for layer in layers[:n] if layer for a in layer]]
        assert _get(_shown(capsys, argv), key) == want, f"rmaat {' '.join(argv)}"


def test_sweep_grid_flag_beats_the_config_file(tmp_path, capsys):
    cfg = tmp_path / "sweep.json"
    cfg.write_text(json.dumps({"base": {"model": "rmaat_network"}, "grid": {"params.tau_pl_s": [5]}}))
    shown = _shown(capsys, ["sweep", "--config", str(cfg)])
    assert shown["grid"] == {"params.tau_pl_s": [5]}
    shown = _shown(capsys, ["sweep", "--config", str(cfg), "--grid", "params.tau_pl_s=10,20"])
    assert shown["grid"] == {"params.tau_pl_s": [10, 20]}


def test_the_rule_is_stated_in_help(run_cli):
    out = run_cli("--help").stdout
    assert "explicit flag" in out and "--set" in out and "--config" in out
    assert PRECEDENCE.startswith("explicit flag > --set")
