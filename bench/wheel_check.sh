#!/usr/bin/env bash
# Build the wheel, install it into a scratch venv (reusing the project's installed packages so
# nothing is downloaded twice), and use the installed CLI from a directory outside the repo:
# proves models/ and export/ ship as package data.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$repo/.venv/bin/python" -m build --wheel --outdir "$work/dist" "$repo" >/dev/null
wheel="$(ls "$work"/dist/*.whl)"
echo "built $(basename "$wheel")"
python3 -m venv --system-site-packages "$work/venv"
# the dependencies come from the project venv's site-packages via a .pth file
site="$("$repo/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
"$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
  | xargs -I{} sh -c "echo '$site' > {}/project-deps.pth"
"$work/venv/bin/pip" install --quiet --no-deps "$wheel"
cd "$work"
"$work/venv/bin/python" - <<'PY'
import toolkit, pathlib
where = pathlib.Path(toolkit.__file__).parent
assert "site-packages" in str(where), where
assert (where / "_builtin" / "models" / "digits-cnn.yaml").is_file()
print("package data:", sorted(p.name for p in (where / "_builtin" / "models").iterdir()))
PY
"$work/venv/bin/keras-edge" builders >/dev/null && echo "keras-edge builders: ok"
"$work/venv/bin/keras-edge" train digits-cnn --epochs 1 --runs-dir "$work/runs"
test -f "$work/runs/digits-cnn/model.keras" && echo "wheel check passed"
