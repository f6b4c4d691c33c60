// Properties the reference forward pass must have whatever its weights: they hold for the
// math of SPEC.md, so a bug in the cache, RoPE, the prefix or the aggregation breaks them.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { aggregate, rope, ropeFrequencies } from '../src/reference/kernels.ts';
import { ReferenceModel, type ReferenceWeights } from '../src/reference/model.ts';
import { randomArray, randomWeights, rng, tinyConfig } from './helpers/random-model.ts';

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

const configs = fc.record({
  P: fc.constantFrom(1, 2, 3, 4, 8),
  T: fc.integer({ min: 1, max: 6 }),
  kvHeads: fc.constantFrom(1, 2, 4),
  tied: fc.boolean(),
  seed: fc.integer({ min: 0, max: 1e9 }),
});
const tokenLists = (min: number, max: number) => fc.array(fc.integer({ min: 0, max: 31 }), { minLength: min, maxLength: max });

function modelFor(p: { P: number; T: number; kvHeads: number; tied: boolean; seed: number }): ReferenceModel {
  const config = tinyConfig({ parscaleN: p.P, parscaleNTokens: p.T, numKvHeads: p.kvHeads, tieWordEmbeddings: p.tied });
  return new ReferenceModel(config, randomWeights(config, p.seed));
}

describe('reference model properties', () => {
  it('incremental decode gives the same logits as one prefill of the longer sequence', () => {
    fc.assert(
      fc.property(configs, tokenLists(1, 6), tokenLists(1, 6), (c, prompt, continuation) => {
        const model = modelFor(c);
        const whole = model.forward(model.newSequence(), [...prompt, ...continuation], { allLogits: true });
        const sequence = model.newSequence();
        model.forward(sequence, prompt);
        continuation.forEach((token, i) => {
          const step = model.forward(sequence, [token]);
          // Each row is computed by the same operations in the same order either way.
          assert.ok(maxAbsDiff(step.logits[0], whole.logits[prompt.length + i]) <= 1e-5);
        });
        assert.equal(sequence.length, prompt.length + continuation.length);
      }),
      { numRuns: 40 },
    );
  });

  it('appending tokens never changes the logits of earlier positions (causality)', () => {
    fc.assert(
      fc.property(configs, tokenLists(1, 6), tokenLists(1, 4), (c, prompt, more) => {
        const model = modelFor(c);
        const short = model.forward(model.newSequence(), prompt, { allLogits: true });
        const long = model.forward(model.newSequence(), [...prompt, ...more], { allLogits: true });
        prompt.forEach((_, t) => assert.ok(maxAbsDiff(short.logits[t], long.logits[t]) <= 1e-5));
      }),
      { numRuns: 40 },
    );
  });

  it('the KV cache grows past its first capacity without changing results', () => {
    const model = modelFor({ P: 2, T: 3, kvHeads: 2, tied: true, seed: 7 });
    const tokens = Array.from({ length: 40 }, (_, i) => (i * 7) % 32);
    const whole = model.forward(model.newSequence(), tokens, { allLogits: true });
    const sequence = model.newSequence();
    for (let i = 0; i < tokens.length; i++) {
      const step = model.forward(sequence, [tokens[i]]);
      assert.ok(maxAbsDiff(step.logits[0], whole.logits[i]) <= 1e-5, `position ${i}`);
    }
  });

  it('aggregation weights after smoothing sum to 1 and stay within [s/P, 1 − s + s/P]', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 2, max: 8 }),
        fc.integer({ min: 1, max: 12 }),
        fc.double({ min: 0, max: 0.5, noNaN: true }),
        fc.integer({ min: 0, max: 1e9 }),
        (P, H, s, seed) => {
          const random = rng(seed);
          const hidden = randomArray(random, P * H, 3);
          // large aggregation weights push the softmax to its extremes
          const w0 = randomArray(random, H * P * H, 10);
          const w2 = randomArray(random, P * H, 30);
          const weights = new Float32Array(P);
          const y = new Float32Array(H);
          aggregate(y, weights, hidden, w0, randomArray(random, H, 1), w2, randomArray(random, P, 5), s, P, H, new Float32Array(P * H + H));
          const sum = weights.reduce((a, b) => a + b, 0);
          assert.ok(Math.abs(sum - 1) <= 1e-5, `sum ${sum}`);
          for (const w of weights) {
            assert.ok(w >= s / P - 1e-6 && w <= 1 - s + s / P + 1e-6, `weight ${w} outside bounds for s=${s}, P=${P}`);
          }
          // y is the weighted sum of the streams
          for (let j = 0; j < H; j++) {
            let expected = 0;
            for (let p = 0; p < P; p++) expected += weights[p] * hidden[p * H + j];
            assert.ok(Math.abs(y[j] - expected) <= 1e-5 * (1 + Math.abs(expected)));
          }
        },
      ),
    );
  });

  it('permuting the streams consistently leaves the logits unchanged', () => {
    fc.assert(
      fc.property(
        configs.filter((c) => c.P > 1),
        tokenLists(1, 5),
        fc.integer({ min: 0, max: 1e9 }),
        (c, tokens, permSeed) => {
          const model = modelFor(c);
          const { parscaleN: P, hiddenSize: H } = model.config;
          // new stream q is old stream perm[q]
          const random = rng(permSeed);
          const perm = Array.from({ length: P }, (_, i) => i);
          for (let i = P - 1; i > 0; i--) {
            const j = Math.floor(random() * (i + 1));
            [perm[i], perm[j]] = [perm[j], perm[i]];
          }
          const w = model.weights;
          const permuteBlocks = (a: Float32Array, block: number) => {
            const out = new Float32Array(a.length);
            for (let q = 0; q < P; q++) out.set(a.subarray(perm[q] * block, (perm[q] + 1) * block), q * block);
            return out;
          };
          const agg = w.aggregation!;
          // aggregate_layer.0 reads c[j·P + p]: permute its columns within each feature j
          const w0 = new Float32Array(agg.w0.length);
          for (let row = 0; row < H; row++) {
            for (let j = 0; j < H; j++) {
              for (let q = 0; q < P; q++) w0[row * P * H + j * P + q] = agg.w0[row * P * H + j * P + perm[q]];
            }
          }
          const prefixBlock = model.config.numKvHeads * model.config.parscaleNTokens * model.config.headDim;
          const permuted: ReferenceWeights = {
            ...w,
            layers: w.layers.map((layer) => ({
              ...layer,
              prefixKeys: permuteBlocks(layer.prefixKeys!, prefixBlock),
              prefixValues: permuteBlocks(layer.prefixValues!, prefixBlock),
            })),
            aggregation: { w0, b0: agg.b0, w2: permuteBlocks(agg.w2, H), b2: permuteBlocks(agg.b2, 1) },
          };
          const other = new ReferenceModel(model.config, permuted);
          const a = model.forward(model.newSequence(), tokens, { allLogits: true });
          const b = other.forward(other.newSequence(), tokens, { allLogits: true });
          a.logits.forEach((row, t) => assert.ok(maxAbsDiff(row, b.logits[t]) <= 1e-4));
        },
      ),
      { numRuns: 30 },
    );
  });

  it('P = 1 has no prefix and no aggregation, and ignores the ParScale settings', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1e9 }), tokenLists(1, 6), (seed, tokens) => {
        const configA = tinyConfig({ parscaleN: 1, parscaleNTokens: 3, parscaleAttnSmooth: 0.01 });
        const configB = tinyConfig({ parscaleN: 1, parscaleNTokens: 48, parscaleAttnSmooth: 0.3 });
        const weights = randomWeights(configA, seed);
        assert.equal(weights.aggregation, null);
        assert.ok(weights.layers.every((l) => l.prefixKeys === null && l.prefixValues === null));
        const a = new ReferenceModel(configA, weights);
        const b = new ReferenceModel(configB, weights);
        const sequence = a.newSequence();
        assert.equal(sequence.prefixLength, 0);
        const ra = a.forward(sequence, tokens, { allLogits: true, hidden: true });
        const rb = b.forward(b.newSequence(), tokens, { allLogits: true, hidden: true });
        assert.equal(ra.aggregationWeights, undefined);
        // with one stream the output hidden state is that stream's own
        ra.logits.forEach((row, t) => assert.deepEqual(row, rb.logits[t]));
      }),
      { numRuns: 20 },
    );
  });

  it('P streams with identical prefixes collapse to one: any aggregation gives that stream', () => {
    fc.assert(
      fc.property(fc.integer({ min: 2, max: 6 }), fc.integer({ min: 0, max: 1e9 }), tokenLists(1, 5), (P, seed, tokens) => {
        const configP = tinyConfig({ parscaleN: P, parscaleNTokens: 3 });
        const weights = randomWeights(configP, seed);
        // give every stream the prefix of stream 0
        const block = configP.numKvHeads * 3 * configP.headDim;
        for (const layer of weights.layers) {
          for (const prefix of [layer.prefixKeys!, layer.prefixValues!]) {
            for (let p = 1; p < P; p++) prefix.copyWithin(p * block, 0, block);
          }
        }
        const model = new ReferenceModel(configP, weights);
        const result = model.forward(model.newSequence(), tokens, { allLogits: true, hidden: true });
        // weights sum to 1 and the streams are equal, so the logits are those of stream 0 alone
        const H = configP.hiddenSize;
        result.streamHidden!.forEach((streams, t) => {
          for (let p = 1; p < P; p++) assert.ok(maxAbsDiff(streams.subarray(0, H), streams.subarray(p * H, (p + 1) * H)) === 0);
          const logits = new Float32Array(configP.vocabSize);
          for (let v = 0; v < configP.vocabSize; v++) {
            let sum = 0;
            for (let j = 0; j < H; j++) sum += weights.lmHead[v * H + j] * streams[j];
            logits[v] = sum;
          }
          assert.ok(maxAbsDiff(logits, result.logits[t]) <= 1e-4);
        });
      }),
      { numRuns: 20 },
    );
  });
});

describe('RoPE', () => {
  it('keeps every head vector’s norm', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 16 }), fc.integer({ min: 0, max: 4096 }), fc.integer({ min: 0, max: 1e9 }), (heads, halfDim, position, seed) => {
        const d = 2 * halfDim;
        const v = randomArray(rng(seed), heads * d, 4);
        const before = Array.from({ length: heads }, (_, h) => Math.hypot(...v.subarray(h * d, (h + 1) * d)));
        rope(v, 0, heads, d, position, ropeFrequencies(d, 10000));
        before.forEach((norm, h) => {
          const after = Math.hypot(...v.subarray(h * d, (h + 1) * d));
          assert.ok(Math.abs(after - norm) <= 1e-5 * (1 + norm));
        });
      }),
    );
  });

  it('makes q·k depend only on the relative position', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 16 }), fc.integer({ min: 0, max: 200 }), fc.integer({ min: 0, max: 200 }), fc.integer({ min: 1, max: 200 }), fc.integer({ min: 0, max: 1e9 }), (halfDim, m, n, shift, seed) => {
        const d = 2 * halfDim;
        const random = rng(seed);
        const q = randomArray(random, d, 1);
        const k = randomArray(random, d, 1);
        const freqs = ropeFrequencies(d, 10000);
        const rotatedDot = (qPos: number, kPos: number) => {
          const qr = q.slice();
          const kr = k.slice();
          rope(qr, 0, 1, d, qPos, freqs);
          rope(kr, 0, 1, d, kPos, freqs);
          return qr.reduce((sum, value, i) => sum + value * kr[i], 0);
        };
        // The angles are float32 like the reference's, so a larger position carries a rounding
        // error of about position · 2^-24 radians per angle.
        const tolerance = 1e-4 * d;
        assert.ok(Math.abs(rotatedDot(m, n) - rotatedDot(m + shift, n + shift)) <= tolerance);
      }),
    );
  });

  it('pairs element j with j + d/2 (rotate_half), not with j + 1', () => {
    // d = 4, position 1: f = [1, 1e4^(-1/2) = 0.01]; u = e_0 must rotate into e_2 (j + d/2).
    const v = new Float32Array([1, 0, 0, 0]);
    rope(v, 0, 1, 4, 1, ropeFrequencies(4, 10000));
    assert.ok(Math.abs(v[0] - Math.cos(1)) < 1e-6);
    assert.ok(Math.abs(v[2] - Math.sin(1)) < 1e-6);
    assert.equal(v[1], 0);
    assert.equal(v[3], 0);
  });
});
