"""The README's contract: its two commands are the ones CI and `make` run, and every
`rmaat ...` command it quotes exists."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_readme_shows_the_two_commands_first():
    text = (REPO / "README.md").read_text()
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S).group(1)
    assert "make demo" in first_block and "make test" in first_block


def test_ci_runs_make_test_and_make_defines_both():
    assert "make test" in (REPO / ".ci" / "run").read_text()
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "pytest" in makefile and "rmaat pipeline" in makefile


def test_every_quoted_rmaat_subcommand_exists(run_cli):
    from rmaat_app.cli import COMMANDS

    text = (REPO / "README.md").read_text()
    quoted = set(re.findall(r"(?m)(?:^|\$ |`)rmaat ([a-z]+)", text))
    assert quoted, "the README quotes no rmaat command"
    unknown = quoted - set(COMMANDS)
    assert not unknown, f"README quotes unknown subcommands: {unknown}"
    for sub in sorted(quoted):
        proc = run_cli(sub, "--help")
        assert proc.returncode == 0, f"rmaat {sub} --help failed:\n{proc.stderr}"


def test_quoted_bench_and_script_files_exist():
    text = (REPO / "README.md").read_text()
    for rel in set(re.findall(r"\b((?:bench|scripts|notebooks)/[\w./-]+\.py)\b", text)):
        assert (REPO / rel).is_file(), f"README quotes {rel}, which does not exist"
