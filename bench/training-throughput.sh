#!/usr/bin/env bash
# Training throughput of the default model's shape: --kernels ts vs wasm, P = 1 vs P = 4, the four
# configurations alternated, 3 repetitions; prints the median tokens/s of updates 2-8 of each run
# (update 1 is JIT warm-up). Run from the repository root: bash bench/training-throughput.sh
set -euo pipefail
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for rep in 1 2 3; do
  for P in 1 4; do
    for k in ts wasm; do
      npx tsx tools/train-cli.ts --data data/kjv-train.txt --val data/kjv-val.txt --out "$out/model" \
        --layers 3 --hidden 128 --heads 4 --kv-heads 2 --intermediate 256 --vocab-size 1024 \
        --context 128 --batch 8 --steps 8 --eval-every 0 --threads 2 --P "$P" --kernels "$k" \
        --quiet --log "$out/log.jsonl" > /dev/null
      node -e '
        const lines = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").slice(1);
        const rates = lines.map((l) => JSON.parse(l).tokens_per_s).sort((a, b) => a - b);
        console.log(`P=${process.argv[2]} ${process.argv[3]} rep ${process.argv[4]}: ${Math.round(rates[Math.floor(rates.length / 2)])} tokens/s`);
      ' "$out/log.jsonl" "$P" "$k" "$rep"
      rm -rf "$out/model"
    done
  done
done
