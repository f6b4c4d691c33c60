#!/usr/bin/python3
"""Turn an existing model folder (for example one written by our training loop) into a fixture:
compute its outputs with the PyTorch oracle of tools/make_fixtures.py and write expected.json.

    /usr/bin/python3 tools/fixture_from_checkpoint.py FOLDER --ids 1,2,3 [--decode K] [--description TEXT]

make_fixtures.py makes random weights itself; this script instead reads the weights someone
else wrote (with check_fixture.py's own numpy safetensors reader, which checks names, shapes,
dtypes and offsets against the config), so it tests the writer too: a checkpoint our trainer
saves must load in PyTorch with the official tensor layout and give the logits our loader and
forward give. It runs the same self-checks as make_fixtures.py and then check_fixture.check,
including its float64 loop implementation.
"""

import argparse
import json
import os
import sys

import torch

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_fixture as cf  # noqa: E402
import make_fixtures as mf  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--ids", required=True, help="prompt token ids, comma-separated")
    parser.add_argument("--decode", type=int, default=mf.DECODE_STEPS, help="greedy tokens to decode")
    parser.add_argument("--description", default="a checkpoint written by parscale's training loop")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with open(os.path.join(args.folder, "config.json")) as f:
        config = json.load(f)
    c = mf.Config(config)
    tensors = cf.load_folder(args.folder)
    shapes = mf.tensor_shapes(c)
    if set(tensors) != set(shapes):
        sys.exit(f"{args.folder}: tensor names differ from the official layout: {sorted(set(tensors) ^ set(shapes))}")
    for name, shape in shapes.items():
        if list(tensors[name][1].shape) != shape:
            sys.exit(f"{args.folder}: {name} has shape {list(tensors[name][1].shape)}, expected {shape}")
    prompt_ids = [int(x) for x in args.ids.split(",")]
    if any(i < 0 or i >= c.V for i in prompt_ids):
        sys.exit(f"--ids: every id must be in [0, {c.V})")

    model = mf.Model(c, {name: torch.from_numpy(value) for name, (_, value) in tensors.items()})
    with torch.no_grad():
        result = mf.run(model, prompt_ids, args.decode)
        checks = mf.self_check(model, prompt_ids, result)
    margin = min(float(l.topk(2).values[0] - l.topk(2).values[1]) for l in result["decode_logits"])
    if margin <= 1e-3:
        sys.exit(f"greedy choice too close to a tie ({margin}): pick other --ids")

    spec = {"description": args.description}
    expected = mf.expected_json(spec, model, prompt_ids, result, checks)
    expected["generator"] = "tools/fixture_from_checkpoint.py"
    expected["regenerate"] = f"/usr/bin/python3 tools/fixture_from_checkpoint.py {os.path.normpath(args.folder)} --ids {args.ids} --decode {args.decode}"
    with open(os.path.join(args.folder, "expected.json"), "w") as f:
        f.write(mf.dump_json(expected))
    print(f"{args.folder}: prompt {prompt_ids} -> greedy {result['decode_ids']}, greedy margin {margin:.3f}")
    print("    self-check max |diff|: " + ", ".join(f"{k} {v:.2e}" for k, v in checks.items()))
    with torch.no_grad():
        cf.check(args.folder)


if __name__ == "__main__":
    main()
