#!/usr/bin/env python3
"""Float64 NumPy references for CohortCompute's forward kernels and tiny models.

Run from the package root:  python3 Tests/Fixtures/compute/make_fixtures.py
Writes Tests/Fixtures/compute/reference.json (inputs rounded to float32 first, so that the
Swift side, which reads them as Float, starts from exactly the same numbers).
"""
import json
import math
import os

import numpy as np

rng = np.random.default_rng(20261129)


def f32(a):
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def flat(a):
    return [float(v) for v in np.asarray(a, dtype=np.float64).ravel()]


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(x):
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def layer_norm(x, g, b, eps=1e-5):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def attention(qkv, heads):
    B, T, C3 = qkv.shape
    C = C3 // 3
    D = C // heads
    q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]
    out = np.zeros((B, T, C))
    mask = np.triu(np.ones((T, T), dtype=bool), 1)
    for h in range(heads):
        s = slice(h * D, (h + 1) * D)
        att = q[..., s] @ k[..., s].transpose(0, 2, 1) / math.sqrt(D)
        att = np.where(mask, -np.inf, att)
        out[..., s] = softmax(att) @ v[..., s]
    return out


def cross_entropy_rows(logits, targets):
    return -log_softmax(logits)[np.arange(len(targets)), targets]


fx = {}

x = f32(np.concatenate([rng.normal(0, 2, 45), [-12.0, -6.0, -0.5, 0.0, 0.5, 6.0, 12.0]]))
fx["activations"] = {"x": flat(x), "relu": flat(np.maximum(x, 0)), "gelu": flat(gelu_tanh(x)), "tanh": flat(np.tanh(x))}

s = f32(rng.normal(0, 3, (3, 21)))
s[1, 5] = 40.0  # a large logit: stability
fx["softmax"] = {"rows": 3, "cols": 21, "x": flat(s), "softmax": flat(softmax(s)), "logSoftmax": flat(log_softmax(s))}

lg = f32(rng.normal(0, 2, (6, 7)))
tg = rng.integers(0, 7, 6)
p = softmax(lg)
onehot = np.eye(7)[tg]
fx["crossEntropy"] = {"rows": 6, "cols": 7, "logits": flat(lg), "targets": [int(t) for t in tg],
                      "rowLoss": flat(cross_entropy_rows(lg, tg)), "gradientMean": flat((p - onehot) / 6),
                      "hits": [int(np.argmax(lg[i]) == tg[i]) for i in range(6)]}

xl = f32(rng.normal(1, 3, (4, 20)))
gl = f32(rng.normal(1, 0.3, 20))
bl = f32(rng.normal(0, 0.3, 20))
fx["layerNorm"] = {"rows": 4, "cols": 20, "x": flat(xl), "gamma": flat(gl), "beta": flat(bl), "y": flat(layer_norm(xl, gl, bl))}

a = f32(rng.normal(0, 1, (3, 5)))
b = f32(rng.normal(0, 1, (5, 4)))
fx["matmul"] = {"m": 3, "k": 5, "n": 4, "a": flat(a), "b": flat(b), "c": flat(a @ b)}

qkv = f32(rng.normal(0, 1, (2, 5, 24)))
fx["attention"] = {"batch": 2, "length": 5, "width": 8, "heads": 2, "qkv": flat(qkv), "out": flat(attention(qkv, 2))}

# Tiny MLP 6-5-4-3 (tanh), parameters in Cohort's flat order: layers.i.weight (out,in), layers.i.bias.
dims = [6, 5, 4, 3]
params, Ws = [], []
for i in range(3):
    W = f32(rng.normal(0, 0.7, (dims[i + 1], dims[i])))
    bb = f32(rng.normal(0, 0.2, dims[i + 1]))
    Ws.append((W, bb))
    params += flat(W) + flat(bb)
X = f32(rng.normal(0, 1, (7, 6)))
Y = rng.integers(0, 3, 7)
h = X
for i, (W, bb) in enumerate(Ws):
    h = h @ W.T + bb
    if i < 2:
        h = np.tanh(h)
rows = cross_entropy_rows(h, Y)
fx["mlp"] = {"inputs": 6, "hidden": [5, 4], "classes": 3, "activation": "tanh", "parameters": params,
             "features": flat(X), "labels": [int(v) for v in Y], "lossSum": float(rows.sum()),
             "correct": int((h.argmax(1) == Y).sum())}

# Tiny transformer: V=7, context 6, C=8, 2 layers, 2 heads; flat order as TransformerNetwork.
V, T, C, L, H = 7, 6, 8, 2, 2
P = {}
order = []


def param(name, shape, kind):
    if kind == "ones":
        v = f32(1 + rng.normal(0, 0.1, shape))
    elif kind == "zeros":
        v = f32(rng.normal(0, 0.1, shape))
    else:
        v = f32(rng.normal(0, 0.3, shape))
    P[name] = v
    order.append(name)


param("embedding.token.weight", (V, C), "w")
param("embedding.position.weight", (T, C), "w")
for l in range(L):
    pre = f"layers.{l}."
    param(pre + "ln1.weight", (C,), "ones"); param(pre + "ln1.bias", (C,), "zeros")
    param(pre + "attn.qkv.weight", (3 * C, C), "w"); param(pre + "attn.qkv.bias", (3 * C,), "zeros")
    param(pre + "attn.proj.weight", (C, C), "w"); param(pre + "attn.proj.bias", (C,), "zeros")
    param(pre + "ln2.weight", (C,), "ones"); param(pre + "ln2.bias", (C,), "zeros")
    param(pre + "mlp.fc.weight", (4 * C, C), "w"); param(pre + "mlp.fc.bias", (4 * C,), "zeros")
    param(pre + "mlp.proj.weight", (C, 4 * C), "w"); param(pre + "mlp.proj.bias", (C,), "zeros")
param("norm.weight", (C,), "ones"); param("norm.bias", (C,), "zeros")
param("head.weight", (V, C), "w")

B, length = 3, 5
tokens = rng.integers(0, V, (B, length + 1))
inp, tgt = tokens[:, :-1], tokens[:, 1:]
x = P["embedding.token.weight"][inp] + P["embedding.position.weight"][np.arange(length)]
for l in range(L):
    pre = f"layers.{l}."
    ln1 = layer_norm(x, P[pre + "ln1.weight"], P[pre + "ln1.bias"])
    q = ln1 @ P[pre + "attn.qkv.weight"].T + P[pre + "attn.qkv.bias"]
    x = x + attention(q, H) @ P[pre + "attn.proj.weight"].T + P[pre + "attn.proj.bias"]
    ln2 = layer_norm(x, P[pre + "ln2.weight"], P[pre + "ln2.bias"])
    hdn = gelu_tanh(ln2 @ P[pre + "mlp.fc.weight"].T + P[pre + "mlp.fc.bias"])
    x = x + hdn @ P[pre + "mlp.proj.weight"].T + P[pre + "mlp.proj.bias"]
logits = layer_norm(x, P["norm.weight"], P["norm.bias"]) @ P["head.weight"].T
lr = cross_entropy_rows(logits.reshape(-1, V), tgt.reshape(-1))
fx["transformer"] = {"vocabulary": V, "context": T, "width": C, "layers": L, "heads": H, "length": length,
                     "parameters": sum((flat(P[n]) for n in order), []), "names": order,
                     "tokens": [int(t) for t in tokens.ravel()], "lossSum": float(lr.sum()),
                     "correct": int((logits.reshape(-1, V).argmax(1) == tgt.reshape(-1)).sum()),
                     "count": B * length}

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference.json")
with open(out, "w") as f:
    json.dump(fx, f, indent=1)
print("wrote", out)
