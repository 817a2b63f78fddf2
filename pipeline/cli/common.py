"""The command line's conventions: the Typer app, the options every command shares, one
``error:`` line and a documented exit code per failure, and the script's entry point."""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

from edge_runtime.errors import CodedError, Terminated, exit_on_sigterm, filesystem_error
from pipeline.config.schema import Config

app = typer.Typer(
    help="Take a Keras model from training to a device: train → prune → quantize → convert "
         "→ verify → bench → report.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

# The one source of defaults: the config file's sections (`pipeline run`). Each command's
# options show and use the same values, so a command and its config field cannot disagree.
DEFAULTS = Config()


# --quiet before the command: this invocation's, read by every command's setup.
_GLOBAL = {"quiet": False}


def _print_version(value: bool) -> None:
    if value:
        from pipeline import __version__

        typer.echo(f"pipeline {__version__}")
        raise typer.Exit(0)


@app.callback()
def _global_options(
    verbose: Annotated[bool, typer.Option(
        "--verbose", help="Same as --verbose after the command.")] = False,
    quiet: Annotated[bool, typer.Option(
        "--quiet", help="Same as --quiet after the command.")] = False,
    version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_print_version, help="Print the version and exit.")] = False,
) -> None:
    """Take a Keras model from training to a device: train → prune → quantize → convert → verify → bench → report."""
    _GLOBAL["quiet"] = quiet
    if verbose:
        _show_native_output()


RunOption = Annotated[Optional[Path], typer.Option(
    "--run", help="Run directory to work on (default: runs/latest).")]
UnsafeOption = Annotated[bool, typer.Option(
    "--unsafe", help="Trust code inside the model (Lambda layers, SavedModel graphs) for this "
                     "command only; a run directory never grants it.")]
QuietOption = Annotated[bool, typer.Option(
    "--quiet", help="Print only results and errors: no progress, epoch or info lines.")]
VerboseOption = Annotated[bool, typer.Option(
    "--verbose", help="Also show what TensorFlow, LiteRT and the converters write to stderr "
                      "(hidden by default).")]


def _listed(help_text: str, default: str | None = None):
    """A list option: repeat it, or separate values with commas (or both)."""
    shown = f" (default: {default})" if default is not None else ""
    return typer.Option(help=f"{help_text} Repeatable; commas also separate values{shown}.",
                        show_default=False)


SshOption = Annotated[Optional[list[str]], _listed("Extra ssh option, e.g. -i=KEY or UserKnownHostsFile=FILE.")]
RemoteDirOption = Annotated[str, typer.Option(help="Where the device keeps its edge-runtime venv and jobs.")]


def _items(values: list[str] | None, option: str, *, keyed: bool = False) -> list[str]:
    """The values of a list option, split at commas. For KEY=VALUE options (``keyed``) a comma
    starts a new item only before another KEY=, so a value may hold commas. An option given
    with nothing in it is a mistake, not a request for the default."""
    separator = r",(?=\s*[\w.\-]+=)" if keyed else ","
    items = [item.strip() for value in values or [] for item in re.split(separator, value) if item.strip()]
    if values and not items:
        from pipeline.core.errors import UsageError

        raise UsageError(f"{option} was given without a value")
    return items


def _show_native_output() -> None:
    from edge_runtime.quiet import VERBOSE_ENV

    os.environ[VERBOSE_ENV] = "1"


def _setup(quiet: bool = False, verbose: bool = False) -> None:
    if verbose:
        _show_native_output()
    else:  # before anything imports TensorFlow: its C++ banner is not for a CLI user
        from pipeline.core.backend import quiet_tensorflow_logs

        quiet_tensorflow_logs()
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr, force=True)
    logging.getLogger("pipeline").setLevel(logging.WARNING if quiet else logging.INFO)
    for chatty in ("tf2onnx", "absl", "tensorflow"):
        logging.getLogger(chatty).setLevel(logging.ERROR)


def command(name: str | None = None):
    """Register a command with every command's conventions: --quiet/--verbose, --unsafe for
    this command only, and one ``error:`` line with a documented exit code, not a traceback."""
    def register(function):
        @functools.wraps(function)
        def conventions(*args, **kwargs):
            kwargs["quiet"] = kwargs.get("quiet", False) or _GLOBAL["quiet"]
            _setup(kwargs["quiet"], kwargs.get("verbose", False))
            with _errors_to_exit_codes(), _trust(kwargs.get("unsafe", False)):
                return function(*args, **kwargs)
        return app.command(name)(conventions)
    return register


@contextlib.contextmanager
def _errors_to_exit_codes() -> Iterator[None]:
    """One clear line on stderr and a documented exit code instead of a traceback."""
    try:
        yield
    except CodedError as exc:  # the pipeline's, and the device package's met in verify/bench
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except OSError as exc:  # a path too long, a full disk, a permission: the user's to fix
        known = filesystem_error(exc)
        if known is None:
            raise
        typer.echo(f"error: {known[0]}", err=True)
        raise typer.Exit(known[1]) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    except Terminated:
        typer.echo("terminated (SIGTERM)", err=True)
        raise typer.Exit(Terminated.exit_code) from None


def _trust(unsafe: bool):
    from pipeline.core.modelio import trusting_model_code

    return trusting_model_code(unsafe)


def _ssh_options(values: list[str]) -> list[str]:
    options = []
    for value in values:
        if value.startswith("-i="):
            options += ["-i", value[3:]]
        else:
            options += ["-o", value]
    return options


def main() -> None:
    """The ``pipeline`` script: Click's own usage errors (unknown option, a value that is not a
    number) become one ``error:`` line and exit 2, like every other mistake."""
    exit_on_sigterm()
    try:
        code = app(standalone_mode=False)
    except Exception as exc:
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            raise  # not Click's: a bug, keep the traceback
        if type(exc).__name__ == "NoArgsIsHelpError":
            typer.echo(exc.ctx.get_help() if getattr(exc, "ctx", None) else exc.format_message())
            raise SystemExit(0) from None
        message = " ".join(exc.format_message().split())
        command = getattr(getattr(exc, "ctx", None), "command_path", "pipeline")
        typer.echo(f"error: {command}: {message}", err=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise SystemExit(130) from None
    raise SystemExit(code if isinstance(code, int) else 0)
