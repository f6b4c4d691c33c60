// The training forward computes the same function as ReferenceModel.forward, and the faster
// training kernels compute what the reference kernels compute.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { matmul, rmsnorm, rope, ropeFrequencies } from '../src/reference/kernels.ts';
import { ReferenceModel } from '../src/reference/model.ts';
import {
  linearBackwardInput,
  linearBackwardWeight,
  linearForward,
  rmsnormForward,
  ropeRotate,
  ropeTables,
} from '../src/training/kernels.ts';
import { trainingForward } from '../src/training/model.ts';
import { randomArray, randomWeights, rng, tinyConfig } from './helpers/random-model.ts';

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

describe('training kernels against the reference kernels', () => {
  const dims = fc.record({
    rows: fc.integer({ min: 1, max: 9 }),
    inDim: fc.integer({ min: 1, max: 13 }),
    outDim: fc.integer({ min: 1, max: 11 }),
    seed: fc.integer({ min: 0, max: 1e9 }),
  });

  it('linearForward equals matmul (with and without bias)', () => {
    fc.assert(
      fc.property(dims, fc.boolean(), ({ rows, inDim, outDim, seed }, withBias) => {
        const random = rng(seed);
        const x = randomArray(random, rows * inDim, 1);
        const w = randomArray(random, outDim * inDim, 1);
        const bias = withBias ? randomArray(random, outDim, 1) : null;
        const expected = new Float32Array(rows * outDim);
        const actual = new Float32Array(rows * outDim);
        matmul(expected, x, w, bias, rows, inDim, outDim);
        linearForward(actual, x, w, bias, rows, inDim, outDim);
        assert.ok(maxAbsDiff(actual, expected) <= 1e-6);
      }),
    );
  });

  it('linear backward kernels are the transposed products (checked against explicit sums)', () => {
    fc.assert(
      fc.property(dims, ({ rows, inDim, outDim, seed }) => {
        const random = rng(seed);
        const x = Float64Array.from(randomArray(random, rows * inDim, 1));
        const w = Float64Array.from(randomArray(random, outDim * inDim, 1));
        const dy = Float64Array.from(randomArray(random, rows * outDim, 1));
        const dx = new Float64Array(rows * inDim);
        const dw = new Float64Array(outDim * inDim);
        const db = new Float64Array(outDim);
        linearBackwardInput(dx, dy, w, rows, inDim, outDim);
        linearBackwardWeight(dw, db, dy, x, rows, inDim, outDim);
        for (let r = 0; r < rows; r++) {
          for (let i = 0; i < inDim; i++) {
            let s = 0;
            for (let o = 0; o < outDim; o++) s += dy[r * outDim + o] * w[o * inDim + i];
            assert.ok(Math.abs(dx[r * inDim + i] - s) <= 1e-12);
          }
        }
        for (let o = 0; o < outDim; o++) {
          let sb = 0;
          for (let r = 0; r < rows; r++) sb += dy[r * outDim + o];
          assert.ok(Math.abs(db[o] - sb) <= 1e-12);
          for (let i = 0; i < inDim; i++) {
            let s = 0;
            for (let r = 0; r < rows; r++) s += dy[r * outDim + o] * x[r * inDim + i];
            assert.ok(Math.abs(dw[o * inDim + i] - s) <= 1e-12);
          }
        }
      }),
    );
  });

  it('rmsnormForward equals rmsnorm; ropeRotate equals rope and −1 undoes it', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1e9 }), fc.integer({ min: 0, max: 40 }), (seed, position) => {
        const random = rng(seed);
        const rows = 3;
        const dim = 8;
        const x = randomArray(random, rows * dim, 2);
        const weight = randomArray(random, dim, 0.5, 1);
        const expected = new Float32Array(rows * dim);
        const actual = new Float32Array(rows * dim);
        rmsnorm(expected, x, weight, 1e-6, rows, dim);
        rmsnormForward(actual, new Float64Array(rows), x, weight, 1e-6, rows, dim);
        assert.ok(maxAbsDiff(actual, expected) <= 1e-5);

        const freqs = ropeFrequencies(dim, 10000);
        const { cos, sin } = ropeTables(freqs, position + 1);
        const a = x.slice();
        const b = x.slice();
        rope(a, dim, 2, dim, position, freqs); // rows 1 and 2 as 2 heads
        ropeRotate(b, dim, 2, dim, position, cos, sin, 1);
        assert.ok(maxAbsDiff(a, b) <= 1e-6);
        ropeRotate(b, dim, 2, dim, position, cos, sin, -1);
        assert.ok(maxAbsDiff(b, x) <= 1e-5);
      }),
    );
  });
});

describe('training forward', () => {
  it('gives the logits of ReferenceModel.forward (within 1e-5) for every sequence of a batch', () => {
    fc.assert(
      fc.property(
        fc.record({
          P: fc.constantFrom(1, 2, 3, 4),
          T: fc.integer({ min: 1, max: 5 }),
          kvHeads: fc.constantFrom(1, 2, 4),
          tied: fc.boolean(),
          batchSize: fc.integer({ min: 1, max: 3 }),
          length: fc.integer({ min: 1, max: 7 }),
          seed: fc.integer({ min: 0, max: 1e9 }),
        }),
        (s) => {
          const config = tinyConfig({
            parscaleN: s.P,
            parscaleNTokens: s.T,
            numKvHeads: s.kvHeads,
            tieWordEmbeddings: s.tied,
            parscaleAttnSmooth: 0.1,
          });
          const weights = randomWeights(config, s.seed);
          const model = new ReferenceModel(config, weights);
          const random = rng(s.seed + 3);
          const N = s.batchSize * s.length;
          const inputs = Int32Array.from({ length: N }, () => Math.floor(random() * config.vocabSize));
          const acts = trainingForward(config, weights, {
            inputs,
            targets: new Int32Array(N),
            batchSize: s.batchSize,
            length: s.length,
          });
          const V = config.vocabSize;
          for (let b = 0; b < s.batchSize; b++) {
            const tokens = [...inputs.subarray(b * s.length, (b + 1) * s.length)];
            const expected = model.forward(model.newSequence(), tokens, { allLogits: true });
            for (let t = 0; t < s.length; t++) {
              const row = b * s.length + t;
              const diff = maxAbsDiff(acts.logits.subarray(row * V, (row + 1) * V), expected.logits[t]);
              assert.ok(diff <= 1e-5, `sequence ${b} position ${t}: max |Δlogit| ${diff}`);
            }
          }
        },
      ),
      { numRuns: 60 },
    );
  });
});
