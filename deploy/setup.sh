#!/usr/bin/env bash
# Installs whatever Cohort needs and is missing on a Debian machine, quietly and only when absent,
# then builds the release binary (.build/release/cohort) and writes the demo datasets' manifests.
#   deploy/setup.sh            (as root, or with sudo available)
# Environment: COHORT_DATA_ROOT (default ~/.local/share/cohort/datasets).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

# Debian packages: C libraries the Swift targets link, the compiler the transport benchmark uses,
# Python for the test helpers, and the demo datasets.
apt_packages=(
    libzmq3-dev libsqlite3-dev libopenblas-dev zlib1g-dev pkg-config gcc
    python3 python3-pip
    dataset-fashion-mnist fortunes-zh
)
missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then command -v sudo >/dev/null || die "not root and no sudo: install ${missing[*]}"; sudo=sudo; fi
    say "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq || die "apt-get update failed"
    # Through env, so that sudo's env_reset does not drop it (a debconf question would hang unseen).
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
fi

# Python packages the tests use (deploy/requirements.txt).
if ! python3 -c 'import numpy, safetensors' 2>/dev/null; then
    say "installing Python packages: $(tr '\n' ' ' < deploy/requirements.txt)"
    python3 -m pip install -q -r deploy/requirements.txt 2>/dev/null \
        || python3 -m pip install -q --break-system-packages -r deploy/requirements.txt \
        || die "pip could not install deploy/requirements.txt"
    python3 -c 'import numpy, safetensors' || die "numpy and safetensors are still not importable after pip install"
fi

# sudo's secure_path drops a toolchain installed under /opt or /usr/share: look there too.
if ! command -v swift >/dev/null; then
    for dir in /opt/swift/usr/bin /usr/share/swift/usr/bin /usr/local/swift/usr/bin; do
        [ -x "$dir/swift" ] && { PATH="$dir:$PATH"; export PATH; break; }
    done
fi
command -v swift >/dev/null || die "the Swift 6 toolchain is not on PATH and not in /opt/swift (install it: https://swift.org/install/linux/)"
say "building the release binary (swift build -c release)"
build_log="$(mktemp "${TMPDIR:-/tmp}/cohort-build.XXXXXX")"
if ! swift build -c release > "$build_log" 2>&1; then
    grep -E 'error' "$build_log" | head -n 20 >&2 || tail -n 30 "$build_log" >&2
    die "the release build failed (the whole log: $build_log)"
fi
grep -E 'warning:|Build' "$build_log" | grep -v '^\[' | tail -n 3 || true
rm -f "$build_log"
[ -x .build/release/cohort ] || die "the release build made no .build/release/cohort"

data_root="${COHORT_DATA_ROOT:-$HOME/.local/share/cohort/datasets}"
if [ -x deploy/datasets/install.sh ]; then
    deploy/datasets/install.sh "$data_root" || die "could not install the demo datasets into $data_root"
fi
say "ready: .build/release/cohort ($(.build/release/cohort --version))"
