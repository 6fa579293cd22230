#!/usr/bin/env python3
"""Reference losses for the `poems` dataset, to judge a character model trained by Cohort.

Usage: Benchmarks/kn3gram.py DATA_ROOT      (reads DATA_ROOT/poems/train.txt and test.txt)

Prints, in nats per character of test.txt (every character counts, newlines included):
  - unigram cross-entropy: test.txt scored under train.txt's character frequencies with
    add-one smoothing over the vocabulary (train's characters plus one unknown symbol);
    also the entropy of train.txt's own unigram distribution, for reference;
  - interpolated Kneser-Ney 3-gram (Chen & Goodman 1998, one absolute discount per order,
    D = n1 / (n1 + 2 n2)), fitted on train.txt and scored on test.txt, its lowest order
    interpolated with the uniform distribution over the vocabulary so that characters never
    seen in training still get probability.
A transformer that beats the 3-gram on test.txt has learnt more than local character statistics.
Pure Python, standard library only.
"""
import math
import sys
from collections import Counter, defaultdict

UNKNOWN = "\ufffd"


def discount(counts):
    n = Counter(counts.values())
    n1, n2 = n.get(1, 0), n.get(2, 0)
    return n1 / (n1 + 2 * n2) if n1 + n2 > 0 else 0.5


class KneserNey3:
    def __init__(self, text, vocabulary_size):
        self.v = vocabulary_size
        tri = Counter(zip(text, text[1:], text[2:]))
        # Continuation counts: in how many distinct left contexts each shorter n-gram occurs.
        bi_cont = Counter((b, c) for (_, b, c) in tri)
        uni_cont = Counter(c for (_, c) in Counter(zip(text, text[1:])))
        self.d3, self.d2, self.d1 = discount(tri), discount(bi_cont), discount(uni_cont)
        self.tri = tri
        self.tri_context = Counter()       # c(u v .)
        self.tri_types = Counter()         # N1+(u v .)
        for (a, b, _), count in tri.items():
            self.tri_context[(a, b)] += count
            self.tri_types[(a, b)] += 1
        self.bi_cont = bi_cont
        self.bi_context = Counter()        # N1+(. v .)
        self.bi_types = Counter()          # N1+(v .) among continuation bigrams
        for (b, _), count in bi_cont.items():
            self.bi_context[b] += count
            self.bi_types[b] += 1
        self.uni_cont = uni_cont
        self.uni_total = sum(uni_cont.values())

    def p1(self, c):
        types = len(self.uni_cont)
        return (max(self.uni_cont.get(c, 0) - self.d1, 0) / self.uni_total
                + self.d1 * types / self.uni_total / self.v)

    def p2(self, b, c):
        total = self.bi_context.get(b, 0)
        if total == 0:
            return self.p1(c)
        return (max(self.bi_cont.get((b, c), 0) - self.d2, 0) / total
                + self.d2 * self.bi_types[b] / total * self.p1(c))

    def p3(self, a, b, c):
        total = self.tri_context.get((a, b), 0)
        if total == 0:
            return self.p2(b, c)
        return (max(self.tri.get((a, b, c), 0) - self.d3, 0) / total
                + self.d3 * self.tri_types[(a, b)] / total * self.p2(b, c))


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: kn3gram.py DATA_ROOT   (run deploy/datasets/install.sh DATA_ROOT first)")
    root = sys.argv[1]
    try:
        train = open(f"{root}/poems/train.txt", encoding="utf-8").read()
        test = open(f"{root}/poems/test.txt", encoding="utf-8").read()
    except OSError as error:
        sys.exit(f"kn3gram.py: {error}; run deploy/datasets/install.sh {root} first")
    seen = set(train)
    test = "".join(c if c in seen else UNKNOWN for c in test)
    vocabulary = len(seen | {UNKNOWN})

    counts = Counter(train)
    total = len(train)
    corpus_entropy = -sum(n / total * math.log(n / total) for n in counts.values())
    unigram = -sum(math.log((counts.get(c, 0) + 1) / (total + vocabulary)) for c in test) / len(test)

    model = KneserNey3(train, vocabulary)
    nll = 0.0
    for i, c in enumerate(test):
        if i == 0:
            p = model.p1(c)
        elif i == 1:
            p = model.p2(test[0], c)
        else:
            p = model.p3(test[i - 2], test[i - 1], c)
        nll -= math.log(p)
    kn = nll / len(test)

    unseen = sum(1 for c in test if c == UNKNOWN)
    print(f"poems: train {total} chars, test {len(test)} chars ({unseen} unseen in train), vocabulary {vocabulary} incl. unknown")
    print(f"{'model':<44} {'nats/char':>10}")
    print(f"{'unigram entropy of train.txt (corpus)':<44} {corpus_entropy:>10.3f}")
    print(f"{'unigram cross-entropy on test.txt':<44} {unigram:>10.3f}")
    print(f"{'Kneser-Ney 3-gram on test.txt (val loss)':<44} {kn:>10.3f}")
    print(f"discounts D1={model.d1:.3f} D2={model.d2:.3f} D3={model.d3:.3f}")


if __name__ == "__main__":
    main()
