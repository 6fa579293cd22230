#!/usr/bin/env bash
# Installs Cohort's demo datasets under a data root, one NAME/dataset.yaml each (docs/datasets.md):
#   fashion-mnist  Debian's dataset-fashion-mnist, used in place (gzip IDX), nothing copied
#   digits         scikit-learn's digits, vendored here (digits/), split 80/20 by the manifest
#   poems          Tang and Song poems from Debian's fortunes-zh, 10% held out, character vocabulary
#
# Usage: deploy/datasets/install.sh [DATA_ROOT]
#   DATA_ROOT defaults to $COHORT_DATA_ROOT, else ~/.local/share/cohort/datasets.
# Needs: bash, coreutils (sha256sum), python3 (standard library only),
#        apt packages dataset-fashion-mnist and fortunes-zh.
# Idempotent: running it again rewrites the same bytes. Fails loudly on anything missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="${1:-${COHORT_DATA_ROOT:-$HOME/.local/share/cohort/datasets}}"
fashion_dir="${COHORT_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
fortunes_dir="${COHORT_FORTUNES_DIR:-/usr/share/games/fortunes}"

die() { echo "install.sh: $*" >&2; exit 1; }

command -v sha256sum >/dev/null || die "sha256sum is missing (apt-get install coreutils)"
command -v python3 >/dev/null || die "python3 is missing (apt-get install python3)"

# content_hash DIR ROLE=FILE ...: the manifest's content hash (docs/datasets.md, ContentHash.swift):
# sha256 over the lines "HEX ROLE\n" of each file in the canonical role order given by the caller.
content_hash() {
    local dir="$1"; shift
    local lines="" pair role file
    for pair in "$@"; do
        role="${pair%%=*}"; file="${pair#*=}"
        case "$file" in /*) ;; *) file="$dir/$file" ;; esac
        [[ -f "$file" ]] || die "cannot hash $file: no such file"
        lines+="$(sha256sum < "$file" | cut -d' ' -f1) $role"$'\n'
    done
    printf 'sha256:%s' "$(printf '%s' "$lines" | sha256sum | cut -d' ' -f1)"
}

# write_file PATH: stdin to PATH via a temporary file, so a reader never sees half a manifest.
write_file() {
    local tmp="$1.tmp.$$"
    cat > "$tmp"
    mv -f "$tmp" "$1"
}

mkdir -p "$root" || die "cannot create the data root $root"
root="$(cd "$root" && pwd)"

# --- fashion-mnist ---------------------------------------------------------------------------
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
    [[ -f "$fashion_dir/$f" ]] || die "$fashion_dir/$f is missing; install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)"
done
mkdir -p "$root/fashion-mnist"
hash="$(content_hash "$fashion_dir" \
    train.features=train-images-idx3-ubyte.gz train.labels=train-labels-idx1-ubyte.gz \
    test.features=t10k-images-idx3-ubyte.gz test.labels=t10k-labels-idx1-ubyte.gz)"
write_file "$root/fashion-mnist/dataset.yaml" <<YAML
# Fashion-MNIST (Zalando Research, MIT licence), from Debian's dataset-fashion-mnist.
# Written by deploy/datasets/install.sh; see docs/datasets.md.
format: idx
description: Fashion-MNIST, 28x28 grey images of clothing, 10 classes, 60000 train / 10000 test
source: Debian package dataset-fashion-mnist
license: MIT
train:
  features: $fashion_dir/train-images-idx3-ubyte.gz
  labels: $fashion_dir/train-labels-idx1-ubyte.gz
test:
  features: $fashion_dir/t10k-images-idx3-ubyte.gz
  labels: $fashion_dir/t10k-labels-idx1-ubyte.gz
shape: [28, 28]
classes: 10
scale: 1/255
content-hash: $hash
YAML
echo "fashion-mnist: $root/fashion-mnist/dataset.yaml"

# --- digits ----------------------------------------------------------------------------------
vendored="$here/digits/digits.csv.gz"
[[ -f "$vendored" ]] || die "$vendored is missing from the checkout"
mkdir -p "$root/digits"
cmp -s "$vendored" "$root/digits/digits.csv.gz" || cp -f "$vendored" "$root/digits/digits.csv.gz"
hash="$(content_hash "$root/digits" train.file=digits.csv.gz)"
write_file "$root/digits/dataset.yaml" <<YAML
# scikit-learn's digits (BSD-3-Clause; see deploy/datasets/digits/README.md), 1797 8x8 images.
# No official split: the test split is 20% of the rows chosen by a permutation seeded with 1797.
# Written by deploy/datasets/install.sh; see docs/datasets.md.
format: csv
description: optical recognition of handwritten digits, 8x8 counts 0..16, 10 classes
source: scikit-learn sklearn/datasets/data/digits.csv.gz
license: BSD-3-Clause
train:
  file: digits.csv.gz
split:
  test-fraction: 0.2
  seed: 1797
label-column: last
header: absent
shape: [8, 8]
classes: 10
scale: 1/16
content-hash: $hash
YAML
echo "digits: $root/digits/dataset.yaml"

# --- poems -----------------------------------------------------------------------------------
python3 "$here/poems.py" "$fortunes_dir" "$root/poems" || die "building the poems dataset failed (is fortunes-zh installed? apt-get install fortunes-zh)"
hash="$(content_hash "$root/poems" train.file=train.txt test.file=test.txt vocabulary=vocabulary.json)"
write_file "$root/poems/dataset.yaml" <<YAML
# Tang (300) and Song (100) poems from Debian's fortunes-zh, one record per poem (title, author,
# verses); every 10th poem is the test split. Vocabulary: U+FFFD (unknown) then every character
# of train.txt. Written by deploy/datasets/install.sh (poems.py); see docs/datasets.md.
format: text
description: Tang and Song poems, Chinese characters
source: Debian package fortunes-zh (tang300, song100)
train:
  file: train.txt
test:
  file: test.txt
vocabulary: vocabulary.json
content-hash: $hash
YAML
echo "poems: $root/poems/dataset.yaml"
