#!/usr/bin/env python3
"""PyTorch CPU reference for cohort-bench-compute: the same two models and steps.

Prints one JSON object per line: {"model": "mlp"|"transformer", "threads": N, "ms": median}.
Usage: python3 Benchmarks/torch_bench.py [--threads 1,2] [--mlp-steps 50] [--tf-steps 10]
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.fc = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q = q.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        k = k.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        v = v.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).contiguous().view(B, T, C))
        x = x + self.fc2(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))
        return x


class GPT(nn.Module):
    """Same shape as Cohort's transformer: learned positions, pre-LN, untied head without bias."""

    def __init__(self, vocab, context, width, layers, heads):
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(context, width)
        self.blocks = nn.ModuleList([Block(width, heads) for _ in range(layers)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)

    def forward(self, idx, targets):
        B, T = idx.shape
        x = self.tok(idx) + self.pos(torch.arange(T))
        for b in self.blocks:
            x = b(x)
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def timed(step, warmup, steps):
    # At least `warmup` steps and 300 ms, as cohort-bench-compute does.
    start = time.perf_counter()
    done = 0
    while done < warmup or time.perf_counter() - start < 0.3:
        step()
        done += 1
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def bench_mlp(steps):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(128, 784)
    y = torch.randint(0, 10, (128,))

    def step():
        opt.zero_grad(set_to_none=False)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return timed(step, 5, steps)


def bench_transformer(steps):
    torch.manual_seed(0)
    model = GPT(256, 128, 128, 4, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)
    tokens = torch.randint(0, 256, (32, 129))
    idx, tgt = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()

    def step():
        opt.zero_grad(set_to_none=False)
        model(idx, tgt).backward()
        opt.step()

    return timed(step, 2, steps)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--mlp-steps", type=int, default=50)
    ap.add_argument("--tf-steps", type=int, default=10)
    args = ap.parse_args()
    for n in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(n)
        print(json.dumps({"model": "mlp", "threads": n, "ms": bench_mlp(args.mlp_steps)}), flush=True)
        print(json.dumps({"model": "transformer", "threads": n, "ms": bench_transformer(args.tf_steps)}), flush=True)


if __name__ == "__main__":
    main()
