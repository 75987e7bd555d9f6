"""Import TensorFlow without its start-up chatter on a user's terminal.

TensorFlow prints CUDA probing lines ("Could not find cuda drivers", "failed call to cuInit")
from C++ before its log level applies; on a CPU-only machine they are noise that looks like
an error. The CLI imports TF through here once, with stderr's file descriptor muted.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def muted_stderr() -> Iterator[None]:
    """Silence C++ logging written straight to fd 2 (converter and delegate banners).

    Python exceptions still carry their messages; set KERAS_EDGE_DEBUG=1 to see everything.
    """
    if os.environ.get("KERAS_EDGE_DEBUG"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def import_tensorflow_quietly() -> None:
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
