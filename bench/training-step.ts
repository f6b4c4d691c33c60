// One thread's share of a training step of the default shape (docs/training.md, "Speed"): B = 4
// sequences (half of --batch 8 on 2 threads) of 128 tokens, forward + backward, with the matrix
// products timed apart from everything else. Run:
//   npx tsx bench/training-step.ts [P=4] [ts|wasm]
// It wraps the entries of tsProducts / wasmProducts with timers, which is how model.ts reaches
// them. For attention versus the rest, profile the same run with `node --cpu-prof`.
import type { ModelConfig } from '../src/checkpoint/config.ts';
import { trainingBackward, trainingForward } from '../src/training/model.ts';
import { KERNEL_CHOICES, type KernelChoice, type LinearProducts, tsProducts, wasmProducts } from '../src/training/wasm-products.ts';
import { initParams } from '../src/training/weights.ts';

const P = Number(process.argv[2] ?? 4);
const kernels = (process.argv[3] ?? 'wasm') as KernelChoice;
if (!Number.isInteger(P) || P < 1 || !KERNEL_CHOICES.includes(kernels)) {
  throw new Error(`usage: npx tsx bench/training-step.ts [P ≥ 1] [${KERNEL_CHOICES.join('|')}], got ${process.argv.slice(2).join(' ')}`);
}
const config: ModelConfig = {
  modelType: 'qwen2_parscale',
  hiddenSize: 128,
  intermediateSize: 256,
  numLayers: 3,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 32,
  vocabSize: 1024,
  rmsNormEps: 1e-6,
  ropeTheta: 10000,
  maxPositionEmbeddings: 2048,
  tieWordEmbeddings: true,
  torchDtype: 'float32',
  bosTokenId: null,
  eosTokenIds: [1023],
  parscaleN: P,
  parscaleNTokens: 16,
  parscaleAttnSmooth: 0.01,
};
const params = initParams(config, 1);
const B = 4;
const n = 128;
// any token ids will do for timing
const inputs = Int32Array.from({ length: B * n }, (_, i) => (i * 7919) % config.vocabSize);
const targets = Int32Array.from({ length: B * n }, (_, i) => (i * 104729) % config.vocabSize);
const batch = { inputs, targets, batchSize: B, length: n };

const names = ['linearForward', 'linearBackwardInput', 'linearBackwardWeight'] as const;
const spent: Record<(typeof names)[number], number> = { linearForward: 0, linearBackwardInput: 0, linearBackwardWeight: 0 };
const table: LinearProducts = kernels === 'wasm' ? wasmProducts : tsProducts;
for (const name of names) {
  const product = table[name] as (...args: unknown[]) => void;
  (table as unknown as Record<string, unknown>)[name] = (...args: unknown[]) => {
    const t = performance.now();
    product(...args);
    spent[name] += performance.now() - t;
  };
}

const steps = 4;
let forward = 0;
let backward = 0;
for (let s = 0; s <= steps; s++) {
  if (s === 1) {
    // step 0 was the JIT's warm-up
    for (const name of names) spent[name] = 0;
    forward = backward = 0;
  }
  const t0 = performance.now();
  const acts = trainingForward(config, params, batch, { kernels });
  const t1 = performance.now();
  trainingBackward(config, params, acts, { kernels });
  forward += t1 - t0;
  backward += performance.now() - t1;
}
const ms = (x: number) => Math.round(x / steps);
const products = spent.linearForward + spent.linearBackwardInput + spent.linearBackwardWeight;
const total = forward + backward;
console.log(
  `P=${P} kernels=${kernels}: ${ms(total)} ms per step (forward ${ms(forward)}, backward ${ms(backward)}); ` +
    `products ${ms(products)} ms = ${((100 * products) / total).toFixed(0)}% ` +
    `(forward ${ms(spent.linearForward)}, backward input ${ms(spent.linearBackwardInput)}, backward weight ${ms(spent.linearBackwardWeight)}); ` +
    `everything else ${ms(total - products)} ms; ${((B * n * steps) / (total / 1000)).toFixed(0)} tokens/s on this thread`,
);
