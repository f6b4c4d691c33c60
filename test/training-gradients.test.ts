// Gradient checks: every parameter tensor's analytic gradient (src/training/model.ts) against
// central finite differences of the loss, for random small shapes.
//
// Everything runs in float64 (the same generic code with Float64Array weights), so the finite
// differences are accurate: with step h = 1e-5 the truncation error is O(h²·|L'''|) ≈ 1e-10 and
// the rounding error ≈ 1e-16·|L| / h ≈ 1e-10, while a real bug (a missing term, a wrong index)
// is of the order of the gradient itself. Tolerance: |analytic − numeric| ≤ 1e-6 + 1e-4·|numeric|,
// about 10⁴ times the expected error and far below any bug.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { ModelConfig } from '../src/checkpoint/config.ts';
import { type Batch, batchLoss, lossAndGradients } from '../src/training/model.ts';
import { parameterEntries, toFloat64 } from '../src/training/weights.ts';
import { randomWeights, rng, tinyConfig } from './helpers/random-model.ts';

const shapes = fc.record({
  P: fc.constantFrom(1, 2, 3),
  T: fc.integer({ min: 1, max: 3 }),
  kvHeads: fc.constantFrom(1, 2), // always fewer than the 4 query heads: grouped-query attention
  tied: fc.boolean(),
  smoothing: fc.constantFrom(0, 0.01, 0.1),
  batchSize: fc.integer({ min: 1, max: 2 }),
  length: fc.integer({ min: 1, max: 4 }),
  seed: fc.integer({ min: 0, max: 1e9 }),
});

function setup(s: {
  P: number;
  T: number;
  kvHeads: number;
  tied: boolean;
  smoothing: number;
  batchSize: number;
  length: number;
  seed: number;
}): { config: ModelConfig; batch: Batch } {
  // head_dim 4 with 4 heads is 16 ≠ H = 12: the o_proj and q_proj shapes are not square
  const config = tinyConfig({
    hiddenSize: 12,
    intermediateSize: 10,
    vocabSize: 9,
    headDim: 4,
    numHeads: 4,
    numKvHeads: s.kvHeads,
    parscaleN: s.P,
    parscaleNTokens: s.T,
    parscaleAttnSmooth: s.smoothing,
    tieWordEmbeddings: s.tied,
    ropeTheta: 100, // large rotations at small positions, so RoPE matters
  });
  const random = rng(s.seed ^ 0x5eed);
  const N = s.batchSize * s.length;
  const inputs = Int32Array.from({ length: N }, () => Math.floor(random() * config.vocabSize));
  const targets = Int32Array.from({ length: N }, () => Math.floor(random() * config.vocabSize));
  if (N > 1) targets[N - 1] = -1; // ignored positions must not count
  return { config, batch: { inputs, targets, batchSize: s.batchSize, length: s.length } };
}

describe('training gradients', () => {
  it('every parameter tensor matches central finite differences (float64)', () => {
    fc.assert(
      fc.property(shapes, (s) => {
        const { config, batch } = setup(s);
        const weights = toFloat64(randomWeights(config, s.seed));
        const { grads } = lossAndGradients(config, weights, batch);
        const params = parameterEntries(config, weights);
        const gradEntries = parameterEntries(config, grads);
        assert.equal(params.length, gradEntries.length);
        const pick = rng(s.seed + 1);
        const h = 1e-5;
        for (let e = 0; e < params.length; e++) {
          const { name, data } = params[e];
          const grad = gradEntries[e].data;
          // a sample of entries: 3 random ones
          for (let k = 0; k < 3; k++) {
            const i = Math.floor(pick() * data.length);
            const saved = data[i];
            data[i] = saved + h;
            const plus = batchLoss(config, weights, batch);
            data[i] = saved - h;
            const minus = batchLoss(config, weights, batch);
            data[i] = saved;
            const numeric = (plus - minus) / (2 * h);
            const error = Math.abs(grad[i] - numeric);
            assert.ok(
              error <= 1e-6 + 1e-4 * Math.abs(numeric),
              `${name}[${i}]: analytic ${grad[i]}, numeric ${numeric} (P ${s.P}, T ${s.T}, nKV ${s.kvHeads}, tied ${s.tied})`,
            );
          }
        }
      }),
      { numRuns: 30 },
    );
  });

  it('the tied embedding gets the gradients of both its uses', () => {
    const s = { P: 2, T: 2, kvHeads: 2, tied: true, smoothing: 0.01, batchSize: 1, length: 3, seed: 7 };
    const { config, batch } = setup(s);
    const weights = toFloat64(randomWeights(config, 7));
    const { grads } = lossAndGradients(config, weights, batch);
    assert.equal(grads.lmHead, grads.embedTokens);
    // a row never used as input still gets a gradient from the LM head
    const used = new Set(batch.inputs);
    const unused = [...Array(config.vocabSize).keys()].find((t) => !used.has(t))!;
    const row = grads.embedTokens.subarray(unused * config.hiddenSize, (unused + 1) * config.hiddenSize);
    assert.ok(row.some((v) => v !== 0));
  });
});
