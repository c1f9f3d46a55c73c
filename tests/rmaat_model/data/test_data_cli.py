"""``rmaat generate``: writes the official layouts, refuses to overwrite, rejects bad values."""

from __future__ import annotations


def test_generate_listops_and_pathfinder(run_cli, tmp_path):
    proc = run_cli("generate", "listops", "--out", tmp_path / "lo", "--n-train", "8",
                   "--n-val", "2", "--n-test", "2", "--seed", "1", "--workers", "1", check=True)
    for split in ("train", "val", "test"):
        lines = (tmp_path / "lo" / f"basic_{split}.tsv").read_text().splitlines()
        assert lines[0] == "Source\tTarget" and len(lines) == 1 + {"train": 8}.get(split, 2)
    assert (tmp_path / "lo" / "meta.json").is_file()
    again = run_cli("generate", "listops", "--out", tmp_path / "lo", "--n-train", "8",
                    "--n-val", "2", "--n-test", "2", "--seed", "1", "--workers", "1")
    assert again.returncode == 2 and "finished run" in again.stderr
    proc = run_cli("generate", "pathfinder", "--out", tmp_path / "pf", "--n", "3", "--workers", "1",
                   check=True)
    root = tmp_path / "pf" / "pathfinder32" / "curv_contour_length_14"
    assert len((root / "metadata" / "0.npy").read_text().splitlines()) == 3
    assert sorted(p.name for p in (root / "imgs" / "0").iterdir()) == \
        ["sample_0.png", "sample_1.png", "sample_2.png"]
    bad = run_cli("generate", "pathfinder", "--out", tmp_path / "pf2", "--resolution", "48")
    assert bad.returncode == 2 and "48" in bad.stderr
