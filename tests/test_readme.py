"""The README and docs pages as a contract: the README's two commands are the ones CI and
`make` run, and every `rmaat ...` command the pages show still parses — the verb exists, its
`--help` works, and every flag and choice given is one the command accepts."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])


def test_readme_shows_the_two_commands_first():
    text = (REPO / "README.md").read_text()
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S).group(1)
    assert "make demo" in first_block and "make test" in first_block


def test_ci_runs_make_test_and_make_defines_both():
    assert "make test" in (REPO / ".ci" / "run").read_text()
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "pytest" in makefile and "rmaat pipeline" in makefile


def test_readme_is_a_front_door():
    lines = (REPO / "README.md").read_text().splitlines()
    assert 150 <= len(lines) <= 250, f"README.md has {len(lines)} lines; details belong in docs/"
    links = set(re.findall(r"\]\((docs/[\w.-]+\.md)", "\n".join(lines)))
    assert {"docs/design.md", "docs/benchmarks.md", "docs/findings.md"} <= links
    for rel in links:
        assert (REPO / rel).is_file(), f"README links {rel}, which does not exist"


def shown_commands() -> list[tuple[str, str]]:
    """(page:line, command) for every ``rmaat`` command in a shell block or inline code.
    docs/bad_inputs.md is left out: its commands are wrong on purpose (some do not parse), and
    tests/test_bad_inputs.py runs each of them and renders that page from what they print."""
    found = []
    for page in PAGES:
        if page.name == "bad_inputs.md":
            continue
        text = page.read_text()
        in_shell = False
        for n, line in enumerate(text.splitlines(), 1):
            fence = line.strip()
            if fence.startswith("```"):
                in_shell = fence in ("```bash", "```sh")
                continue
            where = f"{page.relative_to(REPO)}:{n}"
            if in_shell:
                cmd = line.strip()
                if cmd.startswith("rmaat "):
                    found.append((where, cmd))
            else:
                found += [(where, c) for c in re.findall(r"`(rmaat [^`]+)`", line)]
    return found


COMMANDS = shown_commands()


def _tokens(command: str) -> list[str]:
    code = re.sub(r"\s+#\s.*$", "", command).rstrip("\\").strip()
    code = re.split(r"\s(?:>|\||&&|;)\s?", code)[0]
    tokens = shlex.split(code, posix=True)[1:]
    # placeholders as pages write them: A|B (alternatives), [--x ...] (optional parts), ...
    out = []
    for t in tokens:
        t = t.strip("[]")
        if not t or t in ("...", "…"):
            continue
        out.append(t.split("|")[0] if not t.startswith("tcp") else t)
    return out


def test_the_pages_show_commands():
    assert len(COMMANDS) > 30, "the README and docs quote almost no rmaat command"


@pytest.mark.parametrize("where, command", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_every_shown_command_parses(where, command):
    from rmaat_app.cli import cli

    args = _tokens(command)
    ctx = click.Context(cli, info_name="rmaat")
    cmd, path = cli, []
    while isinstance(cmd, click.Group) and args and not args[0].startswith("-"):
        name = args.pop(0)
        sub = cmd.get_command(ctx, name)
        assert sub is not None, f"{where}: `{command}`: no command {' '.join([*path, name])!r}"
        cmd, path = sub, [*path, name]
        ctx = click.Context(cmd, info_name=name, parent=ctx)
    assert "--help" in cmd.get_help_option_names(ctx) or cmd.get_help_option(ctx) is not None
    if args == ["--help"]:
        return
    known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
    for token in args:
        if token.startswith("--"):
            flag = token.split("=", 1)[0]
            assert flag in known, f"{where}: `{command}`: {flag} is not an option of rmaat {' '.join(path)}"
    try:
        cmd.make_context(" ".join(["rmaat", *path]), list(args), resilient_parsing=True)
    except click.UsageError as exc:
        pytest.fail(f"{where}: `{command}` does not parse: {exc.format_message()}")


def test_help_of_every_verb(run_cli):
    from rmaat_app.cli import COMMANDS as VERBS

    out = run_cli("--help")
    assert out.returncode == 0 and "explicit flag" in out.stdout
    for verb in VERBS:
        proc = run_cli(verb, "--help")
        assert proc.returncode == 0, f"rmaat {verb} --help failed:\n{proc.stderr}"


def test_quoted_bench_and_script_files_exist():
    for page in PAGES:
        text = page.read_text()
        for rel in set(re.findall(r"\b((?:bench|scripts|notebooks|tests)/[\w./-]+\.py)\b", text)):
            assert (REPO / rel).is_file(), f"{page.name} quotes {rel}, which does not exist"
