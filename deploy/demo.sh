#!/usr/bin/env bash
# The main job on one machine: set up whatever is missing, build, and run the local demo.
#   deploy/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/setup.sh
echo
echo "== transport smoke run: hello, 256 MiB of shards zero-copy over CURVE, bad input refused"
.build/release/cohort smoke --mib 256
