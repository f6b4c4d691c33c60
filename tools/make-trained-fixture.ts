// Writes test/fixtures/trained-p2-bf16: a tiny ParScale model (P = 2) trained for a few steps by
// our own training loop (src/training), so that the PyTorch oracle can check what training
// writes. The folder keeps only what a Hugging Face model folder has (no trainer state).
// Then `/usr/bin/python3 tools/fixture_from_checkpoint.py test/fixtures/trained-p2-bf16 --ids ...`
// adds expected.json (the ids are printed at the end), and the fixture tests compare our
// forward (both backends) with PyTorch's on it.
//
//   npx tsx tools/make-trained-fixture.ts
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { DEFAULT_OPTIONS, train } from '../src/training/train.ts';

const out = 'test/fixtures/trained-p2-bf16';
const work = mkdtempSync(join(tmpdir(), 'parscale-trained-fixture-'));
await train({
  ...DEFAULT_OPTIONS,
  data: 'data/kjv-val.txt',
  out: work,
  P: 2,
  prefixTokens: 4,
  attnSmooth: 0.05,
  layers: 2,
  hidden: 32,
  heads: 4,
  kvHeads: 2,
  intermediate: 64,
  vocabSize: 300,
  context: 32,
  batch: 4,
  steps: 40,
  lr: 1e-2,
  evalEvery: 0,
  saveEvery: 0,
  dtype: 'BF16',
  seed: 11,
  threads: 1,
  quiet: true,
});
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
for (const file of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) {
  copyFileSync(join(work, file), join(out, file));
}
rmSync(work, { recursive: true, force: true });
const tokenizer = new Tokenizer(
  JSON.parse(readFileSync(join(out, 'tokenizer.json'), 'utf8')),
  JSON.parse(readFileSync(join(out, 'tokenizer_config.json'), 'utf8')),
);
const ids = tokenizer.encode('And God said, Let there be', { add_special_tokens: false }).ids;
process.stdout.write(`wrote ${out}; prompt ids: ${ids.join(',')}\n`);
