#!/usr/bin/python3
"""Reload a fixture folder written by tools/make_fixtures.py and recompute its expected.json.

    /usr/bin/python3 tools/check_fixture.py test/fixtures/NAME [more folders ...]

The weights are read back from the safetensors file(s) with the small reader below (numpy only,
bf16 decoded by bit shifting, not through torch's bf16 path), checked against the layout the
config implies (names, shapes, dtypes, contiguous offsets, index.json), and then fed through
make_fixtures.Model. Every number of expected.json is compared; the largest absolute difference
per field is printed. Then a separate float64 implementation written with explicit loops from
SPEC.md's formulas recomputes all logits, as an independent opinion on make_fixtures.Model. Not run by CI: it is a check of the oracle itself, for whoever changes it.
"""

import json
import os
import struct
import sys

import numpy as np
import torch

sys.dont_write_bytecode = True  # no tools/__pycache__ left in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402  (the model and the tensor list live there)

TAG_TO_CONFIG_DTYPE = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


def read_safetensors(path):
    """name -> (dtype tag, float32 numpy array). Validates the framing as it goes."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0, f"{path}: header length {n} is not a multiple of 8"
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    assert header.pop("__metadata__", {}).get("format") == "pt"
    tensors, end = {}, 0
    # Offsets are relative to the start of the data section, tensors back to back.
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        begin, stop = info["data_offsets"]
        assert begin == end, f"{path}: gap or overlap before {name}"
        end = stop
        chunk = data[begin:stop]
        count = int(np.prod(info["shape"])) if info["shape"] else 1
        tag = info["dtype"]
        if tag == "F32":
            values = np.frombuffer(chunk, dtype="<f4")
        elif tag == "F16":
            values = np.frombuffer(chunk, dtype="<f2").astype(np.float32)
        elif tag == "BF16":
            # bf16 -> f32 is exact: the 16 bits become the high half of the 32-bit pattern.
            values = (np.frombuffer(chunk, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(f"{path}: unexpected dtype {tag} for {name}")
        assert values.size == count, f"{path}: {name} has {values.size} values, shape says {count}"
        tensors[name] = (tag, values.reshape(info["shape"]).copy())
    assert end == len(data), f"{path}: {len(data) - end} trailing bytes"
    return tensors


def load_folder(folder):
    index_path = os.path.join(folder, "model.safetensors.index.json")
    if not os.path.exists(index_path):
        return read_safetensors(os.path.join(folder, "model.safetensors"))
    with open(index_path) as f:
        index = json.load(f)
    tensors = {}
    for file in sorted(set(index["weight_map"].values())):
        for name, value in read_safetensors(os.path.join(folder, file)).items():
            assert index["weight_map"].get(name) == file, f"{name} is in {file}, index says {index['weight_map'].get(name)}"
            tensors[name] = value
    assert set(tensors) == set(index["weight_map"]), "index.json names tensors that no shard holds"
    nbytes = sum(v.size * (4 if tag == "F32" else 2) for tag, v in tensors.values())
    assert index["metadata"]["total_size"] == nbytes, f"total_size {index['metadata']['total_size']} != {nbytes}"
    return tensors


def spec_forward_f64(c, tensors, ids):
    """A third opinion, written straight from SPEC.md's formulas with explicit index loops in
    float64 numpy (no torch, no shared helpers): RoPE pairs j with j + d/2 at angle
    t * theta^(-2j/d), prefixes are prepended unrotated, head h reads KV head h // g, and the
    aggregation input is built element by element as c[j*P + p] = h[p][j].
    Returns logits [n, V] for every position (a full forward pass, no cache)."""
    W = {name: value.astype(np.float64) for name, (_, value) in tensors.items()}
    n, P, H, d, g = len(ids), c.P, c.H, c.d, c.nH // c.nKV
    T = c.T if P > 1 else 0

    def norm(v, weight):
        return v / np.sqrt(np.mean(v * v) + c.eps) * weight

    def rope(u, t):
        out = u.copy()
        for j in range(d // 2):
            angle = t * c.theta ** (-2.0 * j / d)
            cos, sin = np.cos(angle), np.sin(angle)
            out[j] = u[j] * cos - u[j + d // 2] * sin
            out[j + d // 2] = u[j + d // 2] * cos + u[j] * sin
        return out

    silu = lambda z: z / (1.0 + np.exp(-z))
    x = [[W["model.embed_tokens.weight"][tok].copy() for tok in ids] for _ in range(P)]
    for i in range(c.L):
        pre = f"model.layers.{i}."
        for p in range(P):
            keys = [[None] * n for _ in range(c.nKV)]
            vals = [[None] * n for _ in range(c.nKV)]
            queries = [[None] * n for _ in range(c.nH)]
            for t in range(n):
                a = norm(x[p][t], W[pre + "input_layernorm.weight"])
                q = W[pre + "self_attn.q_proj.weight"] @ a + W[pre + "self_attn.q_proj.bias"]
                k = W[pre + "self_attn.k_proj.weight"] @ a + W[pre + "self_attn.k_proj.bias"]
                v = W[pre + "self_attn.v_proj.weight"] @ a + W[pre + "self_attn.v_proj.bias"]
                for h in range(c.nH):
                    queries[h][t] = rope(q[h * d:(h + 1) * d], t)
                for h in range(c.nKV):
                    keys[h][t] = rope(k[h * d:(h + 1) * d], t)
                    vals[h][t] = v[h * d:(h + 1) * d]
            new_x = []
            for t in range(n):
                heads = []
                for h in range(c.nH):
                    kv = h // g
                    ks = [W[pre + "self_attn.prefix_k"][p, kv, e] for e in range(T)] + keys[kv][:t + 1]
                    vs = [W[pre + "self_attn.prefix_v"][p, kv, e] for e in range(T)] + vals[kv][:t + 1]
                    scores = np.array([queries[h][t] @ key for key in ks]) / np.sqrt(d)
                    prob = np.exp(scores - scores.max())
                    prob /= prob.sum()
                    heads.append(sum(pr * val for pr, val in zip(prob, vs)))
                y = x[p][t] + W[pre + "self_attn.o_proj.weight"] @ np.concatenate(heads)
                b = norm(y, W[pre + "post_attention_layernorm.weight"])
                gate = W[pre + "mlp.gate_proj.weight"] @ b
                up = W[pre + "mlp.up_proj.weight"] @ b
                new_x.append(y + W[pre + "mlp.down_proj.weight"] @ (silu(gate) * up))
            x[p] = new_x
    head = W["model.embed_tokens.weight"] if c.tied else W["lm_head.weight"]
    logits = []
    for t in range(n):
        hs = [norm(x[p][t], W["model.norm.weight"]) for p in range(P)]
        if P == 1:
            y = hs[0]
        else:
            cat = np.zeros(P * H)
            for j in range(H):
                for p in range(P):
                    cat[j * P + p] = hs[p][j]
            hid = silu(W["model.aggregate_layer.0.weight"] @ cat + W["model.aggregate_layer.0.bias"])
            z = W["model.aggregate_layer.2.weight"] @ hid + W["model.aggregate_layer.2.bias"]
            w = np.exp(z - z.max())
            w = w / w.sum() * (1 - c.smooth) + c.smooth / P
            y = sum(w[p] * hs[p] for p in range(P))
        logits.append(head @ y)
    return np.array(logits)


def check(folder):
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(folder, "expected.json")) as f:
        expected = json.load(f)
    c = mf.Config(config)
    tensors = load_folder(folder)

    shapes = mf.tensor_shapes(c)
    assert set(tensors) == set(shapes), f"tensor names differ: {sorted(set(tensors) ^ set(shapes))}"
    for name, shape in shapes.items():
        tag, value = tensors[name]
        assert list(value.shape) == shape, f"{name}: shape {list(value.shape)}, expected {shape}"
        assert TAG_TO_CONFIG_DTYPE[tag] == config["torch_dtype"], f"{name}: {tag} vs torch_dtype {config['torch_dtype']}"

    model = mf.Model(c, {name: torch.from_numpy(value) for name, (_, value) in tensors.items()})
    with torch.no_grad():
        result = mf.run(model, expected["prompt_ids"], len(expected["decode_ids"]))
    assert result["decode_ids"] == expected["decode_ids"], f"greedy ids {result['decode_ids']} != {expected['decode_ids']}"

    fields = ["prefill_logits", "decode_logits", "stream_hidden", "decode_stream_hidden"]
    if c.P > 1:
        fields += ["aggregation_weights", "decode_aggregation_weights"]
    worst = 0.0
    parts = []
    for field in fields:
        got = result[field]
        got = torch.stack(got) if isinstance(got, list) else got
        want = torch.tensor(expected[field], dtype=torch.float32)
        assert got.shape == want.shape, f"{field}: shape {tuple(got.shape)} vs {tuple(want.shape)}"
        diff = float((got - want).abs().max())
        worst = max(worst, diff)
        parts.append(f"{field} {diff:.2e}")
    print(f"{os.path.basename(os.path.normpath(folder))}: max |diff| " + ", ".join(parts))

    # The float64 loop implementation over prompt + the first K-1 greedy tokens: its logits must
    # match prefill_logits and decode_logits[1:] to float32 accuracy (relative to the row scale,
    # the same criterion the TypeScript tests use: |diff| <= 1e-4 * max|row| + 1e-5).
    seq = expected["prompt_ids"] + expected["decode_ids"][:-1]
    f64 = spec_forward_f64(c, tensors, seq)
    rows = np.array(expected["prefill_logits"] + expected["decode_logits"][1:], dtype=np.float64)
    rel = float(np.max(np.abs(f64 - rows) / np.maximum(np.abs(rows).max(axis=1, keepdims=True), 1)))
    print(f"    float64 loop implementation from SPEC.md: max relative logit diff {rel:.2e}")
    assert rel < 1e-4, "the float64 implementation disagrees"
    return worst


def main(argv):
    if not argv:
        sys.exit(__doc__)
    torch.set_num_threads(1)
    worst = max(check(folder) for folder in argv)
    # Same weights, same code: only the JSON round trip (shortest float32 decimal) may differ.
    if worst > 1e-6:
        sys.exit(f"FAILED: max |diff| {worst:.2e}")
    print(f"ok (max |diff| {worst:.2e})")


if __name__ == "__main__":
    main(sys.argv[1:])
