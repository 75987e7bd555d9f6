"""The `keras-edge` command: a thin face over the stage functions.

One error policy for every command: a `UserError` or a usage error (unknown option, missing
argument, bad value) prints one line on stderr and exits 2, a `GateFailed` exits 1, `--debug`
shows the traceback (or click's own usage text), anything else is a bug and keeps its
traceback. Commands live in toolkit/commands/ and are registered in `COMMAND_MODULES` only.
Nothing here imports TensorFlow: `keras-edge --help` stays fast.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

import typer

from toolkit.core.errors import GateFailed, UserError

# The one place commands are registered: each module has `register(app)`.
COMMAND_MODULES = (
    "toolkit.cli.commands.train_cmd",
    "toolkit.cli.commands.catalog_cmd",
    "toolkit.cli.commands.predict_cmd",
    "toolkit.cli.commands.export_cmd",
    "toolkit.cli.commands.tune_cmd",
    "toolkit.cli.commands.optimize_cmd",
    "toolkit.cli.commands.package_cmd",
    "toolkit.cli.commands.check_cmd",
    "toolkit.cli.commands.serve_cmd",
)


class _State:
    debug = bool(os.environ.get("KERAS_EDGE_DEBUG"))


def _err(message: str) -> None:
    sys.stderr.write(f"error: {message}\n")


def guarded(fn: Callable[..., Any], *, heavy: bool = True) -> Callable[..., Any]:
    """Wrap a command so user errors become one line and an exit code.

    `heavy` commands need TensorFlow: import it up front without its C++ start-up noise.
    Library warnings and C++ log lines are captured while the command runs (`core.quiet`);
    a command that finishes says how many in one line, unless `--debug` showed them.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from toolkit.core import quiet

        try:
            if heavy and not _State.debug:
                quiet.import_tensorflow_quietly()
            quiet.HIDDEN.reset()
            with quiet.captured():
                result = fn(*args, **kwargs)
            _print_hidden(quiet.HIDDEN.summary())
            return result
        except (UserError, GateFailed) as err:
            if _State.debug:
                raise
            _err(str(err).splitlines()[0] if str(err) else type(err).__name__)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            _err("interrupted; nothing half-written was left behind")
            raise typer.Exit(130) from None

    return wrapper


def _print_hidden(summary: str | None) -> None:
    if summary:
        from toolkit.core.progress import console

        console.print(f"[dim]{summary}[/]", highlight=False, soft_wrap=True)


app = typer.Typer(
    name="keras-edge",
    help="From data to a Keras model running on a phone or a Raspberry Pi, int8 accuracy proven "
    "in the runtime that runs it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from toolkit import __version__

        typer.echo(f"keras-edge-toolkit {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: bool = typer.Option(
        False,
        "--debug",
        help="Show full tracebacks for errors, and every library warning and log line.",
    ),
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
    max_model_bytes: str | None = typer.Option(
        None,
        "--max-model-bytes",
        metavar="SIZE",
        help="Refuse model files larger than this (e.g. 300M; default 2G, or "
        "$KERAS_EDGE_MAX_MODEL_BYTES).",
    ),
) -> None:
    if debug:
        from toolkit.core.quiet import set_debug

        _State.debug = True
        set_debug(True)
    if max_model_bytes is not None:  # checked (one-line error) where a model is loaded
        os.environ["KERAS_EDGE_MAX_MODEL_BYTES"] = max_model_bytes


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app, guarded)


def _click_errors() -> Any:
    """typer >= 0.20 vendors click as `typer._click`; older typer uses the click package."""
    try:
        from typer._click import exceptions
    except ImportError:  # pragma: no cover - older typer
        from click import exceptions
    return exceptions


def _command_path(err: Any, args: list[str]) -> str:
    """`keras-edge CMD` for the help hint; the parser leaves no context on some errors."""
    ctx = getattr(err, "ctx", None)
    if ctx is not None:
        return str(ctx.command_path)
    names = {info.name for info in app.registered_commands if info.name}
    command = next((a for a in args if a in names), None)
    return f"keras-edge {command}" if command else "keras-edge"


def usage_line(err: Any, args: list[str]) -> str:
    """A usage error as one line: what is wrong, and where the help for that command is."""
    message = " ".join(str(err.format_message()).split()).rstrip(".") or type(err).__name__
    if message[:1].isupper() and not message[1:2].isupper():
        message = message[0].lower() + message[1:]
    return f"{message}; see '{_command_path(err, args)} --help'"


def main(args: list[str] | None = None) -> None:
    """Console-script entry point; exits with the command's exit code.

    Runs typer without its standalone mode so usage errors reach us instead of typer's
    multi-line box: a CI log or a wrapper script gets one greppable `error:` line.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TF's C++ chatter is not for users
    errors = _click_errors()
    no_args_help = getattr(errors, "NoArgsIsHelpError", ())  # click < 8.2 exits 0 itself
    try:
        code = app(args=args, prog_name="keras-edge", standalone_mode=False)
    except no_args_help as err:  # bare `keras-edge`: the help (rich prints it)
        text = str(err.format_message())
        if text.strip():
            typer.echo(text)
        code = err.exit_code
    except errors.ClickException as err:
        if _State.debug:
            err.show()
        else:
            _err(usage_line(err, sys.argv[1:] if args is None else args))
        code = err.exit_code
    except typer.Abort:
        _err("interrupted; nothing half-written was left behind")
        code = 130
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
