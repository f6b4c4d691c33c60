// The int8 weight format (src/reference/q8.ts): what the quantizer promises for any weights.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Q8_GROUP, bf16AtLeast, bf16Value, dequantizeQ8, q8Bytes, q8Groups, quantizeQ8, quantizeRowsQ8 } from '../src/reference/q8.ts';
import { randomArray, rng } from './helpers/random-model.ts';

describe('int8 weights with per-group bf16 scales', () => {
  it('every weight is within s/2 (+ |w|·2^-23) of q · s, |q| ≤ 127, s is the group max / 127 rounded up to a bf16', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 7 }),
        fc.oneof(fc.integer({ min: 1, max: 70 }), fc.constantFrom(896, 1000)),
        fc.constantFrom(1e-37, 1e-35, 1e-3, 1, 1e4, 1e30),
        fc.integer({ min: 0, max: 2 ** 31 }),
        (outDim, inDim, scale, seed) => {
          const random = rng(seed);
          const w = randomArray(random, outDim * inDim, scale);
          for (let i = 0; i < w.length; i++) if (random() < 0.05) w[i] = 0;
          const { values, scales } = quantizeQ8(w, outDim, inDim);
          const back = dequantizeQ8(values, scales, outDim, inDim);
          const groups = q8Groups(inDim);
          for (let o = 0; o < outDim; o++) {
            for (let g = 0; g < groups; g++) {
              let max = 0;
              for (let i = g * Q8_GROUP; i < Math.min(inDim, (g + 1) * Q8_GROUP); i++) max = Math.max(max, Math.abs(w[o * inDim + i]));
              const s = bf16Value(scales[o * groups + g]);
              // at most one bf16 step above (2^-7 relative), but never below 2^-126 (no subnormal scales)
              const highest = Math.max((max / 127) * (1 + 2 ** -7), max > 0 ? 2 ** -126 : 0);
              assert.ok(s >= max / 127 && s <= highest, `row ${o} group ${g}: scale ${s} for max ${max}`);
              for (let i = g * Q8_GROUP; i < Math.min(inDim, (g + 1) * Q8_GROUP); i++) {
                const j = o * inDim + i;
                assert.ok(Math.abs(values[j]) <= 127);
                assert.ok(Math.abs(back[j] - w[j]) <= s / 2 + Math.abs(w[j]) * 2 ** -23, `w[${o}, ${i}] = ${w[j]} became ${back[j]} (scale ${s})`);
                if (w[j] === 0) assert.equal(values[j], 0);
              }
            }
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it('the largest weight of each group maps to ±127 or ±126 (the scale is rounded up by at most 2^-8)', () => {
    const w = Float32Array.from({ length: 64 }, (_, i) => (i === 5 ? -3.7 : i === 40 ? 0.9 : 0.01 * i));
    const { values } = quantizeQ8(w, 1, 64);
    assert.ok(values[5] === -127 || values[5] === -126, String(values[5]));
    assert.ok(values[40] === 127 || values[40] === 126, String(values[40]));
  });

  it('a group of tiny weights gets the smallest normal scale, not a subnormal one whose inverse overflows', () => {
    // found by fast-check: max|w| ≈ 1e-36 gave s subnormal, 1/s = Infinity, and q = 0 here but
    // −1 or 127 in the wasm quantizer
    const w = new Float32Array([1e-36, -4e-37, 0, 2e-38]);
    const { values, scales } = quantizeQ8(w, 1, 4);
    assert.equal(bf16Value(scales[0]), 2 ** -126);
    const back = dequantizeQ8(values, scales, 1, 4);
    for (let i = 0; i < 4; i++) assert.ok(Math.abs(back[i] - w[i]) <= 2 ** -127, `w[${i}] = ${w[i]} became ${back[i]}`);
  });

  it('bf16AtLeast is the smallest bf16 ≥ v', () => {
    fc.assert(
      fc.property(fc.double({ min: 0, max: 1e38, noNaN: true }), (v) => {
        const bits = bf16AtLeast(v);
        assert.ok(bf16Value(bits) >= v);
        if (bits > 0) assert.ok(bf16Value(bits - 1) < v);
      }),
    );
  });

  it('quantizing piece by piece (rows at an offset) equals quantizing the whole matrix', () => {
    const random = rng(3);
    const [outDim, inDim] = [10, 77];
    const w = randomArray(random, outDim * inDim, 2);
    const whole = quantizeQ8(w, outDim, inDim);
    const values = new Int8Array(outDim * inDim);
    const scales = new Uint16Array(outDim * q8Groups(inDim));
    for (const [from, to] of [[0, 3], [3, 4], [4, 10]]) quantizeRowsQ8(values, scales, w.subarray(from * inDim, to * inDim), to - from, inDim, from);
    assert.deepEqual(values, whole.values);
    assert.deepEqual(scales, whole.scales);
    assert.equal(q8Bytes(outDim, inDim), values.length + 2 * scales.length);
  });

  it('refuses a NaN or infinite weight, naming the matrix and the row', () => {
    for (const bad of [NaN, Infinity, -Infinity]) {
      const w = new Float32Array(2 * 40).fill(0.5);
      w[40 + 33] = bad;
      assert.throws(() => quantizeRowsQ8(new Int8Array(80), new Uint16Array(4), w, 2, 40, 0, 'model.layers.0.mlp.up_proj.weight'), /model\.layers\.0\.mlp\.up_proj\.weight: row 1 has a non-finite weight .* inputs 32\.\.39/);
    }
  });
});
