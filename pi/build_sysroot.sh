#!/usr/bin/env bash
# Build, once, an emulated Raspberry Pi OS 64-bit userland: Debian bookworm arm64 python3.11 plus
# aarch64 wheels (numpy, Pillow, ai-edge-litert, onnxruntime) and a static qemu-aarch64.
#
#   pi/build_sysroot.sh [CACHE_DIR]      default: $PI_CACHE or ~/.cache/keras-edge/pi-sysroot
#
# Prints CACHE_DIR, which holds root/ (the arm64 sysroot), site/ (unpacked wheels) and
# qemu-aarch64. Idempotent and cached: CACHE_DIR/.complete holds the build key (this script's
# hash + wheel pins); when it matches nothing is done. The build happens in CACHE_DIR.partial
# and is renamed into place only after python3.11 imported the wheels under qemu, so an
# interrupted build never looks complete. No root needed: a private apt (own lists, cache and
# dpkg status; the host's are untouched) downloads .debs and `dpkg -x` unpacks them.
# Exit status 75: a prerequisite is unreachable (Debian archive, PyPI, apt/dpkg): callers may
# skip. Anything else is a real failure.
#
# Why qemu comes from Debian trixie (10.0) and not bookworm's qemu-user-static (7.2): 7.2
# segfaults inside ai-edge-litert >= 2.2's Interpreter() (2.1.0 and older run); 10.0 runs the
# current release, the one `pip install ai-edge-litert` gives a Pi. PI_QEMU=/path overrides it.
# Environment: PYTHON (a python with pip for `pip download`; default .venv/bin/python, else
# python3), PI_WHEELS (default: numpy, pillow, ai-edge-litert, onnxruntime pinned to PYTHON's
# versions, so x86 and arm64 run the same releases), PI_DEBIAN_MIRROR, PI_QEMU.
set -euo pipefail

CACHE="${1:-${PI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/keras-edge/pi-sysroot}}"
CACHE="$(realpath -m "$CACHE")"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then  # the project's venv: its versions are the ones to pin
  PYTHON=python3
  [[ -x "$REPO/.venv/bin/python" ]] && PYTHON="$REPO/.venv/bin/python"
fi
MIRROR="${PI_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# What a python3.11 that runs needs (Debian bookworm = Raspberry Pi OS 64-bit; Python 3.11.2).
PACKAGES=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib python3.11 libc6 zlib1g
  libexpat1 libffi8 libssl3 libstdc++6 libgcc-s1 libbz2-1.0 liblzma5 libsqlite3-0 libncursesw6
  libtinfo6 libreadline8 libuuid1 libnsl2 libtirpc3 libdb5.3 libgssapi-krb5-2 libkrb5-3
  libk5crypto3 libcom-err2 libkrb5support0 libkeyutils1 libcrypt1 media-types)
# glibc 2.36 on bookworm: any manylinux tag up to 2_36 runs there.
PLATFORMS=(manylinux2014_aarch64)
for v in 17 24 26 27 28 31 34 35 36; do PLATFORMS+=("manylinux_2_${v}_aarch64"); done

unavailable() { echo "pi sysroot: unavailable: $*" >&2; exit 75; }
say() { echo "pi sysroot: $*" >&2; }

pinned() {  # numpy==X pillow==Y ... as installed for PYTHON (unpinned when absent)
  "$PYTHON" - <<'PY'
from importlib import metadata
for dist in ("numpy", "pillow", "ai-edge-litert", "onnxruntime"):
    try:
        print(f"{dist}=={metadata.version(dist)}")
    except metadata.PackageNotFoundError:
        print(dist)
PY
}

read -r -a WHEELS <<<"${PI_WHEELS:-$(pinned | tr '\n' ' ')}"
KEY="$( (cat "$0"; printf '%s\n' "${WHEELS[@]}" "${PI_QEMU:-}") | sha256sum | cut -c1-16)"
done_already() { [[ -f "$CACHE/.complete" && "$(cat "$CACHE/.complete")" == "$KEY" ]]; }
if done_already; then echo "$CACHE"; exit 0; fi

command -v apt-get >/dev/null && command -v dpkg >/dev/null ||
  unavailable "apt-get and dpkg are needed (a Debian or Ubuntu host)"
[[ -f $KEYRING ]] || unavailable "$KEYRING is missing (apt-get install debian-archive-keyring)"
"$PYTHON" -m pip --version >/dev/null 2>&1 || unavailable "$PYTHON has no pip"
HOST_ARCH="$(dpkg --print-architecture)"
[[ -n "${PI_QEMU:-}" || $HOST_ARCH == amd64 ]] ||
  unavailable "host is $HOST_ARCH: set PI_QEMU to a static qemu-aarch64 for it"

mkdir -p "$(dirname "$CACHE")"
exec 9>"$CACHE.lock"
flock 9  # one build at a time; a caller that waited finds the finished cache
if done_already; then echo "$CACHE"; exit 0; fi

WORK="$CACHE.partial"
rm -rf "$WORK"
mkdir -p "$WORK"/{debs,wheels,root,site,qemu}

private_apt() {  # private_apt NAME ARCH "SOURCES LINE" -> sets APT=(apt-get ...) for that setup
  local dir="$WORK/apt-$1"
  mkdir -p "$dir"/{lists/partial,cache/archives/partial,sources.d}
  touch "$dir/status"
  echo "$3" >"$dir/sources.list"
  APT=(apt-get -q "-oAPT::Architecture=$2" "-oAPT::Architectures=$2"
    "-oDir::State::Lists=$dir/lists" "-oDir::State::status=$dir/status"
    "-oDir::Cache=$dir/cache" "-oDir::Etc::SourceList=$dir/sources.list"
    "-oDir::Etc::SourceParts=$dir/sources.d" -oAPT::Sandbox::User=root -oDebug::NoLocking=1)
  "${APT[@]}" update >>"$WORK/apt.log" 2>&1 || true  # exits 0 on fetch failures: check files
  compgen -G "$dir/lists/*_Packages*" >/dev/null || {
    tail -3 "$WORK/apt.log" >&2; unavailable "cannot reach the Debian archive ($MIRROR)"; }
}
failed() { echo "pi sysroot: FAILED: $1" >&2; tail -5 "$WORK/$2" >&2; exit 1; }

say "fetching Debian bookworm arm64 package lists from $MIRROR"
private_apt arm64 arm64 "deb [arch=arm64 signed-by=$KEYRING] $MIRROR bookworm main"
say "downloading ${#PACKAGES[@]} arm64 packages"
(cd "$WORK/debs" && "${APT[@]}" download "${PACKAGES[@]}") >>"$WORK/apt.log" 2>&1 ||
  failed "apt-get download of arm64 packages (the archive answered)" apt.log
for deb in "$WORK"/debs/*.deb; do dpkg -x "$deb" "$WORK/root"; done

if [[ -n "${PI_QEMU:-}" ]]; then
  cp "$PI_QEMU" "$WORK/qemu-aarch64"
else
  say "downloading Debian trixie's static qemu-user (amd64)"
  private_apt amd64 amd64 "deb [arch=amd64 signed-by=$KEYRING] $MIRROR trixie main"
  (cd "$WORK/qemu" && "${APT[@]}" download qemu-user) >>"$WORK/apt.log" 2>&1 ||
    failed "apt-get download qemu-user (trixie)" apt.log
  dpkg -x "$WORK"/qemu/qemu-user_*.deb "$WORK/qemu/x"
  cp "$WORK/qemu/x/usr/bin/qemu-aarch64" "$WORK/qemu-aarch64"
fi

say "downloading aarch64 wheels: ${WHEELS[*]}"
PLATFORM_ARGS=()
for p in "${PLATFORMS[@]}"; do PLATFORM_ARGS+=(--platform "$p"); done
"$PYTHON" -m pip download --quiet --only-binary=:all: --python-version 3.11 --implementation cp \
  "${PLATFORM_ARGS[@]}" -d "$WORK/wheels" "${WHEELS[@]}" >"$WORK/pip.log" 2>&1 || {
  grep -q -E "No matching distribution|ResolutionImpossible" "$WORK/pip.log" &&
    failed "no aarch64 wheel for ${WHEELS[*]}" pip.log
  tail -3 "$WORK/pip.log" >&2; unavailable "pip download of aarch64 wheels failed (PyPI)"; }
for whl in "$WORK"/wheels/*.whl; do "$PYTHON" -m zipfile -e "$whl" "$WORK/site"; done

say "checking python3.11 and the wheels under $("$WORK/qemu-aarch64" --version | head -1)"
env -i PATH=/usr/bin:/bin PYTHONPATH="$WORK/site" PYTHONNOUSERSITE=1 \
  "$WORK/qemu-aarch64" -L "$WORK/root" "$WORK/root/usr/bin/python3.11" -c \
  "import platform, numpy, PIL.Image, ai_edge_litert.interpreter, onnxruntime; \
print(platform.machine(), \
platform.python_version(), 'numpy', numpy.__version__)" >&2

{ ls "$WORK/wheels"; "$WORK/qemu-aarch64" --version | head -1; } >"$WORK/versions.txt"
rm -rf "$WORK"/debs "$WORK"/wheels "$WORK"/qemu "$WORK"/apt-*  # root/, site/, qemu suffice
echo "$KEY" >"$WORK/.complete"
rm -rf "$CACHE"
mv "$WORK" "$CACHE"
say "ready: $CACHE ($(du -sh "$CACHE" | cut -f1))"
echo "$CACHE"
