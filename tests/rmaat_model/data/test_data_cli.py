"""``rmaat generate``: writes the official layouts, refuses to overwrite, rejects bad values,
and imports no torch."""

from __future__ import annotations

import os
import subprocess
import sys

#: runs ``rmaat ARGS`` in this process, then fails if any torch module was imported
NO_TORCH = """
import sys
from rmaat_app.cli import main
main(sys.argv[1:])
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not loaded, f"torch was imported: {loaded[:5]}"
"""


def test_generate_listops_and_pathfinder(run_cli, tmp_path):
    run_cli("generate", "listops", "--out", tmp_path / "lo", "--n-train", "8",
            "--n-val", "2", "--n-test", "2", "--seed", "1", "--workers", "1", check=True)
    for split in ("train", "val", "test"):
        lines = (tmp_path / "lo" / f"basic_{split}.tsv").read_text().splitlines()
        assert lines[0] == "Source\tTarget" and len(lines) == 1 + {"train": 8}.get(split, 2)
    assert (tmp_path / "lo" / "meta.json").is_file()
    again = run_cli("generate", "listops", "--out", tmp_path / "lo", "--n-train", "8",
                    "--n-val", "2", "--n-test", "2", "--seed", "1", "--workers", "1")
    assert again.returncode == 2 and "finished run" in again.stderr
    run_cli("generate", "pathfinder", "--out", tmp_path / "pf", "--n", "3", "--workers", "1",
            check=True)
    root = tmp_path / "pf" / "pathfinder32" / "curv_contour_length_14"
    assert len((root / "metadata" / "0.npy").read_text().splitlines()) == 3
    assert sorted(p.name for p in (root / "imgs" / "0").iterdir()) == \
        ["sample_0.png", "sample_1.png", "sample_2.png"]
    bad = run_cli("generate", "pathfinder", "--out", tmp_path / "pf2", "--resolution", "48")
    assert bad.returncode == 2 and "48" in bad.stderr


def test_the_generators_import_no_torch(tmp_path, repo_root):
    """The generators (rmaat_model.data.generate) write the files with NumPy and PIL; the torch
    Datasets that read them (rmaat_model.data.listops, .pathfinder) are apart."""
    imports = ("import sys, rmaat_model.data.cli, rmaat_model.data.generate.listops, "
               "rmaat_model.data.generate.pathfinder; assert 'torch' not in sys.modules")
    runs = {"imports": ["-c", imports],
            "listops": ["-c", NO_TORCH, "generate", "listops", "--out", tmp_path / "lo", "--n-train", "4",
                        "--n-val", "2", "--n-test", "2", "--workers", "1"],
            "pathfinder": ["-c", NO_TORCH, "generate", "pathfinder", "--out", tmp_path / "pf", "--n", "2",
                           "--workers", "1"]}
    env = dict(os.environ, PYTHONPATH=str(repo_root))
    for name, args in runs.items():
        proc = subprocess.run([sys.executable, *map(str, args)], cwd=repo_root, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{name}:\n{proc.stderr[-2000:]}"
    assert (tmp_path / "lo" / "meta.json").is_file()
    assert (tmp_path / "pf" / "pathfinder32" / "meta.json").is_file()
