#!/usr/bin/env bash
# Every test: set up whatever is missing, build the release binary the end-to-end tests drive,
# then run the whole suite. CI (.ci/run) runs exactly this.
#   deploy/test.sh [extra swift test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/setup.sh
echo "[test] OpenBLAS core type: ${OPENBLAS_CORETYPE:-auto-detected (unset)}"
swift test "$@"
