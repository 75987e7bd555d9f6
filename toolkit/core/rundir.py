"""Atomic outputs: nothing that looks complete is ever half-written.

Files are written to a temporary name in the same directory and renamed; a run directory is
built under a hidden temporary name (`.NAME.PID.XXXX.partial`) and renamed into place only when
the stage finished. A killed process (SIGKILL, power loss) can leave such a hidden directory
behind; the next `atomic_dir` for the same name removes it once its owner process is gone.
Results get the usual permissions (the umask's), not the 0600/0700 of temporary files.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from toolkit.core.errors import UserError

_STARTED = time.time()  # leftovers without an owner pid older than this process are stale


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _cannot_write(path: Path, exc: OSError) -> UserError:
    reason = exc.strerror or type(exc).__name__
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
    return UserError(f"cannot write {path}: {reason}{where}")


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _cannot_write(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _cannot_write(path, exc) from exc
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path (same suffix, same dir) for a library to write into; rename on success."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    except OSError as exc:
        raise _cannot_write(path, exc) from exc
    os.close(fd)
    os.unlink(tmp)  # libraries (keras.save) want to create the file themselves
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.unlink(tmp)


def check_run_dir(final: Path, force: bool) -> None:
    """Fail early (before any work) when a run directory exists and --force was not given."""
    if final.exists() and not final.is_dir():
        raise UserError(f"{final} exists and is not a directory; choose another output path")
    if final.exists() and not force:
        raise UserError(f"{final} already exists; pass --force to replace it")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def stale_leftovers(final: Path) -> list[Path]:
    """Hidden `.NAME.<pid>.*.partial` / `.NAME.old-<pid>` siblings whose process is gone.

    Only names matching our own pattern are considered; a leftover without a pid (the older
    `.NAME.XXXX.partial` form) counts as stale when it is older than this process.
    """
    stale = []
    head = f".{final.name}."
    for sibling in final.parent.glob(f"{glob.escape(head)}*"):  # a run may be `a[1]`
        rest = sibling.name[len(head) :]
        if rest.endswith(".partial"):
            owner = rest[: -len(".partial")].split(".", 1)[0]
        elif rest.startswith("old-"):
            owner = rest[len("old-") :]
        else:
            continue
        if owner.isdigit():
            pid = int(owner)
            if pid != os.getpid() and not _pid_alive(pid):
                stale.append(sibling)
        elif rest.endswith(".partial") and sibling.stat().st_mtime < _STARTED:
            stale.append(sibling)
    return sorted(stale)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_dir(final: Path, *, force: bool = False) -> Iterator[Path]:
    """Build a directory under a hidden temp name; swap it into place only on success."""
    final = Path(final)
    check_run_dir(final, force)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        for leftover in stale_leftovers(final):
            _remove(leftover)
        work = Path(
            tempfile.mkdtemp(
                prefix=f".{final.name}.{os.getpid()}.", suffix=".partial", dir=final.parent
            )
        )
    except OSError as exc:
        raise _cannot_write(final, exc) from exc
    try:
        yield work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    os.chmod(work, 0o777 & ~_UMASK)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(work, final)
    if old is not None:
        _remove(old)
