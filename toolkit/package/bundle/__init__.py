"""Bundle templates (run.py, README.md.tmpl) and the file-level helpers the package stage uses.

The templates ship inside the package, so an installed CLI builds the same bundles as a source
checkout. Everything that makes a bundle reproducible lives here: sha256s, paths that cannot
leave the bundle, and a zip with fixed timestamps, order and permissions.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import string
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

from toolkit.core.errors import UserError

TEMPLATES = Path(__file__).resolve().parent
RUN_SCRIPT = TEMPLATES / "run.py"
README_TEMPLATE = TEMPLATES / "README.md.tmpl"
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold: no build time leaks in


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def safe_relpath(bundle: Path, rel: str) -> str:
    """`rel` as a POSIX path inside `bundle`; a UserError for anything that would escape it."""
    path = Path(rel)
    if not rel or path.is_absolute() or ".." in path.parts or "\\" in rel:
        raise UserError(f"bundle path {rel!r} is not a plain relative path inside the bundle")
    resolved = (bundle / path).resolve()
    root = bundle.resolve()
    if resolved != root and root not in resolved.parents:
        raise UserError(f"bundle path {rel!r} resolves outside the bundle ({resolved})")
    return path.as_posix()


def bundle_files(bundle: Path) -> list[str]:
    """Every regular file under `bundle` as sorted POSIX relative paths; links are refused."""
    found = []
    for root, dirs, files in os.walk(bundle):
        dirs.sort()
        for name in [*dirs, *files]:
            full = Path(root) / name
            if full.is_symlink():
                raise UserError(f"bundle holds a symbolic link {full}; bundles are plain files")
        found += [(Path(root) / f).relative_to(bundle).as_posix() for f in files]
    return sorted(found)


def deterministic_zip(bundle: Path, zip_path: Path, prefix: str) -> Path:
    """Zip `bundle` under `prefix/`: sorted entries, fixed dates and permissions, so the same
    files always give byte-identical zips (on the same zlib). Written atomically."""
    from toolkit.core.rundir import atomic_path

    with atomic_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w") as zf:
        for rel in bundle_files(bundle):
            info = zipfile.ZipInfo(f"{prefix}/{rel}", date_time=ZIP_EPOCH)
            mode = 0o755 if rel == "run.py" else 0o644
            info.external_attr = (0o100000 | mode) << 16
            info.create_system = 3  # unix, whatever the host
            info.compress_type = zipfile.ZIP_DEFLATED
            with (bundle / rel).open("rb") as fh:
                zf.writestr(info, fh.read(), compresslevel=9)
    return zip_path


def load_run_module(path: Path = RUN_SCRIPT) -> ModuleType:
    """Import a bundle's run.py, so expected outputs come from the exact code that checks them."""
    spec = importlib.util.spec_from_file_location(f"_keras_edge_bundle_run_{id(path)}", path)
    if spec is None or spec.loader is None:  # pragma: no cover - a file we ship
        raise UserError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render_readme(values: dict[str, Any]) -> str:
    """Fill README.md.tmpl; every $placeholder must be given (a missing one is a bug)."""
    template = string.Template(README_TEMPLATE.read_text(encoding="utf-8"))
    return template.substitute({k: str(v) for k, v in values.items()})
