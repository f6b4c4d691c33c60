#!/usr/bin/python3
"""Write the small ParScale / Qwen2 test checkpoints in test/fixtures/ and their expected outputs.

This is the project's independent oracle. The TypeScript reference (src/reference) is checked
against the numbers written here, so this file is deliberately written from the official PyTorch
code (QwenLM/ParScale, modeling_qwen2_parscale.py) and /work/shared/SPEC.md, not from our
TypeScript: if both were derived from the same misunderstanding the tests would prove nothing.

Requirements: the system interpreter with PyTorch (Debian's python3-torch, 1.13) and numpy.
Nothing else: no transformers, no safetensors, no einops. The safetensors files are written by
hand, byte for byte, in the format Hugging Face uses.

    /usr/bin/python3 tools/make_fixtures.py            # (re)write every fixture
    /usr/bin/python3 tools/make_fixtures.py NAME ...   # only these
    /usr/bin/python3 tools/check_fixture.py test/fixtures/NAME   # reload and recompute one

Everything is computed in float32. The random weights are rounded through their stored dtype
(bf16 / f16 / f32) BEFORE any math, so the numbers in expected.json are exactly what float32 math
on the stored weights gives, whatever the dtype on disk.
"""

import json
import math
import os
import struct
import sys
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

VERSION = 1
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES_DIR = os.path.join(REPO_ROOT, "test", "fixtures")
DECODE_STEPS = 4  # K: greedy tokens chosen after the prompt

# stored dtype name in config.json -> (torch dtype, safetensors dtype tag)
DTYPES = {
    "float32": (torch.float32, "F32"),
    "bfloat16": (torch.bfloat16, "BF16"),
    "float16": (torch.float16, "F16"),
}

# ---------------------------------------------------------------------------------------------
# The fixture set. Each entry is the config (the keys that vary) plus how to store and drive it.
# Together they cover: P in {1, 2, 4, 8}; bf16, f32 and f16; tied and untied embeddings; a
# 3-shard checkpoint; grouped-query attention (nKV < nH, down to a single KV head); prefix
# lengths 3, 4, 5, 7 and the default 48; a plain "qwen2" config without any parscale key; a
# "qwen2_parscale" config with parscale_n 1; smoothing 0.1, 0.01 and exactly 0; an explicit
# head_dim different from hidden_size / num_attention_heads; rope_theta 1e4 and 1e6; eps 1e-6
# and 1e-5.
# ---------------------------------------------------------------------------------------------
FIXTURES = [
    dict(
        name="qwen2-p1-f32-untied",
        description="Plain Qwen2 checkpoint (model_type qwen2, no parscale keys): must behave as P = 1. "
        "f32, untied lm_head, GQA 4 heads / 2 KV heads, rope_theta 1e6.",
        seed=101, model_type="qwen2", dtype="float32", tied=False, prompt_len=6,
        hidden=32, inter=64, layers=2, heads=4, kv_heads=2, vocab=96, theta=1000000.0, eps=1e-6,
    ),
    dict(
        name="parscale-p1-bf16-tied",
        description="qwen2_parscale config with parscale_n 1 (so no prefix and no aggregation tensors "
        "although parscale_n_tokens is 48). bf16, tied, 4 heads / 4 KV heads (no GQA).",
        seed=202, model_type="qwen2_parscale", dtype="bfloat16", tied=True, prompt_len=5,
        hidden=32, inter=80, layers=2, heads=4, kv_heads=4, vocab=64, theta=10000.0, eps=1e-6,
        P=1, T=48, smooth=0.01,
    ),
    dict(
        name="parscale-p2-bf16-tied-t48",
        description="P = 2 with the default prefix length T = 48 (longer than the prompt), smoothing 0.01, "
        "bf16, tied, 4 heads / 2 KV heads.",
        seed=303, model_type="qwen2_parscale", dtype="bfloat16", tied=True, prompt_len=7,
        hidden=32, inter=64, layers=2, heads=4, kv_heads=2, vocab=80, theta=10000.0, eps=1e-6,
        P=2, T=48, smooth=0.01,
    ),
    dict(
        name="parscale-p4-f32-untied-gqa",
        description="P = 4, T = 5, smoothing 0.1, f32, untied, 4 heads sharing ONE KV head, "
        "rope_theta 1e6, rms_norm_eps 1e-5.",
        seed=404, model_type="qwen2_parscale", dtype="float32", tied=False, prompt_len=6,
        hidden=48, inter=96, layers=2, heads=4, kv_heads=1, vocab=100, theta=1000000.0, eps=1e-5,
        P=4, T=5, smooth=0.1,
    ),
    dict(
        name="parscale-p8-bf16-tied-sharded",
        description="P = 8, T = 3, smoothing 0.1 (like the released 3B checkpoints), bf16, tied, "
        "3 layers, stored as 3 shards + model.safetensors.index.json (layers split across shards).",
        seed=505, model_type="qwen2_parscale", dtype="bfloat16", tied=True, prompt_len=6,
        hidden=32, inter=64, layers=3, heads=4, kv_heads=2, vocab=128, theta=10000.0, eps=1e-6,
        P=8, T=3, smooth=0.1, shards=3,
    ),
    dict(
        name="parscale-p2-f16-untied-headdim",
        description="P = 2, T = 7, f16, untied, explicit head_dim 12 != hidden_size / heads (= 8): "
        "q_proj is [48, 32], o_proj [32, 48], prefixes [2, 2, 7, 12].",
        seed=606, model_type="qwen2_parscale", dtype="float16", tied=False, prompt_len=5,
        hidden=32, inter=64, layers=2, heads=4, kv_heads=2, vocab=72, theta=10000.0, eps=1e-6,
        P=2, T=7, smooth=0.01, head_dim=12,
    ),
    dict(
        name="parscale-p4-bf16-tied-smooth0",
        description="P = 4, T = 4, parscale_attn_smooth exactly 0.0 (the official code then skips "
        "smoothing), bf16, tied, 8 heads / 2 KV heads, hidden 64.",
        seed=707, model_type="qwen2_parscale", dtype="bfloat16", tied=True, prompt_len=7,
        hidden=64, inter=128, layers=2, heads=8, kv_heads=2, vocab=112, theta=10000.0, eps=1e-6,
        P=4, T=4, smooth=0.0,
    ),
]


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
class Config:
    """The numbers the forward pass needs, read from a config.json dict the way the official code
    reads them (head_dim via getattr with the H / nH default; parscale keys with their defaults
    1 / 48 / 0.01, so a plain "qwen2" config is P = 1)."""

    def __init__(self, cfg):
        self.raw = cfg
        self.H = cfg["hidden_size"]
        self.I = cfg["intermediate_size"]
        self.L = cfg["num_hidden_layers"]
        self.nH = cfg["num_attention_heads"]
        self.nKV = cfg.get("num_key_value_heads") or self.nH
        self.d = cfg.get("head_dim") or self.H // self.nH
        self.V = cfg["vocab_size"]
        self.eps = cfg["rms_norm_eps"]
        self.theta = cfg["rope_theta"]
        self.tied = cfg.get("tie_word_embeddings", False)
        self.P = cfg.get("parscale_n", 1)
        self.T = cfg.get("parscale_n_tokens", 48)
        self.smooth = cfg.get("parscale_attn_smooth", 0.01)
        # What this oracle does not implement, refused rather than silently ignored.
        assert cfg.get("rope_scaling") is None, "rope_scaling is not supported"
        assert not cfg.get("use_sliding_window", False), "sliding-window attention is not supported"
        assert cfg.get("hidden_act", "silu") == "silu"
        assert self.nH % self.nKV == 0 and self.d % 2 == 0


def make_config_json(spec):
    """A config.json as Hugging Face writes it (sorted keys), for a fixture spec."""
    parscale = spec["model_type"] == "qwen2_parscale"
    cfg = {
        "architectures": ["Qwen2ParScaleForCausalLM" if parscale else "Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": spec["bos"],
        "eos_token_id": spec["eos"],
        "hidden_act": "silu",
        "hidden_size": spec["hidden"],
        "initializer_range": 0.02,
        "intermediate_size": spec["inter"],
        "max_position_embeddings": 2048,
        "max_window_layers": 21,
        "model_type": spec["model_type"],
        "num_attention_heads": spec["heads"],
        "num_hidden_layers": spec["layers"],
        "num_key_value_heads": spec["kv_heads"],
        "rms_norm_eps": spec["eps"],
        "rope_scaling": None,
        "rope_theta": spec["theta"],
        "sliding_window": 4096,
        "tie_word_embeddings": spec["tied"],
        "torch_dtype": spec["dtype"],
        "transformers_version": "4.47.0",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": spec["vocab"],
    }
    if "head_dim" in spec:
        cfg["head_dim"] = spec["head_dim"]
    if parscale:
        # The released ParScale checkpoints load through trust_remote_code.
        cfg["auto_map"] = {
            "AutoConfig": "configuration_qwen2_parscale.Qwen2ParScaleConfig",
            "AutoModelForCausalLM": "modeling_qwen2_parscale.Qwen2ParScaleForCausalLM",
        }
        cfg["parscale_n"] = spec["P"]
        cfg["parscale_n_tokens"] = spec["T"]
        cfg["parscale_attn_smooth"] = spec["smooth"]
    return dict(sorted(cfg.items()))


# ---------------------------------------------------------------------------------------------
# Random weights
# ---------------------------------------------------------------------------------------------
def tensor_shapes(c):
    """Every stored tensor, name -> shape, in the order a PyTorch state_dict lists them (which is
    also the order we pack them on disk and split them into shards)."""
    shapes = OrderedDict()
    shapes["model.embed_tokens.weight"] = [c.V, c.H]
    for i in range(c.L):
        p = f"model.layers.{i}."
        shapes[p + "self_attn.q_proj.weight"] = [c.nH * c.d, c.H]
        shapes[p + "self_attn.q_proj.bias"] = [c.nH * c.d]
        shapes[p + "self_attn.k_proj.weight"] = [c.nKV * c.d, c.H]
        shapes[p + "self_attn.k_proj.bias"] = [c.nKV * c.d]
        shapes[p + "self_attn.v_proj.weight"] = [c.nKV * c.d, c.H]
        shapes[p + "self_attn.v_proj.bias"] = [c.nKV * c.d]
        shapes[p + "self_attn.o_proj.weight"] = [c.H, c.nH * c.d]
        if c.P > 1:
            shapes[p + "self_attn.prefix_k"] = [c.P, c.nKV, c.T, c.d]
            shapes[p + "self_attn.prefix_v"] = [c.P, c.nKV, c.T, c.d]
        shapes[p + "mlp.gate_proj.weight"] = [c.I, c.H]
        shapes[p + "mlp.up_proj.weight"] = [c.I, c.H]
        shapes[p + "mlp.down_proj.weight"] = [c.H, c.I]
        shapes[p + "input_layernorm.weight"] = [c.H]
        shapes[p + "post_attention_layernorm.weight"] = [c.H]
    shapes["model.norm.weight"] = [c.H]
    if c.P > 1:
        shapes["model.aggregate_layer.0.weight"] = [c.H, c.P * c.H]
        shapes["model.aggregate_layer.0.bias"] = [c.H]
        shapes["model.aggregate_layer.2.weight"] = [c.P, c.H]
        shapes["model.aggregate_layer.2.bias"] = [c.P]
    if not c.tied:
        shapes["lm_head.weight"] = [c.V, c.H]
    return shapes


def init_tensor(name, shape, gen):
    """Random values chosen so that nothing is degenerate: activations stay O(1) through the
    layers, attention is neither uniform nor one-hot, prefixes matter (std 1, like real keys),
    the logits spread over several units, and the aggregation weights are clearly non-uniform.
    (The official _init_weights, std 0.02 and zero biases, would give near-uniform everything and
    hide bugs such as a wrong stream order in the aggregation input.)"""
    randn = lambda: torch.randn(*shape, generator=gen, dtype=torch.float32)
    fan_in = shape[-1] if len(shape) == 2 else 1
    if name.endswith("norm.weight"):
        return 1.0 + 0.1 * randn()
    if "aggregate_layer" in name:
        # Gain 2: the softmax over P gets logits of a few units, so weights range widely.
        return 0.1 * randn() if name.endswith(".bias") else 2.0 * randn() / math.sqrt(fan_in)
    if name.endswith(".bias"):
        return 0.1 * randn()
    if "prefix_" in name:
        return randn()
    if name in ("model.embed_tokens.weight", "lm_head.weight"):
        return 0.5 * randn()
    if "q_proj" in name or "k_proj" in name:
        # A little sharper than unit gain so that the attention pattern depends on RoPE and the
        # prefixes (a wrong rotation or prefix order then moves the logits by O(0.1..1)).
        return 1.5 * randn() / math.sqrt(fan_in)
    return randn() / math.sqrt(fan_in)


def make_weights(c, dtype, seed):
    """Seeded random weights, each rounded through the stored dtype and back to float32, so the
    float32 math below uses exactly the values that are written to disk."""
    gen = torch.Generator().manual_seed(seed)
    torch_dtype = DTYPES[dtype][0]
    weights = OrderedDict()
    for name, shape in tensor_shapes(c).items():
        weights[name] = init_tensor(name, shape, gen).to(torch_dtype).to(torch.float32).contiguous()
    return weights


# ---------------------------------------------------------------------------------------------
# The model: float32, one sequence (batch 1), P streams kept as the leading dimension.
# ---------------------------------------------------------------------------------------------
def rms_norm(x, weight, eps):
    # Qwen2RMSNorm: x * rsqrt(mean(x^2) + eps) in float32, then times the weight.
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rope_cos_sin(c, positions):
    """cos/sin [s, d] for integer positions, as Qwen2RotaryEmbedding computes them: inv_freq in
    float32 from rope_theta ** (arange(0, d, 2) / d), angle = position * inv_freq in float32, and
    the d/2 angles repeated twice (cat(freqs, freqs)) to match rotate_half's pairing of j with
    j + d/2."""
    inv_freq = 1.0 / (c.theta ** (torch.arange(0, c.d, 2, dtype=torch.int64).float() / c.d))
    angles = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat((angles, angles), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x, cos, sin):
    # x: [P, heads, s, d]; cos/sin: [s, d]
    return x * cos + rotate_half(x) * sin


class Cache:
    """Per layer, per stream: keys/values of shape [P, nKV, T + t, d]. It starts as the learned
    prefix (T entries, never rotated, never counted as positions) and grows by one entry per real
    token. `length` counts real tokens only, so it is also the next token's RoPE position."""

    def __init__(self, model):
        c = model.c
        self.k, self.v = [], []
        for i in range(c.L):
            if c.P > 1:
                self.k.append(model.w[f"model.layers.{i}.self_attn.prefix_k"].clone())
                self.v.append(model.w[f"model.layers.{i}.self_attn.prefix_v"].clone())
            else:
                self.k.append(torch.zeros(1, c.nKV, 0, c.d))
                self.v.append(torch.zeros(1, c.nKV, 0, c.d))
        self.n_prefix = c.T if c.P > 1 else 0
        self.length = 0


class Model:
    def __init__(self, config, weights):
        self.c = Config(config) if isinstance(config, dict) else config
        self.w = weights

    def new_cache(self):
        return Cache(self)

    def attention(self, i, x, cache, start):
        """One attention block for s new tokens at positions start..start+s-1, all P streams.
        x: [P, s, H] (already normed). Appends the new keys/values to the cache."""
        c, w = self.c, self.w
        p = f"model.layers.{i}.self_attn."
        P, s, _ = x.shape
        lin = lambda name, t: F.linear(t, w[p + name + ".weight"], w.get(p + name + ".bias"))
        q = lin("q_proj", x).view(P, s, c.nH, c.d).transpose(1, 2)  # [P, nH, s, d]
        k = lin("k_proj", x).view(P, s, c.nKV, c.d).transpose(1, 2)  # [P, nKV, s, d]
        v = lin("v_proj", x).view(P, s, c.nKV, c.d).transpose(1, 2)
        cos, sin = rope_cos_sin(c, torch.arange(start, start + s))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # real tokens only; prefix stays as stored

        cache.k[i] = torch.cat((cache.k[i], k), dim=2)
        cache.v[i] = torch.cat((cache.v[i], v), dim=2)
        keys, values = cache.k[i], cache.v[i]  # [P, nKV, T + start + s, d]

        # GQA: query head h reads KV head h // g (repeat_interleave, like repeat_kv).
        g = c.nH // c.nKV
        keys = keys.repeat_interleave(g, dim=1)
        values = values.repeat_interleave(g, dim=1)

        scores = torch.matmul(q, keys.transpose(2, 3)) / math.sqrt(c.d)  # [P, nH, s, T+start+s]
        # Query r (absolute position start + r) sees every prefix entry and real tokens 0..start+r,
        # i.e. cache columns 0 .. n_prefix + start + r.
        n_keys = keys.shape[2]
        visible = torch.arange(n_keys)[None, :] <= (cache.n_prefix + start + torch.arange(s))[:, None]
        scores = scores.masked_fill(~visible, float("-inf"))
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
        out = torch.matmul(probs, values)  # [P, nH, s, d]
        out = out.transpose(1, 2).reshape(P, s, c.nH * c.d)
        return F.linear(out, w[p + "o_proj.weight"])

    def forward(self, ids, cache):
        """Feed tokens `ids` (at positions cache.length ..) through all streams.
        Returns logits [s, V], stream hidden states [s, P, H] (after the final norm) and the
        smoothed aggregation weights [s, P] (None when P == 1)."""
        c, w = self.c, self.w
        start = cache.length
        s = len(ids)
        x = w["model.embed_tokens.weight"][torch.tensor(ids)]  # [s, H]
        x = x[None].expand(c.P, s, c.H).clone()  # every stream starts from the same embedding
        for i in range(c.L):
            p = f"model.layers.{i}."
            x = x + self.attention(i, rms_norm(x, w[p + "input_layernorm.weight"], c.eps), cache, start)
            b = rms_norm(x, w[p + "post_attention_layernorm.weight"], c.eps)
            mlp = F.silu(F.linear(b, w[p + "mlp.gate_proj.weight"])) * F.linear(b, w[p + "mlp.up_proj.weight"])
            x = x + F.linear(mlp, w[p + "mlp.down_proj.weight"])
        cache.length += s
        h = rms_norm(x, w["model.norm.weight"], c.eps)  # [P, s, H], final norm per stream
        stream_hidden = h.transpose(0, 1).contiguous()  # [s, P, H]

        if c.P > 1:
            weights = aggregation_weights(c, w, stream_hidden)  # [s, P]
            y = (stream_hidden * weights[:, :, None]).sum(dim=1)  # [s, H]
        else:
            weights = None
            y = stream_hidden[:, 0]
        head = w["model.embed_tokens.weight"] if c.tied else w["lm_head.weight"]
        return F.linear(y, head), stream_hidden, weights


def aggregation_weights(c, w, stream_hidden):
    """The official aggregation: rearrange "(n b) s h -> b s (h n)" puts the features of all
    streams INTERLEAVED, c[j * P + p] = h[p][j] (feature-major, stream-minor): transpose each
    position's [P, H] to [H, P] and flatten. Then an MLP H*P -> H -> P, softmax in float32, and
    smoothing w * (1 - s) + s / P (skipped by the official code when s == 0, which is the same)."""
    s = stream_hidden.shape[0]
    cat = stream_hidden.transpose(1, 2).reshape(s, c.H * c.P)
    hid = F.silu(F.linear(cat, w["model.aggregate_layer.0.weight"], w["model.aggregate_layer.0.bias"]))
    z = F.linear(hid, w["model.aggregate_layer.2.weight"], w["model.aggregate_layer.2.bias"])
    weights = torch.softmax(z.float(), dim=-1)
    if c.smooth != 0.0:
        weights = weights * (1 - c.smooth) + c.smooth / c.P
    return weights


def official_style_prefill_attention(model, i, x):
    """A second, differently structured attention for prefill (cross-check only), mirroring how
    the official Qwen2Attention.forward handles the prefix when the query has more than one
    token: prepend T ZERO queries, use an ordinary square causal mask over the T + s cache
    entries, and drop the first T outputs. It must agree with Model.attention."""
    c, w = model.c, model.w
    p = f"model.layers.{i}.self_attn."
    P, s, _ = x.shape
    lin = lambda name: F.linear(x, w[p + name + ".weight"], w[p + name + ".bias"])
    cos, sin = rope_cos_sin(c, torch.arange(s))
    q = apply_rope(lin("q_proj").view(P, s, c.nH, c.d).transpose(1, 2), cos, sin)
    k = apply_rope(lin("k_proj").view(P, s, c.nKV, c.d).transpose(1, 2), cos, sin)
    v = lin("v_proj").view(P, s, c.nKV, c.d).transpose(1, 2)
    T = c.T if c.P > 1 else 0
    if T:
        k = torch.cat((w[p + "prefix_k"], k), dim=2)
        v = torch.cat((w[p + "prefix_v"], v), dim=2)
        q = torch.cat((torch.zeros(P, c.nH, T, c.d), q), dim=2)
    g = c.nH // c.nKV
    # repeat_kv: expand [P, nKV, 1, n, d] to [P, nKV, g, n, d] and merge -> head h uses h // g
    k = k[:, :, None].expand(P, c.nKV, g, T + s, c.d).reshape(P, c.nH, T + s, c.d)
    v = v[:, :, None].expand(P, c.nKV, g, T + s, c.d).reshape(P, c.nH, T + s, c.d)
    scores = torch.matmul(q, k.transpose(2, 3)) * c.d ** -0.5
    causal = torch.ones(T + s, T + s, dtype=torch.bool).tril()
    scores = scores.masked_fill(~causal, float("-inf"))
    out = torch.matmul(torch.softmax(scores, dim=-1, dtype=torch.float32), v)
    out = out.transpose(1, 2)[:, T:].reshape(P, s, c.nH * c.d)
    return F.linear(out, w[p + "o_proj.weight"])


# ---------------------------------------------------------------------------------------------
# Running a fixture: prefill, greedy decode through the cache, and the self-checks
# ---------------------------------------------------------------------------------------------
def run(model, prompt_ids, steps=DECODE_STEPS):
    """Prefill the prompt, then choose `steps` greedy tokens one by one through the cache: the
    first from the prompt's last logits, each later one from the logits of feeding the previous
    choice (the last choice is not fed). Same shape as `parscale dump`."""
    cache = model.new_cache()
    logits, hidden, agg = model.forward(prompt_ids, cache)
    out = dict(prefill_logits=logits, stream_hidden=hidden, aggregation_weights=agg,
               decode_ids=[], decode_logits=[], decode_stream_hidden=[], decode_aggregation_weights=[])
    last = logits[-1]
    for step in range(steps):
        nxt = int(torch.argmax(last))
        out["decode_ids"].append(nxt)
        out["decode_logits"].append(last)
        if step + 1 == steps:
            break
        step_logits, step_hidden, step_agg = model.forward([nxt], cache)
        last = step_logits[-1]
        out["decode_stream_hidden"].append(step_hidden[0])
        if step_agg is not None:
            out["decode_aggregation_weights"].append(step_agg[0])
    return out


def max_diff(a, b):
    return float((a - b).abs().max())


def self_check(model, prompt_ids, result):
    """Consistency checks that do not trust any single code path. Returns the worst differences."""
    report = {}
    # 1. Incremental decode == a full re-prefill of the longer sequence, for every decode step.
    worst = 0.0
    seq = list(prompt_ids)
    for k in range(1, len(result["decode_ids"])):
        seq.append(result["decode_ids"][k - 1])
        full, _, _ = model.forward(seq, model.new_cache())
        worst = max(worst, max_diff(full[-1], result["decode_logits"][k]))
    report["decode_vs_reprefill"] = worst
    # 2. Prefill one token at a time through the cache == prefill in one pass.
    cache = model.new_cache()
    rows = [model.forward([t], cache)[0][0] for t in prompt_ids]
    report["tokenwise_vs_batch_prefill"] = max_diff(torch.stack(rows), result["prefill_logits"])
    # 3. The official code's zero-query-padding formulation of prefix attention gives the same
    #    attention output as our mask, layer by layer, on the real hidden states.
    c, w = model.c, model.w
    cache = model.new_cache()
    x = w["model.embed_tokens.weight"][torch.tensor(prompt_ids)][None].expand(c.P, len(prompt_ids), c.H).clone()
    worst = 0.0
    for i in range(c.L):
        p = f"model.layers.{i}."
        a = rms_norm(x, w[p + "input_layernorm.weight"], c.eps)
        ours = model.attention(i, a, cache, 0)
        worst = max(worst, max_diff(ours, official_style_prefill_attention(model, i, a)))
        x = x + ours
        b = rms_norm(x, w[p + "post_attention_layernorm.weight"], c.eps)
        x = x + F.linear(F.silu(F.linear(b, w[p + "mlp.gate_proj.weight"])) * F.linear(b, w[p + "mlp.up_proj.weight"]),
                         w[p + "mlp.down_proj.weight"])
    report["official_style_attention"] = worst
    for key, value in report.items():
        assert value < 1e-4, f"self-check {key} failed: max |diff| {value}"
    return report


# ---------------------------------------------------------------------------------------------
# Writing safetensors by hand
# ---------------------------------------------------------------------------------------------
def tensor_bytes(t, dtype):
    """Little-endian bytes of a float32 tensor stored as `dtype`. The values were already rounded
    through that dtype, so the conversion here is exact."""
    torch_dtype = DTYPES[dtype][0]
    if torch_dtype == torch.bfloat16:
        # bf16 is the high half of the float32 bit pattern (exact here, the value is a bf16).
        bits = t.numpy().astype("<f4").view("<u4")
        assert np.all((bits & 0xFFFF) == 0), "value is not exactly representable in bf16"
        return (bits >> 16).astype("<u2").tobytes()
    if torch_dtype == torch.float16:
        return t.numpy().astype("<f2").tobytes()
    return t.numpy().astype("<f4").tobytes()


def write_safetensors(path, weights, names, dtype):
    """File layout: u64 little-endian header length N, N bytes of JSON header (padded with spaces
    to a multiple of 8 so the data starts aligned), then the tensors' bytes back to back in header
    order. Returns the number of data bytes."""
    tag = DTYPES[dtype][1]
    header = OrderedDict([("__metadata__", {"format": "pt"})])
    blobs, offset = [], 0
    for name in names:
        data = tensor_bytes(weights[name], dtype)
        header[name] = {"dtype": tag, "shape": list(weights[name].shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in blobs:
            f.write(data)
    return offset


def write_checkpoint(folder, weights, dtype, shards):
    names = list(weights.keys())
    if shards == 1:
        write_safetensors(os.path.join(folder, "model.safetensors"), weights, names, dtype)
        return
    # Split the tensors, in state_dict order, into `shards` groups of about equal byte size, like
    # transformers' save_pretrained(max_shard_size=...) does; layers end up straddling shards.
    sizes = [len(tensor_bytes(weights[n], dtype)) for n in names]
    total = sum(sizes)
    groups, acc = [[] for _ in range(shards)], 0
    for name, size in zip(names, sizes):
        groups[min(shards - 1, acc * shards // total)].append(name)
        acc += size
    assert all(groups), "a shard would be empty"
    weight_map = {}
    for k, group in enumerate(groups):
        file = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        write_safetensors(os.path.join(folder, file), weights, group, dtype)
        weight_map.update({name: file for name in group})
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")


# ---------------------------------------------------------------------------------------------
# expected.json
# ---------------------------------------------------------------------------------------------
def f32_number(v):
    """The shortest decimal that reads back as the same float32 (numpy's float32 repr): full
    float32 precision at about half the characters of a float64 repr."""
    v = np.float32(v)
    assert np.isfinite(v)
    return float(str(v))


def to_lists(t):
    if isinstance(t, list):
        return [to_lists(x) for x in t]
    if t.dim() == 0:
        return f32_number(t.item())
    return [to_lists(x) for x in t]


def dump_json(obj):
    """JSON with one innermost row of numbers per line: diffable and still compact."""
    def enc(v, indent):
        if isinstance(v, dict):
            pad = " " * (indent + 2)
            items = [f"{pad}{json.dumps(k)}: {enc(x, indent + 2)}" for k, x in v.items()]
            return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
        if isinstance(v, list) and v and isinstance(v[0], list):
            pad = " " * (indent + 2)
            return "[\n" + ",\n".join(pad + enc(x, indent + 2) for x in v) + "\n" + " " * indent + "]"
        return json.dumps(v, separators=(",", ":"))
    return enc(obj, 0) + "\n"


def expected_json(spec, model, prompt_ids, result, checks):
    c = model.c
    out = OrderedDict()
    out["generator"] = "tools/make_fixtures.py"
    out["version"] = VERSION
    out["torch"] = torch.__version__
    out["regenerate"] = "/usr/bin/python3 tools/make_fixtures.py"
    out["description"] = spec["description"]
    out["P"] = c.P
    out["self_check_max_abs_diff"] = {k: float(f"{v:.3g}") for k, v in checks.items()}
    out["prompt_ids"] = prompt_ids
    out["prefill_logits"] = to_lists(result["prefill_logits"])
    out["decode_ids"] = result["decode_ids"]
    out["decode_logits"] = to_lists(result["decode_logits"])
    out["stream_hidden"] = to_lists(result["stream_hidden"])
    if c.P > 1:
        out["aggregation_weights"] = to_lists(result["aggregation_weights"])
    # The same two for the fed decode tokens (K - 1 of them), as `parscale dump --hidden` writes.
    out["decode_stream_hidden"] = to_lists(result["decode_stream_hidden"])
    if c.P > 1:
        out["decode_aggregation_weights"] = to_lists(result["decode_aggregation_weights"])
    return out


def build_fixture(spec):
    name = spec["name"]
    folder = os.path.join(FIXTURES_DIR, name)
    gen = torch.Generator().manual_seed(spec["seed"] + 1)
    prompt_ids = torch.randint(0, spec["vocab"], (spec["prompt_len"],), generator=gen).tolist()
    # bos/eos only matter to generation loops; keep them in the vocabulary. eos is fixed after
    # decoding to a token that the greedy path never picks, so a runtime that stops at eos still
    # produces all K tokens.
    spec = dict(spec, bos=0, eos=spec["vocab"] - 1)
    config = make_config_json(spec)
    model = Model(config, make_weights(Config(config), spec["dtype"], spec["seed"]))
    result = run(model, prompt_ids)
    if spec["eos"] in result["decode_ids"]:
        spec["eos"] = next(t for t in reversed(range(spec["vocab"])) if t not in result["decode_ids"])
        config = make_config_json(spec)
    checks = self_check(model, prompt_ids, result)

    # The greedy choices must be robust: the runtime's float32 rounding differs from PyTorch's,
    # so the best and second-best logit of every choice must be clearly apart.
    margin = min(float(l.topk(2).values[0] - l.topk(2).values[1]) for l in result["decode_logits"])
    assert margin > 1e-3, f"{name}: greedy choice too close to a tie ({margin})"
    info = f"logit range [{float(result['prefill_logits'].min()):.2f}, {float(result['prefill_logits'].max()):.2f}]"
    info += f", greedy margin {margin:.3f}"
    if model.c.P > 1:
        agg = result["aggregation_weights"]
        spread = float(agg.max() - agg.min())
        assert spread > 0.05, f"{name}: aggregation weights nearly uniform (spread {spread})"
        info += f", aggregation weights [{float(agg.min()):.3f}, {float(agg.max()):.3f}]"
        # The stream order matters: concatenating stream after stream must give other weights.
        wrong = torch.cat([result["stream_hidden"][:, p] for p in range(model.c.P)], dim=-1)
        wrong_z = F.linear(F.silu(F.linear(wrong, model.w["model.aggregate_layer.0.weight"],
                                           model.w["model.aggregate_layer.0.bias"])),
                           model.w["model.aggregate_layer.2.weight"], model.w["model.aggregate_layer.2.bias"])
        info += f", non-interleaved would differ by {max_diff(torch.softmax(wrong_z, -1) * (1 - model.c.smooth) + model.c.smooth / model.c.P, agg):.3f}"

    os.makedirs(folder, exist_ok=True)
    for old in os.listdir(folder):  # a stale shard layout must not survive a regeneration
        os.remove(os.path.join(folder, old))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    write_checkpoint(folder, model.w, spec["dtype"], spec.get("shards", 1))
    with open(os.path.join(folder, "expected.json"), "w") as f:
        f.write(dump_json(expected_json(spec, model, prompt_ids, result, checks)))
    size = sum(os.path.getsize(os.path.join(folder, x)) for x in os.listdir(folder))
    print(f"{name}: P={model.c.P} T={model.c.T if model.c.P > 1 else '-'} {spec['dtype']} "
          f"H={model.c.H} nH={model.c.nH} nKV={model.c.nKV} d={model.c.d} V={model.c.V} L={model.c.L} "
          f"{'tied' if model.c.tied else 'untied'}, {size / 1024:.0f} KiB")
    print(f"    prompt {prompt_ids} -> greedy {result['decode_ids']}; {info}")
    print("    self-check max |diff|: " + ", ".join(f"{k} {v:.2e}" for k, v in checks.items()))
    return checks


def main(argv):
    torch.set_num_threads(1)  # one summation order: regenerating gives identical files
    wanted = set(argv)
    unknown = wanted - {s["name"] for s in FIXTURES}
    if unknown:
        sys.exit(f"unknown fixture(s): {', '.join(sorted(unknown))}")
    os.makedirs(FIXTURES_DIR, exist_ok=True)
    worst = {}
    with torch.no_grad():
        for spec in FIXTURES:
            if wanted and spec["name"] not in wanted:
                continue
            for k, v in build_fixture(spec).items():
                worst[k] = max(worst.get(k, 0.0), v)
    print("worst self-check differences: " + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))


if __name__ == "__main__":
    main(sys.argv[1:])
