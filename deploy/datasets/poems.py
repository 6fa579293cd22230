#!/usr/bin/env python3
"""Builds the `poems` dataset from Debian's fortunes-zh: Tang (tang300) and Song (song100) poems.

Usage: poems.py FORTUNES_DIR OUT_DIR

Each fortune record (records are separated by lines holding only `%`) is one poem: its title
line, its author line and its verses, with the files' ANSI colour escapes removed and trailing
spaces stripped from each line. Poems are numbered in file order (tang300 first, then
song100); every 10th poem (numbers 9, 19, 29, ...) is held out as the test split. train.txt
and test.txt hold their poems each followed by one blank line. vocabulary.json is built from
train.txt only: a JSON array whose entry 0 is U+FFFD (the unknown symbol: test characters
that never occur in train map to it), then every distinct character of train.txt in
code-point order. Standard library only; the output is byte-identical on every run.
"""
import json, os, re, sys

ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def poems(path):
    with open(path, encoding="utf-8") as f:
        text = ESCAPE.sub("", f.read())
    records, current = [], []
    for line in text.split("\n"):
        if line.strip() == "%":
            records.append(current)
            current = []
        else:
            current.append(line.rstrip())
    records.append(current)
    for lines in records:
        while lines and not lines[0]:
            lines.pop(0)
        while lines and not lines[-1]:
            lines.pop()
        if lines:
            yield "\n".join(lines)


def write(path, text):
    tmp = f"{path}.{os.getpid()}.tmp"  # two installs at once (demo and tests) must not share it
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.replace(tmp, path)


def main():
    source, out = sys.argv[1], sys.argv[2]
    all_poems = []
    for name in ("tang300", "song100"):
        path = os.path.join(source, name)
        if not os.path.exists(path):
            sys.exit(f"poems.py: {path} is missing; install Debian's fortunes-zh (apt-get install fortunes-zh)")
        all_poems.extend(poems(path))
    if len(all_poems) < 100:
        sys.exit(f"poems.py: found only {len(all_poems)} poems under {source}; is fortunes-zh complete?")
    train = [p for i, p in enumerate(all_poems) if i % 10 != 9]
    test = [p for i, p in enumerate(all_poems) if i % 10 == 9]
    train_text = "".join(p + "\n\n" for p in train)
    test_text = "".join(p + "\n\n" for p in test)
    symbols = ["\ufffd"] + sorted(set(train_text) - {"\ufffd"})
    vocabulary = "[\n" + ",\n".join("  " + json.dumps(s, ensure_ascii=False) for s in symbols) + "\n]\n"
    os.makedirs(out, exist_ok=True)
    write(os.path.join(out, "train.txt"), train_text)
    write(os.path.join(out, "test.txt"), test_text)
    write(os.path.join(out, "vocabulary.json"), vocabulary)
    seen = set(train_text)
    unseen = sum(1 for c in test_text if c not in seen)
    print(f"poems: {len(train)} train / {len(test)} test poems, {len(train_text)} / {len(test_text)} characters, "
          f"vocabulary {len(symbols)} (incl. unknown), {unseen} test characters unseen in train")


if __name__ == "__main__":
    main()
