#!/usr/bin/env python3
"""Train three small byte-level decoders on CPU and export them for Apus (issue 7).

    (a) softmax  - causal softmax attention (RoPE, QK-norm, hybrid-norm, SwiGLU)
    (b) sigmoid  - the same decoder, attention sigma(s + b) with b = -ln(n_train)
    (c) aaren    - Aaren layers (learned query per layer and head, prefix scan),
                   a depthwise causal conv before each layer for order

Same data, same tokenizer (raw bytes, vocab 256), same budget and seed for all.

    Models/train/setup.sh                       # venv .venv-train with pinned JAX
    .venv-train/bin/python Models/train/train_decoders.py --minutes 20
    .venv-train/bin/python Models/train/train_decoders.py --minutes 4 --label short-run
    .venv-train/bin/python Models/train/train_decoders.py --check-only   # re-check exports

The data is the Debian package `fortunes` (pinned version and .deb sha256),
fetched with `apt-get download` and unpacked with `dpkg-deb -x`.  Every step
is seeded; with --steps N instead of --minutes the run is reproducible step
for step (--minutes calibrates N from the measured step time and records it).

For each model it writes Models/trained/<id>/{model.safetensors,config.json,
heldout_logits.safetensors,sample.txt} and Models/train/results.json.
Checks (exit 1 if one fails): a float64 numpy reference forward (written
independently of the JAX code) matches JAX for every model, and for Aaren the
recurrent step (constant-size state) matches the parallel prefix scan.
"""

import argparse
import glob
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.dirname(HERE)
DATA_DIR = os.path.join(HERE, ".data")
OUT_DIR = os.path.join(MODELS, "trained")

DEB_PACKAGE = "fortunes"
DEB_VERSION = "1:1.99.1-7.3"
DEB_SHA256 = "41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5"
EXCLUDE = {"art", "ascii-art"}  # pictures made of characters, not prose
HELDOUT_EVERY = 20              # a fortune is held out when sha256(text)[0] % 20 == 0

ARCHS = ("softmax", "sigmoid", "aaren")
MODEL_IDS = {a: "byte-%s-lm" % a for a in ARCHS}
EPS = 1e-5


# --------------------------------------------------------------------------
# data


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_data():
    """Download the pinned .deb, check it, unpack it; return (train, heldout) bytes."""
    os.makedirs(DATA_DIR, exist_ok=True)
    debs = glob.glob(os.path.join(DATA_DIR, "%s_*.deb" % DEB_PACKAGE))
    if not debs:
        print("apt-get download %s=%s" % (DEB_PACKAGE, DEB_VERSION), flush=True)
        r = subprocess.run(["apt-get", "download", "%s=%s" % (DEB_PACKAGE, DEB_VERSION)],
                           cwd=DATA_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           universal_newlines=True)
        debs = glob.glob(os.path.join(DATA_DIR, "%s_*.deb" % DEB_PACKAGE))
        if r.returncode != 0 or not debs:
            sys.exit("apt-get download failed (run apt-get update first?):\n" + r.stdout)
    deb = debs[0]
    got = sha256_file(deb)
    if got != DEB_SHA256:
        sys.exit("%s: sha256 %s, expected %s" % (deb, got, DEB_SHA256))
    root = os.path.join(DATA_DIR, "root")
    if not os.path.isdir(root):
        subprocess.run(["dpkg-deb", "-x", deb, root + ".tmp"], check=True)
        os.rename(root + ".tmp", root)
    src = os.path.join(root, "usr/share/games/fortunes")
    seen, train, held = set(), [], []
    for name in sorted(os.listdir(src)):
        p = os.path.join(src, name)
        if os.path.islink(p) or "." in name or name in EXCLUDE:
            continue  # .dat index files, .u8 symlinks
        with open(p, "rb") as f:
            data = f.read()
        for item in data.split(b"\n%\n"):
            item = item.strip(b"\n%") + b"\n"
            if len(item) < 2 or item in seen:
                continue
            seen.add(item)
            rec = item + b"%\n"
            (held if hashlib.sha256(item).digest()[0] % HELDOUT_EVERY == 0 else train).append(rec)
    return b"".join(train), b"".join(held), {"fortunes_train": len(train),
                                              "fortunes_heldout": len(held)}


def unigram_bpb(train, held):
    counts = np.bincount(np.frombuffer(train, np.uint8), minlength=256).astype(np.float64) + 1.0
    p = counts / counts.sum()
    return float(-np.log2(p[np.frombuffer(held, np.uint8)]).mean())


# --------------------------------------------------------------------------
# model (JAX)


def ffn_dim(d):
    return int(math.ceil(d * 8 / 3 / 64) * 64)


def init_params(cfg, key):
    import jax
    import jax.numpy as jnp
    d, H, L, V = cfg["d_model"], cfg["n_heads"], cfg["n_layers"], cfg["vocab_size"]
    dh, F = d // H, cfg["ffn_dim"]
    keys = iter(jax.random.split(key, 16 * L + 8))

    def nrm(shape, std=0.02):
        return std * jax.random.normal(next(keys), shape, jnp.float32)

    # embedding std 1: token identity must not be drowned by the unit-RMS post-normed sublayer
    # outputs of hybrid-norm (with std 0.02 the Aaren model stayed at the unigram level)
    p = {"tok_emb": nrm((V, d), 1.0), "final_norm": jnp.ones((d,)), "lm_head": nrm((d, V))}
    for i in range(L):
        pre = "layers.%d." % i
        p[pre + "mix_norm"] = jnp.ones((d,))
        p[pre + "mix_post_norm"] = jnp.ones((d,))
        p[pre + "ffn_norm"] = jnp.ones((d,))
        p[pre + "ffn_post_norm"] = jnp.ones((d,))
        p[pre + "w_gate"] = nrm((d, F))
        p[pre + "w_up"] = nrm((d, F))
        p[pre + "w_down"] = nrm((F, d))
        p[pre + "wk"] = nrm((d, d))
        p[pre + "wv"] = nrm((d, d))
        p[pre + "wo"] = nrm((d, d))
        if cfg["arch"] == "aaren":
            p[pre + "query"] = nrm((H, dh), 1.0)
            K = cfg["conv_kernel"]
            p[pre + "conv_norm"] = jnp.ones((d,))
            p[pre + "conv_w"] = jnp.zeros((K, d))  # the conv sublayer starts as a no-op
            p[pre + "conv_b"] = jnp.zeros((d,))
            p[pre + "k_norm"] = jnp.ones((dh,))
        else:
            p[pre + "wq"] = nrm((d, d))
            p[pre + "q_norm"] = jnp.ones((dh,))
            p[pre + "k_norm"] = jnp.ones((dh,))
    return p


def rms(x, w):
    import jax.numpy as jnp
    return x * (1.0 / jnp.sqrt(jnp.mean(x * x, -1, keepdims=True) + EPS)) * w


def rope(x, theta):
    """x [B,T,H,dh]; rotate-half (Llama) convention, positions 0..T-1."""
    import jax.numpy as jnp
    T, dh = x.shape[1], x.shape[-1]
    inv = 1.0 / theta ** (jnp.arange(0, dh, 2, dtype=jnp.float32) / dh)
    ang = jnp.arange(T, dtype=jnp.float32)[:, None] * inv[None, :]
    cos = jnp.concatenate([jnp.cos(ang)] * 2, -1)[None, :, None, :]
    sin = jnp.concatenate([jnp.sin(ang)] * 2, -1)[None, :, None, :]
    x1, x2 = x[..., : dh // 2], x[..., dh // 2:]
    return x * cos + jnp.concatenate([-x2, x1], -1) * sin


def aaren_combine(A, B):
    """(m, u, w) summaries of two index sets -> summary of their union (paper's operator)."""
    import jax.numpy as jnp
    mA, uA, wA = A
    mB, uB, wB = B
    m = jnp.maximum(mA, mB)
    ea, eb = jnp.exp(mA - m), jnp.exp(mB - m)
    return m, uA * ea + uB * eb, wA * ea[..., None] + wB * eb[..., None]


def forward(p, tokens, cfg):
    """tokens [B,T] int32 -> logits [B,T,V] float32."""
    import jax
    import jax.numpy as jnp
    d, H = cfg["d_model"], cfg["n_heads"]
    dh = d // H
    B, T = tokens.shape
    x = p["tok_emb"][tokens]
    for i in range(cfg["n_layers"]):
        pre = "layers.%d." % i
        if cfg["arch"] == "aaren":
            # short causal conv sublayer: x += conv(conv_norm(x)), the only source of order
            K = cfg["conv_kernel"]
            up = jnp.pad(rms(x, p[pre + "conv_norm"]), ((0, 0), (K - 1, 0), (0, 0)))
            x = x + p[pre + "conv_b"] + sum(up[:, j:j + T] * p[pre + "conv_w"][j] for j in range(K))
            u = rms(x, p[pre + "mix_norm"])
            k = rms((u @ p[pre + "wk"]).reshape(B, T, H, dh), p[pre + "k_norm"])
            v = (u @ p[pre + "wv"]).reshape(B, T, H, dh)
            s = jnp.einsum("bthd,hd->bth", k, p[pre + "query"]) / math.sqrt(dh)
            m, uu, w = jax.lax.associative_scan(aaren_combine, (s, jnp.ones_like(s), v), axis=1)
            o = (w / uu[..., None]).reshape(B, T, d)
        else:
            u = rms(x, p[pre + "mix_norm"])
            q = rms((u @ p[pre + "wq"]).reshape(B, T, H, dh), p[pre + "q_norm"])
            k = rms((u @ p[pre + "wk"]).reshape(B, T, H, dh), p[pre + "k_norm"])
            v = (u @ p[pre + "wv"]).reshape(B, T, H, dh)
            q, k = rope(q, cfg["rope_theta"]), rope(k, cfg["rope_theta"])
            s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dh)
            mask = jnp.tril(jnp.ones((T, T), bool))
            if cfg["arch"] == "softmax":
                a = jax.nn.softmax(jnp.where(mask, s, -jnp.inf), -1)
            else:
                a = jnp.where(mask, jax.nn.sigmoid(s + cfg["sigmoid_bias"]), 0.0)
            o = jnp.einsum("bhqk,bkhd->bqhd", a, v).reshape(B, T, d)
        x = x + rms(o @ p[pre + "wo"], p[pre + "mix_post_norm"])
        u = rms(x, p[pre + "ffn_norm"])
        f = (jax.nn.silu(u @ p[pre + "w_gate"]) * (u @ p[pre + "w_up"])) @ p[pre + "w_down"]
        x = x + rms(f, p[pre + "ffn_post_norm"])
    return rms(x, p["final_norm"]) @ p["lm_head"]


# --------------------------------------------------------------------------
# independent float64 numpy reference (the spec the Swift side implements)


def np_rms(x, w):
    return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + EPS) * w


def np_silu(x):
    return x / (1.0 + np.exp(-x))


def np_ffn(p, pre, x):
    u = np_rms(x, p[pre + "ffn_norm"])
    f = (np_silu(u @ p[pre + "w_gate"]) * (u @ p[pre + "w_up"])) @ p[pre + "w_down"]
    return x + np_rms(f, p[pre + "ffn_post_norm"])


def np_transformer_logits(p, tokens, cfg):
    """Naive masked attention, one sequence, float64."""
    d, H = cfg["d_model"], cfg["n_heads"]
    dh, T = d // H, len(tokens)
    x = p["tok_emb"][tokens]
    half = dh // 2
    inv = 1.0 / cfg["rope_theta"] ** (np.arange(half) * 2.0 / dh)
    ang = np.arange(T)[:, None] * inv[None, :]
    cos, sin = np.cos(ang), np.sin(ang)

    def rot(z):  # [T,H,dh]
        z1, z2 = z[..., :half], z[..., half:]
        c, s_ = cos[:, None, :], sin[:, None, :]
        return np.concatenate([z1 * c - z2 * s_, z2 * c + z1 * s_], -1)

    for i in range(cfg["n_layers"]):
        pre = "layers.%d." % i
        u = np_rms(x, p[pre + "mix_norm"])
        q = rot(np_rms((u @ p[pre + "wq"]).reshape(T, H, dh), p[pre + "q_norm"]))
        k = rot(np_rms((u @ p[pre + "wk"]).reshape(T, H, dh), p[pre + "k_norm"]))
        v = (u @ p[pre + "wv"]).reshape(T, H, dh)
        o = np.zeros((T, H, dh))
        for h in range(H):
            s = q[:, h] @ k[:, h].T / math.sqrt(dh)
            for t in range(T):
                row = s[t, : t + 1]
                if cfg["arch"] == "softmax":
                    e = np.exp(row - row.max())
                    a = e / e.sum()
                else:
                    a = 1.0 / (1.0 + np.exp(-(row + cfg["sigmoid_bias"])))
                o[t, h] = a @ v[: t + 1, h]
        x = x + np_rms(o.reshape(T, d) @ p[pre + "wo"], p[pre + "mix_post_norm"])
        x = np_ffn(p, pre, x)
    return np_rms(x, p["final_norm"]) @ p["lm_head"]


class AarenState:
    """Constant-size per-sequence state: per layer the last K-1 normed inputs of the
    conv, and per head (m, c, a) with m0 = -inf.  Size does not depend on position."""

    def __init__(self, cfg):
        L, d, H = cfg["n_layers"], cfg["d_model"], cfg["n_heads"]
        self.conv = np.zeros((L, cfg["conv_kernel"] - 1, d))
        self.m = np.full((L, H), -np.inf)
        self.c = np.zeros((L, H))
        self.a = np.zeros((L, H, d // H))

    def nbytes(self):
        return self.conv.nbytes + self.m.nbytes + self.c.nbytes + self.a.nbytes


def np_aaren_step(p, state, token, cfg, rescale=True):
    """One token through the recurrent form; updates state; returns logits [V]."""
    d, H = cfg["d_model"], cfg["n_heads"]
    dh = d // H
    x = p["tok_emb"][token]
    for i in range(cfg["n_layers"]):
        pre = "layers.%d." % i
        win = np.concatenate([state.conv[i], np_rms(x, p[pre + "conv_norm"])[None]], 0)  # [K,d], oldest first
        x = x + p[pre + "conv_b"] + (win * p[pre + "conv_w"]).sum(0)
        state.conv[i] = win[1:]
        u = np_rms(x, p[pre + "mix_norm"])
        k = np_rms((u @ p[pre + "wk"]).reshape(H, dh), p[pre + "k_norm"])
        v = (u @ p[pre + "wv"]).reshape(H, dh)
        s = (k * p[pre + "query"]).sum(-1) / math.sqrt(dh)
        o = np.zeros((H, dh))
        for h in range(H):
            m_old = state.m[i, h]
            m_new = max(m_old, s[h])
            r = 0.0 if np.isneginf(m_old) else math.exp(m_old - m_new)
            if not rescale:  # negative control only: drop exp(m_{k-1} - m_k)
                r = 0.0 if np.isneginf(m_old) else 1.0
            e = math.exp(s[h] - m_new)
            state.a[i, h] = state.a[i, h] * r + e * v[h]
            state.c[i, h] = state.c[i, h] * r + e
            state.m[i, h] = m_new
            o[h] = state.a[i, h] / state.c[i, h]
        x = x + np_rms(o.reshape(d) @ p[pre + "wo"], p[pre + "mix_post_norm"])
        x = np_ffn(p, pre, x)
    return np_rms(x, p["final_norm"]) @ p["lm_head"]


def np_aaren_logits(p, tokens, cfg, rescale=True):
    st = AarenState(cfg)
    sizes = set()
    out = []
    for t in tokens:
        out.append(np_aaren_step(p, st, int(t), cfg, rescale))
        sizes.add(st.nbytes())
    assert len(sizes) == 1, "Aaren state size changed with position"
    return np.stack(out)


def np_logits(p, tokens, cfg):
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    if cfg["arch"] == "aaren":
        return np_aaren_logits(p, tokens, cfg)
    return np_transformer_logits(p, tokens, cfg)


# --------------------------------------------------------------------------
# training


def make_config(arch, a):
    cfg = {
        "architecture": "apus-byte-decoder",
        "arch": arch,
        "attention": {"softmax": "softmax", "sigmoid": "sigmoid", "aaren": "aaren-prefix-scan"}[arch],
        "vocab_size": 256, "tokenizer": "bytes (token id = byte value, no special tokens)",
        "d_model": a.d_model, "n_heads": a.n_heads, "head_dim": a.d_model // a.n_heads,
        "n_layers": a.n_layers, "ffn_dim": ffn_dim(a.d_model), "ffn": "swiglu",
        "norm": "rmsnorm", "norm_eps": EPS, "block": "hybrid-norm: x + post_norm(f(pre_norm(x)))",
        "n_train": a.ctx, "dtype": "float32",
    }
    if arch == "aaren":
        cfg.update({"conv_kernel": a.conv_kernel, "positions": "depthwise causal conv sublayer before each Aaren layer: x += conv_b + sum_j conv_w[j] * conv_norm(x)[t-K+1+j]",
                    "k_norm": True, "query": "learned per layer and head [n_heads, head_dim]",
                    "state_per_sequence_floats": a.n_layers * ((a.conv_kernel - 1) * a.d_model + a.d_model + 2 * a.n_heads)})
    else:
        cfg.update({"positions": "rope", "rope_theta": 10000.0, "rope_style": "rotate-half (llama)",
                    "qk_norm": True,
                    "sigmoid_bias": -math.log(a.ctx) if arch == "sigmoid" else None})
    return cfg


def train_one(arch, a, train, held):
    import jax
    import jax.numpy as jnp
    import optax

    cfg = make_config(arch, a)
    params = init_params(cfg, jax.random.PRNGKey(a.seed))
    n_params = int(sum(v.size for v in params.values()))
    print("\n== %s: %d parameters" % (arch, n_params), flush=True)
    tr = np.frombuffer(train, np.uint8).astype(np.int32)
    rng = np.random.default_rng(a.seed)
    T, B = a.ctx, a.batch

    def batch():
        idx = rng.integers(0, len(tr) - T - 1, B)
        w = np.stack([tr[i:i + T + 1] for i in idx])
        return w[:, :-1], w[:, 1:]

    def loss_fn(p, x, y):
        lg = forward(p, x, cfg)
        return optax.softmax_cross_entropy_with_integer_labels(lg, y).mean()

    def make_opt(total):
        sched = optax.warmup_cosine_decay_schedule(0.0, a.lr, min(a.warmup, total // 10 + 1),
                                                   total, a.lr * 0.1)
        mask = {k: v.ndim >= 2 and k != "tok_emb" for k, v in params.items()}
        return optax.chain(optax.clip_by_global_norm(1.0),
                           optax.adamw(sched, b1=0.9, b2=0.95, weight_decay=0.1, mask=mask))

    def make_step(opt):
        @jax.jit
        def step(p, s, x, y):
            l, g = jax.value_and_grad(loss_fn)(p, x, y)
            upd, s = opt.update(g, s, p)
            return optax.apply_updates(p, upd), s, l
        return step

    # calibrate: time a few steps of a throwaway copy, then fix the step count
    if a.steps:
        total = a.steps
    else:
        opt = make_opt(1000)
        step = make_step(opt)
        p, s = params, opt.init(params)
        x, y = batch()
        p, s, l = step(p, s, x, y)
        l.block_until_ready()
        t0 = time.time()
        for _ in range(5):
            x, y = batch()
            p, s, l = step(p, s, x, y)
        l.block_until_ready()
        per = (time.time() - t0) / 5
        total = max(20, int(a.minutes * 60 / per))
        print("calibration: %.3f s/step -> %d steps for %.1f min" % (per, total, a.minutes), flush=True)
        rng = np.random.default_rng(a.seed)  # same batches whatever the calibration did
    opt = make_opt(total)
    step = make_step(opt)
    state = opt.init(params)
    t0 = time.time()
    log = []
    for i in range(1, total + 1):
        x, y = batch()
        params, state, l = step(params, state, x, y)
        if i % 50 == 0 or i == total:
            lv = float(l)
            log.append((i, lv / math.log(2)))
            print("  step %5d/%d  train %.3f bits/byte  %.0f s" % (i, total, lv / math.log(2),
                                                                   time.time() - t0), flush=True)
    train_s = time.time() - t0
    bpb = evaluate(params, cfg, held, a.ctx)
    print("%s: held-out %.4f bits/byte after %d steps, %.0f s" % (arch, bpb, total, train_s), flush=True)
    info = {"arch": arch, "params": n_params, "steps": total, "batch": B, "ctx": T,
            "tokens_seen": total * B * T, "train_seconds": round(train_s, 1),
            "heldout_bits_per_byte": round(bpb, 4), "final_train_bits_per_byte": round(log[-1][1], 4)}
    return cfg, {k: np.asarray(v) for k, v in params.items()}, info


def evaluate(params, cfg, held, T):
    """Mean next-byte loss (bits) over the held-out text in non-overlapping windows of T."""
    import jax
    import jax.numpy as jnp
    import optax
    h = np.frombuffer(held, np.uint8).astype(np.int32)
    n = (len(h) - 1) // T
    x = h[: n * T].reshape(n, T)
    y = h[1: n * T + 1].reshape(n, T)
    f = jax.jit(lambda p, x, y: optax.softmax_cross_entropy_with_integer_labels(
        forward(p, x, cfg), y).sum())
    tot = 0.0
    for i in range(0, n, 32):
        tot += float(f(params, jnp.asarray(x[i:i + 32]), jnp.asarray(y[i:i + 32])))
    return tot / (n * T) / math.log(2)


def sample(params, cfg, prompt, n, seed, temp=0.8):
    import jax
    import jax.numpy as jnp
    T = cfg["n_train"]
    f = jax.jit(lambda p, x: forward(p, x, cfg)[0])
    rng = np.random.default_rng(seed)
    toks = list(prompt)
    for _ in range(n):
        ctx = toks[-T:]
        x = np.zeros((1, T), np.int32)
        x[0, : len(ctx)] = ctx
        lg = np.asarray(f(params, jnp.asarray(x))[len(ctx) - 1], np.float64) / temp
        pr = np.exp(lg - lg.max())
        toks.append(int(rng.choice(256, p=pr / pr.sum())))
    return bytes(toks)


# --------------------------------------------------------------------------
# checks, export


def heldout_probe(held, n):
    """The first n bytes of the held-out text: a fixed input for logit comparisons."""
    return np.frombuffer(held[:n], np.uint8).astype(np.int32)


def check_model(params, cfg, probe):
    import jax.numpy as jnp
    lj = np.asarray(forward({k: jnp.asarray(v) for k, v in params.items()},
                            jnp.asarray(probe[None]), cfg)[0], np.float64)
    ln = np_logits(params, probe, cfg)
    err = float(np.abs(lj - ln).max())
    scale = float(np.abs(ln).max())
    return lj, ln, err, scale


def export(model_id, cfg, params, info, lj, probe, sample_text, label, data_info, dtype):
    from safetensors.numpy import save_file
    d = os.path.join(OUT_DIR, model_id)
    os.makedirs(d, exist_ok=True)
    save_file({k: np.ascontiguousarray(v, dtype) for k, v in sorted(params.items())},
              os.path.join(d, "model.safetensors"), metadata={"format": "np"})
    c = dict(cfg)
    c.update({"model_id": model_id, "run_label": label, "training": info, "data": data_info,
              "license": "BSD-3-Clause", "tensor_layout": "x @ W (weights are [in, out])"})
    if label != "full":
        c["note"] = ("run '%s' (%d steps, %.0f s): a short run that checks the pipeline, not the "
                     "20-minute budget of issue 7; its text is not yet readable"
                     % (label, info["steps"], info["train_seconds"]))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(c, f, indent=1)
        f.write("\n")
    save_file({"tokens": probe.astype(np.int32), "logits": lj.astype(np.float32)},
              os.path.join(d, "heldout_logits.safetensors"))
    with open(os.path.join(d, "sample.txt"), "wb") as f:
        f.write(sample_text)


CATALOG_FILES = ("config.json", "model.safetensors", "heldout_logits.safetensors")


def update_catalog(model_ids):
    """Add or replace the catalog entries of exported models (source type "repo")."""
    path = os.path.join(MODELS, "catalog.json")
    with open(path, encoding="utf-8") as f:
        catalog = json.load(f)
    for mid in model_ids:
        d = os.path.join(OUT_DIR, mid)
        with open(os.path.join(d, "config.json")) as f:
            cfg = json.load(f)
        entry = {
            "id": mid, "kind": "generation", "format": "safetensors", "default": True,
            "upstream": "trained by Models/train/train_decoders.py (%s attention, run %s)"
                        % (cfg["attention"], cfg["run_label"]),
            "license": cfg["license"],
            "data": cfg["data"]["source"],
            "source": {"type": "repo", "dir": "trained/" + mid},
            "files": [{"path": n, "name": n, "sha256": sha256_file(os.path.join(d, n)),
                       "size": os.path.getsize(os.path.join(d, n))} for n in CATALOG_FILES],
        }
        for i, m in enumerate(catalog):
            if m["id"] == mid:
                catalog[i] = entry
                break
        else:
            catalog.append(entry)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(catalog, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print("catalog: %s updated for %s" % (os.path.relpath(path), ", ".join(model_ids)))


def load_export(model_id):
    from safetensors.numpy import load_file
    d = os.path.join(OUT_DIR, model_id)
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    return cfg, load_file(os.path.join(d, "model.safetensors")), load_file(
        os.path.join(d, "heldout_logits.safetensors"))


def finish(arch, cfg, params, info, held, probe, a, label, data_info):
    """Round to the stored dtype, measure, check, sample and export one model."""
    import jax.numpy as jnp
    if a.weights_dtype == "float16":
        params = {k: v.astype(np.float16).astype(np.float32) for k, v in params.items()}
        cfg["dtype"] = "float16 weights (compute in float32)"
        bpb = evaluate({k: jnp.asarray(v) for k, v in params.items()}, cfg, held, cfg["n_train"])
        print("%s: held-out %.4f bits/byte with the weights rounded to float16" % (arch, bpb), flush=True)
        info["heldout_bits_per_byte"] = round(bpb, 4)
    else:
        cfg["dtype"] = "float32"
    lj, ln, err, scale = check_model(params, cfg, probe)
    ok = err <= 1e-3 * max(1.0, scale)
    print("check %s: float32 JAX vs float64 numpy%s forward, max |diff| %.2e (max |logit| %.1f) %s"
          % (arch, " recurrent-step" if arch == "aaren" else "", err, scale, "PASS" if ok else "FAIL"),
          flush=True)
    info["check_max_abs_logit_diff_vs_numpy64"] = err
    info["check_max_abs_logit"] = scale
    if arch == "aaren":  # negative control: a recurrence without the rescale must be caught
        bad = np_aaren_logits({k: np.asarray(v, np.float64) for k, v in params.items()}, probe, cfg,
                              rescale=False)
        bad_err = float(np.abs(bad - lj).max())
        caught = bad_err > 1e-3 * max(1.0, scale)
        print("negative control %s: recurrence without exp(m_prev - m_new), max |diff| %.2e: %s"
              % (arch, bad_err, "caught" if caught else "NOT CAUGHT"), flush=True)
        info["negative_control_no_rescale_max_abs_diff"] = bad_err
        ok = ok and caught
        info["check"] = "recurrent step (numpy float64, constant-size state) vs parallel prefix scan (JAX float32)"
        info["state_bytes_float64"] = AarenState(cfg).nbytes()
    txt = sample({k: jnp.asarray(v) for k, v in params.items()}, cfg, b"The ", 300, a.seed)
    print("sample: %r" % txt.decode("utf-8", "replace"), flush=True)
    info["sample"] = txt.decode("utf-8", "replace")
    if not a.no_export:
        export(MODEL_IDS[arch], cfg, params, info, lj, probe, txt, label, data_info,
               np.float16 if a.weights_dtype == "float16" else np.float32)
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default=",".join(ARCHS), help="comma list of %s" % ",".join(ARCHS))
    ap.add_argument("--minutes", type=float, default=20.0, help="training budget per model")
    ap.add_argument("--steps", type=int, default=0, help="fixed step count (overrides --minutes)")
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--n-heads", type=int, default=4)
    ap.add_argument("--n-layers", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=256, help="training length n_train")
    ap.add_argument("--conv-kernel", type=int, default=4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--probe-bytes", type=int, default=256, help="held-out bytes for logit dumps")
    ap.add_argument("--label", default="full", help="run label written to config.json")
    ap.add_argument("--no-export", action="store_true")
    ap.add_argument("--check-only", action="store_true", help="re-run the checks on the exports")
    ap.add_argument("--weights-dtype", choices=("float16", "float32"), default="float16",
                    help="stored weights; figures and logit dumps are for the stored weights")
    ap.add_argument("--reexport", action="store_true",
                    help="no training: finish the exported models again (rounding, checks, dumps)")
    ap.add_argument("--catalog-only", action="store_true",
                    help="only (re)write the catalog entries of the exported models")
    a = ap.parse_args()
    archs = [s for s in a.arch.split(",") if s]
    for s in archs:
        if s not in ARCHS:
            ap.error("unknown arch %s" % s)
    if a.catalog_only:
        update_catalog([MODEL_IDS[x] for x in archs])
        return
    t_start = time.time()
    cmd = " ".join([os.path.relpath(sys.executable)] + sys.argv)
    print("command:", cmd, flush=True)
    train, held, counts = fetch_data()
    data_info = {"source": "Debian package %s %s (apt-get download; .deb sha256 %s), "
                           "/usr/share/games/fortunes/* except %s; deduplicated fortunes, every one whose "
                           "sha256 first byte %% %d == 0 held out" % (DEB_PACKAGE, DEB_VERSION, DEB_SHA256,
                                                                    ", ".join(sorted(EXCLUDE)), HELDOUT_EVERY),
                 "data_license": "fortune-mod: BSD (see the package's copyright file); the quotations "
                                 "are of many origins",
                 "train_bytes": len(train), "heldout_bytes": len(held)}
    data_info.update(counts)
    uni = unigram_bpb(train, held)
    print("data: %d train bytes, %d held-out bytes; unigram baseline %.4f bits/byte"
          % (len(train), len(held), uni), flush=True)
    probe = heldout_probe(held, a.probe_bytes)
    failures = []

    if a.check_only:
        for arch in archs:
            cfg, params, dump = load_export(MODEL_IDS[arch])
            params = {k: v.astype(np.float32) for k, v in params.items()}
            lj, ln, err, scale = check_model(params, cfg, dump["tokens"])
            d2 = float(np.abs(dump["logits"] - ln).max())
            ok = err <= 1e-3 * max(1.0, scale) and d2 <= 1e-3 * max(1.0, scale)
            print("%s: |jax - numpy64| %.2e, |dump - numpy64| %.2e (max |logit| %.1f) %s"
                  % (arch, err, d2, scale, "PASS" if ok else "FAIL"))
            if not ok:
                failures.append(arch)
        sys.exit(1 if failures else 0)

    import jax
    print("jax %s on %s, %d devices" % (jax.__version__, jax.default_backend(), jax.device_count()))
    results = {"command": cmd, "label": a.label, "reexport": a.reexport, "unigram_bits_per_byte": round(uni, 4),
               "data": data_info, "models": {}}
    for arch in archs:
        if a.reexport:  # finish the exported weights again (e.g. to round them to float16)
            cfg, params, _ = load_export(MODEL_IDS[arch])
            info = cfg.pop("training")
            label = cfg.pop("run_label")
            for key in ("model_id", "data", "license", "tensor_layout", "note"):
                cfg.pop(key, None)
            params = {k: v.astype(np.float32) for k, v in params.items()}
        else:
            cfg, params, info = train_one(arch, a, train, held)
            label = a.label
        ok = finish(arch, cfg, params, info, held, probe, a, label, data_info)
        results["models"][MODEL_IDS[arch]] = info
        if not ok:
            failures.append(arch)
    if not a.no_export:
        update_catalog([MODEL_IDS[x] for x in archs])
    results["total_seconds"] = round(time.time() - t_start, 1)
    results["checks_failed"] = failures
    with open(os.path.join(HERE, "results-%s.json" % a.label), "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    print("\nunigram %.4f bits/byte" % uni)
    for mid, info in results["models"].items():
        print("%-18s %.4f bits/byte  %d params  %d steps  %.0f s" % (
            mid, info["heldout_bits_per_byte"], info["params"], info["steps"], info["train_seconds"]))
    print("total %.0f s; checks failed: %s" % (results["total_seconds"], failures or "none"))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
