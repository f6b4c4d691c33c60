// `npm run train:default`: train the small default ParScale model on the King James Bible with
// the paper's two-stage recipe, on the CPU, in about an hour on 2 cores:
//   stage 1  an ordinary P = 1 Qwen2 model (most of the tokens; 1 stream is 4× cheaper)
//   stage 2  add P = 4 streams (new prefixes + aggregation layer) and train everything on a
//            small share of further tokens with a lower, annealed learning rate
// Writes models/trained-default-p1 (stage 1) and models/trained-default (the P = 4 result),
// then prints a sample. Set STAGE=2 to rerun only stage 2 from an existing stage 1.
import { existsSync } from 'node:fs';
import { ReferenceModel } from '../src/reference/model.ts';
import { loadModelParams } from '../src/training/checkpoint.ts';
import { DEFAULT_OPTIONS, type TrainOptions, train } from '../src/training/train.ts';
import { Tokenizer } from '@huggingface/tokenizers';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const data = 'data/kjv-train.txt';
const val = 'data/kjv-val.txt';
if (!existsSync(data)) throw new Error(`${data} is missing: run npx tsx tools/corpus-kjv.ts (see data/README.md)`);
const stage1Dir = 'models/trained-default-p1';
const stage2Dir = 'models/trained-default';
const threads = Number(process.env.THREADS ?? 2);

const shape: Partial<TrainOptions> = {
  layers: 3,
  hidden: 128,
  heads: 4,
  kvHeads: 2,
  intermediate: 256,
  vocabSize: 1024,
  context: 128,
  batch: 8,
  tied: true,
};

if (process.env.STAGE !== '2') {
  await train({
    ...DEFAULT_OPTIONS,
    ...shape,
    data,
    val,
    out: stage1Dir,
    log: `${stage1Dir}.jsonl`,
    P: 1,
    steps: Number(process.env.STAGE1_STEPS ?? 500),
    lr: 3e-3,
    evalEvery: 100,
    saveEvery: 100,
    seed: 1,
    threads,
  });
}
await train({
  ...DEFAULT_OPTIONS,
  ...shape,
  data,
  val,
  init: stage1Dir,
  out: stage2Dir,
  log: `${stage2Dir}.jsonl`,
  P: 4,
  prefixTokens: 16,
  attnSmooth: 0.01,
  steps: Number(process.env.STAGE2_STEPS ?? 60),
  lr: 1e-3,
  warmup: 5,
  evalEvery: 20,
  saveEvery: 20,
  seed: 2,
  threads,
});

// a sample, sampled at temperature 0.8 from the top 40 (the generation_config.json defaults)
const { config, params } = await loadModelParams(stage2Dir);
const model = new ReferenceModel(config, params);
const tokenizer = new Tokenizer(
  JSON.parse(readFileSync(join(stage2Dir, 'tokenizer.json'), 'utf8')),
  JSON.parse(readFileSync(join(stage2Dir, 'tokenizer_config.json'), 'utf8')),
);
let seed = 12345;
const random = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 4294967296);
const ids = tokenizer.encode('And the LORD said unto Moses,', { add_special_tokens: false }).ids;
const sequence = model.newSequence();
let logits = model.forward(sequence, ids).logits[0];
const out = [...ids];
for (let i = 0; i < 80; i++) {
  const order = [...logits.keys()].sort((a, b) => logits[b] - logits[a]).slice(0, 40);
  const weights = order.map((id) => Math.exp((logits[id] - logits[order[0]]) / 0.8));
  let r = random() * weights.reduce((s, w) => s + w, 0);
  let next = order[0];
  for (let k = 0; k < order.length; k++) if ((r -= weights[k]) <= 0) { next = order[k]; break; }
  out.push(next);
  logits = model.forward(sequence, [next]).logits[0];
}
process.stdout.write(tokenizer.decode(out) + '\n');
