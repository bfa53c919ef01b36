"""The ``runicorn`` command line.

Commands live in one module per concern under ``runicorn.cli`` and are imported only
when invoked, so ``runicorn --help`` and the library stay light.  To add a command,
add one line to ``COMMANDS``: ``name -> "module:attribute"``.  Command modules share
:mod:`runicorn.cli.options` (the storage root, durations) and :mod:`runicorn.cli.output`
(tables, JSON) and never import this module, which imports them.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

from runicorn._version import __version__
from runicorn.cli.options import with_storage_option

COMMANDS: dict[str, str] = {
    # store (issue: foundation)
    "stats": "runicorn.cli.store_cmds:stats",
    "verify": "runicorn.cli.store_cmds:verify",
    "gc": "runicorn.cli.store_cmds:gc",
    "pin": "runicorn.cli.store_cmds:pin",
    "unpin": "runicorn.cli.store_cmds:unpin",
    "refs": "runicorn.cli.store_cmds:refs",
    "quickstart": "runicorn.cli.quickstart:quickstart",
    # sync (issue: manifest-based incremental sync)
    "generate-manifest": "runicorn.cli.sync_cmds:generate_manifest",
    "sync": "runicorn.cli.sync_cmds:sync",
    # artifacts (issue: Runicorn.toml)
    "bind": "runicorn.cli.artifact_cmds:bind",
    "unbind": "runicorn.cli.artifact_cmds:unbind",
    "fetch": "runicorn.cli.artifact_cmds:fetch",
    "path": "runicorn.cli.artifact_cmds:path_cmd",
    "status": "runicorn.cli.artifact_cmds:status",
    # assets: snapshots, restore, runs
    "snapshot": "runicorn.cli.assets_cmds:snapshot",
    "restore": "runicorn.cli.assets_cmds:restore",
    "export": "runicorn.cli.assets_cmds:export",
    "runs": "runicorn.cli.assets_cmds:runs",
    "delete-run": "runicorn.cli.assets_cmds:delete_run",
    # team remotes: push / pull to S3, shared directories, SFTP
    "remote": "runicorn.cli.remote_cmds:remote",
    "push": "runicorn.cli.remote_cmds:push",
    "pull": "runicorn.cli.remote_cmds:pull",
    # inspect: what the store holds (read only)
    "ls": "runicorn.cli.inspect_cmds:ls",
    "show": "runicorn.cli.inspect_cmds:show",
    "diff": "runicorn.cli.inspect_cmds:diff",
    "du": "runicorn.cli.inspect_cmds:du",
}
# Commands that never touch the storage root, so they take no ``--storage`` of their own.
_NO_STORAGE = frozenset({"generate-manifest"})


class UserError(click.ClickException):
    """A usage error (unknown option or command, missing or bad argument), shown as every
    other user error is: one line ``error: ...`` on stderr, exit status 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _one_line(exc: click.UsageError) -> UserError:
    """click's usage error as a :class:`UserError`, naming the command and where help is."""
    where = exc.ctx.command_path if exc.ctx is not None else "runicorn"
    return UserError(f"{where}: {exc.format_message()} (see `{where} --help`)")


def _help_and_exit(exc: click.exceptions.NoArgsIsHelpError) -> NoReturn:
    """A group given no command prints its help on stdout and succeeds, as ``--help`` does."""
    assert exc.ctx is not None
    click.echo(exc.ctx.get_help())
    raise click.exceptions.Exit(0)


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use.

    Exit status is one rule for the whole CLI: 0 on success (and for a group given no
    command, which prints its help), 1 for every user error, including click's usage
    errors (which click itself would exit 2 for), 130 when interrupted.  Errors are one
    line on stderr.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.exceptions.NoArgsIsHelpError as exc:
            _help_and_exit(exc)
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = COMMANDS.get(cmd_name)
        if spec is None:
            return super().get_command(ctx, cmd_name)
        from runicorn._lazy import resolve

        cmd: click.Command = resolve(spec)
        return cmd if cmd_name in _NO_STORAGE else with_storage_option(cmd)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            from runicorn.names import did_you_mean

            ctx.fail(f"No such command {name!r}{did_you_mean(name, self.list_commands(ctx))}")
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        from runicorn.errors import RunicornError, cli_spelling

        try:
            with cli_spelling():  # library messages name --flags, not keyword arguments
                return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError as exc:
            _help_and_exit(exc)
        except click.UsageError as exc:
            raise _one_line(exc) from None
        except RunicornError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except BrokenPipeError as exc:
            if not _stdout_reader_gone():
                click.echo(f"error: {exc.strerror or exc}", err=True)  # a connection, not our output
                ctx.exit(1)
            _stop_writing_stdout()
            ctx.exit(_BROKEN_PIPE_STATUS)
        except OSError as exc:
            # Missing files, permissions, full disks: user-facing, so one line, no traceback.
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"error: {where}{exc.strerror or exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


# What a shell reports for a program its output pipe stopped (128 + SIGPIPE).
_BROKEN_PIPE_STATUS = 141


def _stdout_reader_gone() -> bool:
    """Whether standard output is a pipe whose reading end was closed (``runicorn ls | head``):
    the kernel flags such a write end with POLLERR."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), 0)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _stop_writing_stdout() -> None:
    """Point standard output at /dev/null: what is still buffered would otherwise fail
    again, loudly, when Python flushes it at exit."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="runicorn")
@click.option(
    "--storage",
    type=click.Path(file_okay=False),
    envvar="RUNICORN_DIR",
    help="Storage root (default: $RUNICORN_DIR, else ~/.runicorn).",
)
@click.pass_context
def main(ctx: click.Context, storage: str | None) -> None:
    """Runicorn: a local-first, content-addressed store for ML files."""
    source = ctx.get_parameter_source("storage")
    given = {
        click.core.ParameterSource.COMMANDLINE: "--storage",
        click.core.ParameterSource.ENVIRONMENT: "RUNICORN_DIR",
    }.get(source)  # type: ignore[arg-type]
    ctx.obj = {"storage": storage, "storage_source": given if storage else None}


def run(prog_name: str | None = None) -> None:
    """The ``runicorn`` program: :func:`main`, then exit without Python's last garbage
    collections.

    At exit, Python clears every module and collects what they held, object by object:
    for the 170-odd modules of ``runicorn stats`` that measured 40-50 ms, several times
    the command's own work.  The process is ending and the system takes its memory back
    at once, so everything still alive is frozen out of those collections first.  Exit
    otherwise goes on as before (atexit hooks such as open_store's, flushing, clearing
    the modules); only ``__del__`` of objects kept alive by reference cycles alone no
    longer runs, and commands close their stores themselves.  Not part of :func:`main`:
    tests and library callers invoke that in a process that goes on.
    """
    import gc

    try:
        main(prog_name=prog_name)
    finally:
        gc.freeze()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
