#!/usr/bin/env bash
# The main job on one machine: set up whatever is missing, build, and run the local demo.
#   deploy/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/setup.sh
echo
echo "== transport smoke run: hello, 256 MiB of shards zero-copy over CURVE, bad input refused"
.build/release/cohort smoke --mib 256
echo
echo "== local training: the compute core on scikit-learn's digits (MLP, 1,500 steps)"
.build/release/cohort train deploy/datasets/examples/digits-mlp.yaml --out "${TMPDIR:-/tmp}/cohort-demo-checkpoints"
