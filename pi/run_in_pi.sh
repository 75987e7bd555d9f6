#!/usr/bin/env bash
# Run a bundle's run.py on an emulated Raspberry Pi OS 64-bit (Debian bookworm arm64 python3.11
# under qemu-aarch64), building the cached sysroot first when needed.
#
#   pi/run_in_pi.sh BUNDLE_DIR [run.py arguments...]      e.g. pi/run_in_pi.sh runs/x/bundles/raspberry-pi --selftest
#
# Input paths in the arguments are used as given (the emulated process sees the host's files);
# run.py itself runs from BUNDLE_DIR. PI_SYSROOT=DIR skips the build step and uses DIR.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
if [[ $# -lt 1 || ! -f "$1/run.py" ]]; then
  echo "usage: $0 BUNDLE_DIR [run.py args...]  (BUNDLE_DIR must hold run.py)" >&2
  exit 2
fi
BUNDLE="$(cd "$1" && pwd)"
shift
SYSROOT="${PI_SYSROOT:-$("$HERE/build_sysroot.sh")}"
# The emulated python sees only its sysroot's stdlib and the aarch64 wheels: nothing of the host.
exec env -i PATH=/usr/bin:/bin HOME="${HOME:-/tmp}" LANG=C.UTF-8 PYTHONNOUSERSITE=1 \
  PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$SYSROOT/site" \
  "$SYSROOT/qemu-aarch64" -L "$SYSROOT/root" "$SYSROOT/root/usr/bin/python3.11" "$BUNDLE/run.py" "$@"
