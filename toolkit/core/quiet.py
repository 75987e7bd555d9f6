"""Third-party chatter is captured, counted and kept off a user's terminal.

TensorFlow prints CUDA probing lines ("Could not find cuda drivers", "failed call to cuInit")
from C++ before its log level applies; LiteRT prints "INFO: Created TensorFlow Lite XNNPACK
delegate" on every interpreter; ONNX Runtime's quantizer logs "Please consider to run
pre-processing"; onnxconverter-common and scikit-learn raise Python warnings. Mixed into our
own progress lines they look like errors. `captured()` takes them all: C++ and anything else
writing to file descriptor 2 goes to a temp file, Python warnings are recorded, while our own
rich console keeps writing to the real terminal. The CLI wraps each command in it and ends
with one line ("12 library warnings hidden; --debug shows them"); `--debug` (or
KERAS_EDGE_DEBUG=1) captures nothing, so everything shows as it happens.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from typing import IO, Any

_MAX_KEPT = 1 << 20  # characters of hidden text kept to replay when a command crashes


class Hidden:
    """What `captured()` kept off the terminal in this process: a count, and the text."""

    def __init__(self) -> None:
        self.count = 0
        self.text: list[str] = []
        self._kept = 0

    def add(self, lines: list[str]) -> None:
        lines = [line for line in lines if line.strip()]
        self.count += len(lines)
        for line in lines:
            if self._kept < _MAX_KEPT:
                self.text.append(line)
                self._kept += len(line)

    def reset(self) -> None:
        self.__init__()

    def summary(self) -> str | None:
        """The closing line a command prints, or None when nothing was hidden."""
        if not self.count:
            return None
        noun = "warning" if self.count == 1 else "warnings"
        return f"{self.count} library {noun} hidden; --debug shows them"


HIDDEN = Hidden()
_state = {"debug": False, "depth": 0}


def set_debug(on: bool) -> None:
    """`--debug`: capture nothing from now on (every library line shows, live)."""
    _state["debug"] = bool(on)


def debug() -> bool:
    return bool(_state["debug"] or os.environ.get("KERAS_EDGE_DEBUG"))


def _terminal(saved_fd: int) -> IO[str] | None:
    """A text stream on the real stderr for our own console while fd 2 is captured; None when
    sys.stderr is not fd 2 (pytest's capsys, click's CliRunner): it is untouched by dup2."""
    try:
        if sys.stderr.fileno() != 2:
            return None
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return None
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    return open(os.dup(saved_fd), "w", buffering=1, encoding=encoding, errors="replace")


@contextlib.contextmanager
def _console_to(stream: IO[str]) -> Iterator[None]:
    """Point our rich console at `stream` (progress bars, tables, 'skipped' lines stay seen)."""
    from toolkit.core.progress import console

    before = getattr(console, "_file", None)  # None: it follows sys.stderr
    console.file = stream
    try:
        yield
    finally:
        console.file = before  # type: ignore[assignment]


def _format(caught: list[warnings.WarningMessage]) -> list[str]:
    return [
        warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line).rstrip()
        for w in caught
    ]


@contextlib.contextmanager
def captured() -> Iterator[None]:
    """Capture library output (fd 2 and Python warnings) for the duration; count it in HIDDEN.

    Re-entrant: an inner capture (a converter inside a CLI command) adds to the outer one. A
    crash that is not a user error replays what was hidden, so a bug report has the context.
    """
    if debug() or _state["depth"]:
        yield
        return
    _state["depth"] += 1
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(2)
    sink = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    terminal = _terminal(saved)
    original = sys.stderr
    # sys.stderr on fd 2 follows the dup2; a stand-in (CliRunner, pytest) is swapped for the
    # sink while our console keeps writing to it.
    swap = (
        None
        if terminal is not None
        else open(  # noqa: SIM115
            os.dup(sink.fileno()), "w", buffering=1, encoding="utf-8", errors="replace"
        )
    )
    caught: list[warnings.WarningMessage] = []
    crashed = False
    try:
        os.dup2(sink.fileno(), 2)
        if swap is not None:
            sys.stderr = swap
        with _console_to(terminal or original), warnings.catch_warnings(record=True) as caught:
            yield
    except BaseException as exc:
        from toolkit.core.errors import GateFailed, UserError

        crashed = not isinstance(exc, (UserError, GateFailed, KeyboardInterrupt, SystemExit))
        raise
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        sys.stderr = original
        os.dup2(saved, 2)
        os.close(saved)
        for stream in (terminal, swap):
            if stream is not None:
                stream.close()
        sink.seek(0)
        text = sink.read().decode("utf-8", errors="replace")
        sink.close()
        lines = [*text.splitlines(), *_format(caught)]
        HIDDEN.add(lines)
        _state["depth"] -= 1
        if crashed and lines:
            sys.stderr.write("".join(f"{line}\n" for line in lines))


def muted_stderr() -> Any:
    """The converter's and delegates' C++ lines: captured (see `captured`)."""
    return captured()


def import_tensorflow_quietly() -> None:
    """Import TF with its start-up probe lines discarded (not counted: they are not about the
    user's model), and its Python loggers at ERROR."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            with contextlib.suppress(ImportError):  # a real import error resurfaces later, loudly
                import tensorflow as tf

                tf.config.list_physical_devices()  # the CUDA probe ("cuInit") happens here
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    import logging

    # The converter's deprecation chatter ("consider providing the trackable_obj") is about
    # TF internals the user cannot act on.
    logging.getLogger("absl").setLevel(logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
