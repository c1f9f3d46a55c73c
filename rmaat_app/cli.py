"""The ``rmaat`` command: one lazy group, one subcommand per stage entry point.

Each subcommand lives in its own stage and is imported only when it is invoked, so
``rmaat train`` never imports brian2 and ``rmaat simulate`` never imports torch.
Errors a user can fix (:class:`~astro_rmaat.errors.RmaatError`) are printed as one line
on stderr and exit with status 2, without a traceback.
"""

from __future__ import annotations

import errno
import importlib
import sys

import click

from astro_rmaat.cli_args import usage_message
from astro_rmaat.errors import RmaatError

#: subcommand -> "module:attribute" of a click command (typer apps: typer.main.get_command)
COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("astro_sim.cli:simulate_command", "simulate a neuron–astrocyte model (Brian2)"),
    "sweep": ("astro_sim.sweep_cli:sweep_command", "run a grid of simulations (serial, processes or Dask)"),
    "fit": ("distill.cli:fit_command", "fit saturating macro models to a trace; write retention.json"),
    "sensitivity": ("distill.cli:sensitivity_command", "how macro parameters and the schedule move across a sweep"),
    "generate": ("rmaat_model.data.cli:generate_command", "generate ListOps or Pathfinder in the official LRA layout"),
    "train": ("rmaat_model.cli:train_command", "train RMAAT or a baseline on an LRA task"),
    "evaluate": ("rmaat_model.cli:evaluate_command", "re-evaluate a finished training run"),
    "pipeline": ("rmaat_app.pipeline:pipeline_command", "simulate -> fit -> train, and write a report"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        target, help_text = COMMANDS[name]
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                reason = str(exc)    # the except block's name is unbound once it ends

                @click.command(name=name, help=f"{help_text} (not available: {reason})")
                def unavailable() -> None:
                    raise click.ClickException(f"'rmaat {name}' is not available in this installation: {reason}")
                return unavailable
            raise
        return getattr(module, attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # List the commands without importing them (help must stay fast and brian2/torch-free).
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_text) for name, (_, help_text) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="astro-rmaat")
def cli() -> None:
    """astro-rmaat: neuron–astrocyte LTP (Brian2) -> macro model (lmfit) -> RMAAT (PyTorch).

    Every verb resolves its configuration by one rule: an explicit flag (e.g. --model)
    beats --set KEY=VALUE, which beats --config FILE, which beats the built-in defaults.
    --show-defaults prints the result.
    """


#: OSError numbers that mean "this location cannot be written/read", i.e. the user's to fix
FILESYSTEM_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
                               errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
                               errno.ENAMETOOLONG, errno.EMLINK, errno.EFBIG})


def main(argv: list[str] | None = None) -> None:
    try:
        from rmaat_model.allocator import enabled, tune_malloc
        if enabled():   # glibc's thresholds fixed for this process (rmaat_model/allocator.py)
            tune_malloc()
        cli.main(args=argv, prog_name="rmaat", standalone_mode=False)
    except RmaatError as exc:
        _fail(str(exc))
    except OSError as exc:
        if exc.errno not in FILESYSTEM_ERRNOS:
            raise
        from astro_rmaat.runs import describe_os_error
        _fail(describe_os_error(None, exc, action="use"))
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:   # click's own parse errors: a value, an option or a verb
        _fail(usage_line(exc, sys.argv[1:] if argv is None else list(argv)))
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


def usage_line(exc: click.UsageError, argv: list[str]) -> str:
    """A click usage error as one line: the command it concerns, click's message (which names
    the value and what was expected), and where the options are listed. Click's own rendering
    is the usage block, a hint and the message, four lines. Some of click's parser errors carry
    no context; their command is then read from the verbs ``argv`` starts with."""
    if exc.ctx is not None:
        path = exc.ctx.command_path
    else:   # the verbs argv starts with, as far as they name commands (``generate listops``)
        ctx, cmd, words = click.Context(cli, info_name="rmaat"), cli, ["rmaat"]
        for word in argv:
            sub = cmd.get_command(ctx, word) if isinstance(cmd, click.Group) else None
            if sub is None:
                break
            ctx, cmd = click.Context(sub, info_name=word, parent=ctx), sub
            words.append(word)
        path = " ".join(words)
    return usage_message(path, exc.format_message())


def _fail(message: str) -> None:
    """One line on stderr, exit 2. Run directories this process created and did not finish
    are removed, so the corrected command starts afresh (a resumed run's directory stays)."""
    from astro_rmaat.runs import discard_new_unfinished
    discard_new_unfinished()
    click.echo(f"error: {message}", err=True)
    sys.exit(2)
