"""The shell examples of the README and of the docs pages run in order, as printed, and
chain: a later block finds the files an earlier one wrote (sim.json before the sweep,
data/lra/listops before training on it, a sweep before its fit). The pages are read in the
order of ``PAGES``: the README, then the stage pages from simulation to training.

Convention (also stated in the README's command-line section). In a page's source, a
```bash block whose previous line is

    <!-- runnable -->                                   is run as printed;
    <!-- runnable quick: PREFIX += ARGS; PREFIX += ARGS -->

is run in quick form: ARGS are appended to every command that starts with PREFIX (before a
trailing ``# comment`` and a ``> file`` redirection). The quick args only shrink sizes (steps,
cycles, pairs, samples, fit starting points) and later values win (``--set``, click options),
so what runs is the printed command plus what the marker shows. A quick rule that matches no
command fails.

Run: every pipeline example (quick, 1 step per model), the three simulations, the tripartite
sweep (serial and a local Dask cluster) and the fits and sensitivity on it, the network sweep
with its sensitivity and grouped fit, ListOps and Pathfinder generation (a few samples), and
training, evaluation and a config file made with --show-defaults (4 steps each).

Every marked block runs in page order in one temporary directory, as one bash script
(``set -e``), with ``rmaat`` resolving to ``python -m rmaat_app`` of this checkout. Each block
must exit 0, and every ``--out DIR`` it names must then hold a finished run (``meta.json``,
written last by every stage; Pathfinder's run is ``DIR/pathfinder<R>/``). A failure shows the
block as run and the end of its output, each command traced with the seconds since the block
began.

Not run (unmarked), and why; ``test_unmarked_blocks_are_the_listed_exceptions`` keeps this list
complete:

* ``make demo`` / ``make test``: they create a venv; ``make test`` is the suite this file is in.
* ``--scheduler tcp://HOST:8786``: needs a Dask scheduler that is already running elsewhere
  (tests/astro_sim/test_sweep.py runs one on loopback).
* ``--standalone`` sweep: a cpp_standalone build of 30-60 s
  (tests/astro_sim/test_sweep_standalone.py).
* ``torchrun``: two training processes (tests/rmaat_model/test_distributed.py runs them).
* ``python bench/...``: benchmarks of minutes, not tests.
* ``python -c ...``: one-liners that print values a test checks (e.g. the rest state).
* Python blocks (API sketches with placeholders such as ``tokens``) and plain blocks
  (diagrams, equations) are not shell examples.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: the pages whose shell examples run, in the order they chain
PAGES = ("README.md", "docs/simulation.md", "docs/distill.md", "docs/data.md", "docs/training.md")

MARKER = re.compile(r"<!-- runnable(?: quick: (?P<quick>.+?))? -->")
#: a substring of each unmarked bash block -> why it is not run (see the docstring)
NOT_RUN = {
    "make demo": "creates a venv; make test is this suite",
    "--scheduler tcp://": "needs a running Dask scheduler elsewhere",
    "--standalone": "cpp_standalone build of 30-60 s (test_sweep_standalone.py)",
    "torchrun": "two training processes (test_distributed.py)",
    "python bench/": "benchmark of minutes",
    "python -c": "a Python one-liner printing values a test checks, not a command-line example",
}


@dataclass(frozen=True)
class Block:
    page: str                               # the page, relative to the repository
    line: int                               # its line of the opening ```bash fence
    commands: tuple[str, ...]               # as printed; continuation lines joined, comments dropped
    quick: tuple[tuple[str, str], ...]      # (PREFIX, ARGS) from the marker

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    def commands_as_run(self) -> list[str]:
        return [quick_form(c, self.quick) for c in self.commands]


def _bash_blocks(text: str, page: str) -> list[tuple[int, str | None, str]]:
    """(fence line, marker line or None, body) of every ```bash block, in order."""
    lines = text.splitlines()
    found, i = [], 0
    while i < len(lines):
        if lines[i].strip() in ("```bash", "```sh"):
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            prev = lines[i - 1].strip() if i else ""
            found.append((i + 1, prev if MARKER.fullmatch(prev) else None, "\n".join(lines[i + 1:end])))
            i = end
        elif MARKER.fullmatch(lines[i].strip()) and not lines[i + 1].strip().startswith("```bash"):
            raise AssertionError(f"{page}:{i + 1}: a runnable marker must be the line right "
                                 f"before a ```bash fence")
        i += 1
    return found


def _commands(body: str) -> tuple[str, ...]:
    joined = re.sub(r"\s*\\\n\s*", " ", body)
    return tuple(c for c in (line.strip() for line in joined.splitlines()) if c and not c.startswith("#"))


def _quick_rules(spec: str | None) -> tuple[tuple[str, str], ...]:
    rules = []
    for rule in filter(None, (r.strip() for r in (spec or "").split(";"))):
        prefix, sep, args = rule.partition(" += ")
        assert sep and prefix.strip() and args.strip(), f"quick rule {rule!r}: expected 'PREFIX += ARGS'"
        rules.append((prefix.strip(), args.strip()))
    return tuple(rules)


def runnable_blocks(page: str) -> list[Block]:
    text = (REPO / page).read_text()
    return [Block(page, line, _commands(body), _quick_rules(MARKER.fullmatch(marker)["quick"]))
            for line, marker, body in _bash_blocks(text, page) if marker]


def _matches(command: str, prefix: str) -> bool:
    return command == prefix or command.startswith(prefix + " ")


def quick_form(command: str, rules) -> str:
    """``command`` with the ARGS of every matching rule inserted before its trailing comment
    and redirection."""
    extra = [args for prefix, args in rules if _matches(command, prefix)]
    if not extra:
        return command
    code = re.sub(r"\s+#\s.*$", "", command)
    m = re.fullmatch(r"(.*?)(\s+>\s*\S+)?", code)
    return " ".join([m[1], *extra]) + (m[2] or "")


BLOCKS = [block for page in PAGES for block in runnable_blocks(page)]


def test_runnable_blocks_are_marked_and_every_quick_rule_applies():
    assert len(BLOCKS) >= 6, "the pages mark almost no shell block runnable"
    assert BLOCKS[0].page == "README.md", "the README's own examples run first"
    for block in BLOCKS:
        assert block.commands, f"{block.where}: a runnable block without a command"
        for prefix, _ in block.quick:
            assert any(_matches(c, prefix) for c in block.commands), (
                f"{block.where}: quick rule {prefix!r} matches no command of the block")


@pytest.mark.parametrize("page", [*PAGES, *sorted(
    str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md") if str(p.relative_to(REPO)) not in PAGES)])
def test_unmarked_blocks_are_the_listed_exceptions(page):
    for line, marker, body in _bash_blocks((REPO / page).read_text(), page):
        if marker is None or page not in PAGES:
            assert marker is None, f"{page}:{line}: a runnable block on a page that is not in PAGES"
            assert any(key in body for key in NOT_RUN), (
                f"{page}:{line}: a shell block that is neither marked runnable nor one of the "
                f"exceptions in {__name__}.NOT_RUN:\n{body}")


def test_quick_form_appends_before_comment_and_redirection():
    rules = (("rmaat simulate", "--set protocol.n_pairs=10"),)
    assert quick_form("rmaat simulate --show-defaults > sim.json   # base", rules) == \
        "rmaat simulate --show-defaults --set protocol.n_pairs=10 > sim.json"
    assert quick_form("rmaat sweep --config sim.json", rules) == "rmaat sweep --config sim.json"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One directory for every block (later blocks read what earlier ones wrote), and a bin/
    whose ``rmaat`` is this checkout's CLI."""
    root = tmp_path_factory.mktemp("readme")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    rmaat = bin_dir / "rmaat"
    rmaat.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m rmaat_app "$@"\n')
    rmaat.chmod(0o755)
    work = root / "work"
    work.mkdir()
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
               TQDM_DISABLE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {"dir": work, "env": env, "failed": None}


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[b.where for b in BLOCKS])
def test_readme_block_runs(block, workdir):
    if workdir["failed"]:
        pytest.skip(f"an earlier block ({workdir['failed']}) failed; this one may need its files")
    commands = block.commands_as_run()
    script = "set -e -o pipefail\nPS4='+ [${SECONDS}s] '\nset -x\n" + "\n".join(commands) + "\n"
    proc = subprocess.run(["bash", "-c", script], cwd=workdir["dir"], env=workdir["env"],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        workdir["failed"] = block.where
        pytest.fail(f"{block.where}: exit {proc.returncode}; the block as run "
                    f"(in {workdir['dir']}):\n" + "\n".join(commands)
                    + f"\n--- stdout (end)\n{proc.stdout[-3000:]}\n--- stderr (end)\n{proc.stderr[-6000:]}")
    for command in commands:
        for out in re.findall(r"--out\s+(\S+)", command):
            run_dir = workdir["dir"] / out
            if command.startswith("rmaat generate pathfinder"):    # OUT/pathfinder<R>/ is the run
                resolution = re.findall(r"--resolution\s+(\d+)", command)[-1]
                run_dir = run_dir / f"pathfinder{resolution}"
            assert (run_dir / "meta.json").is_file(), (
                f"{block.where}: `{command}` exited 0 but {run_dir}/meta.json is missing")
