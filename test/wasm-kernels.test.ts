// Every WebAssembly kernel (assembly/kernels.ts) against its TypeScript twin of the same name in
// src/reference/kernels.ts, on random shapes (sizes that are not multiples of the 4-lane vectors
// or the 4-row tiles, lengths of 1), random values over several magnitudes, and all three weight
// formats. For bf16 and f16 the oracle gets the float32 values of exactly the same bits, decoded
// here independently of the kernels.
//
// Tolerances. u = 2^-24 is float32's unit roundoff. The oracle sums in float64 and rounds once;
// the kernels sum in float32 lanes. A sum of products whose every term passes through at most k
// roundings (its product, then the additions along its path) is off by at most
// γ_k · Σ|terms|, γ_k = k·u / (1 − k·u) (Higham, "Accuracy and Stability of Numerical
// Algorithms", §3.1) — a worst-case bound, so a correct kernel can never fail it, while a wrong
// index or layout misses it by orders of magnitude. Where a kernel mirrors the oracle's float64
// arithmetic (RMSNorm's sum of squares, RoPE, softmax, SwiGLU) the results differ only by the
// order of float64 additions or an ulp of libm's exp/cos, so they must agree to 2 float32 ulps.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import * as oracle from '../src/reference/kernels.ts';
import { Q8_GROUP, dequantizeQ8, matmul_q8 as oracleMatmulQ8, q8Groups, quantizeQ8 } from '../src/reference/q8.ts';
import { WasmKernels, type WeightFormat } from '../src/wasm-bridge/kernels.ts';
import { randomArray, rng } from './helpers/random-model.ts';

const u = 2 ** -24;
const gamma = (k: number) => (k * u) / (1 - k * u);
const formats: WeightFormat[] = ['f32', 'bf16', 'f16'];
const kernels = new WasmKernels();

/** Run `body` with the allocator rewound afterwards, so property runs do not pile up memory. */
function scoped<T>(body: () => T): T {
  const mark = kernels.mark();
  try {
    return body();
  } finally {
    kernels.release(mark);
  }
}

// ---- bf16 / f16 decoding, written from the formats' definitions -----------------------------

const bitsView = new DataView(new ArrayBuffer(4));
function bf16ToNumber(h: number): number {
  bitsView.setUint32(0, h << 16);
  return bitsView.getFloat32(0);
}
function f16ToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 31) return mantissa === 0 ? sign * Infinity : NaN;
  return sign * 2 ** (exponent - 15) * (1 + mantissa / 1024);
}
function f32Bits(v: number): number {
  bitsView.setFloat32(0, v);
  return bitsView.getUint32(0);
}

/**
 * Random weights of `n` values in a format: the raw array for the kernels and the decoded float32
 * values for the oracle. bf16 truncates random float32 values (every u16 is a valid bf16); f16
 * draws sign, exponent and mantissa directly, exponents 0..30, so subnormals occur (no Inf/NaN).
 */
function randomWeights(random: () => number, format: WeightFormat, n: number, scale: number) {
  const values = new Float32Array(n);
  if (format === 'f32') {
    const raw = randomArray(random, n, scale);
    return { raw, values: raw };
  }
  const raw = new Uint16Array(n);
  for (let i = 0; i < n; i++) {
    if (format === 'bf16') raw[i] = f32Bits(scale * (2 * random() - 1)) >>> 16;
    else {
      // exponents around the scale's, with a 1-in-8 chance of a subnormal
      const center = Math.max(1, Math.min(30, 15 + Math.round(Math.log2(scale))));
      const exponent = random() < 0.125 ? 0 : Math.max(1, Math.min(30, center - Math.floor(random() * 8)));
      raw[i] = (random() < 0.5 ? 0x8000 : 0) | (exponent << 10) | Math.floor(random() * 1024);
    }
    values[i] = format === 'bf16' ? bf16ToNumber(raw[i]) : f16ToNumber(raw[i]);
  }
  return { raw, values };
}

/** Copy weights into the kernels' memory in their stored width. */
function place(raw: Float32Array | Uint16Array): number {
  return raw instanceof Float32Array ? kernels.f32(raw).ptr : kernels.u16(raw).ptr;
}

/** Assert |actual − expected| ≤ tolerance(i) everywhere; report the worst element and a few pairs. */
function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: (i: number) => number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let worst = -1;
  let worstRatio = 0;
  for (let i = 0; i < expected.length; i++) {
    const diff = Math.abs(actual[i] - expected[i]);
    if (Number.isNaN(expected[i]) && Number.isNaN(actual[i])) continue;
    const ratio = diff / tolerance(i);
    if (!(ratio <= 1) && (worst < 0 || !(ratio <= worstRatio))) {
      worst = i;
      worstRatio = ratio;
    }
  }
  if (worst >= 0) {
    const pairs = Array.from({ length: Math.min(4, expected.length) }, (_, i) => `[${i}] ${actual[i]} vs ${expected[i]}`).join(', ');
    assert.fail(`${what}: element ${worst} is ${actual[worst]}, oracle ${expected[worst]}, |diff| ${Math.abs(actual[worst] - expected[worst])} > tolerance ${tolerance(worst)}; first pairs: ${pairs}`);
  }
}

const magnitudes = fc.constantFrom(1e-3, 1, 30, 1e4);

describe('wasm kernels against the TypeScript oracle', () => {
  it('matmul (f32, bf16, f16 weights): within the f32-summation bound, and only inside [oStart, oEnd)', () => {
    fc.assert(
      fc.property(
        fc.record({
          format: fc.constantFrom(...formats),
          rows: fc.integer({ min: 1, max: 11 }),
          inDim: fc.oneof(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 41, max: 300 })),
          outDim: fc.integer({ min: 1, max: 23 }),
          withBias: fc.boolean(),
          xScale: magnitudes,
          wScale: fc.constantFrom(1e-2, 1, 1e2),
          seed: fc.integer({ min: 0, max: 2 ** 31 }),
          range: fc.tuple(fc.nat(), fc.nat()),
        }),
        ({ format, rows, inDim, outDim, withBias, xScale, wScale, seed, range }) =>
          scoped(() => {
            const random = rng(seed);
            const x = randomArray(random, rows * inDim, xScale);
            const w = randomWeights(random, format, outDim * inDim, wScale);
            const bias = withBias ? randomArray(random, outDim, wScale * xScale) : null;
            const expected = new Float32Array(rows * outDim);
            oracle.matmul(expected, x, w.values, bias, rows, inDim, outDim);

            // A canary element after `out` catches writes past the end.
            const out = kernels.f32(rows * outDim + 1);
            out.array.fill(NaN);
            const [a, b] = [range[0] % (outDim + 1), range[1] % (outDim + 1)];
            const [oStart, oEnd] = [Math.min(a, b), Math.max(a, b)];
            kernels.matmul(format, out.ptr, kernels.f32(x).ptr, place(w.raw), bias ? kernels.f32(bias).ptr : null, rows, inDim, outDim, oStart, oEnd);
            for (let r = 0; r < rows; r++) {
              for (let o = 0; o < outDim; o++) {
                const inside = o >= oStart && o < oEnd;
                assert.equal(Number.isNaN(out.array[r * outDim + o]), !inside, `out[${r}, ${o}] written: ${!inside}, range [${oStart}, ${oEnd})`);
              }
            }
            assert.ok(Number.isNaN(out.array[rows * outDim]), 'wrote past the end of out');

            // Each term passes its product, the (inDim & ~3) / 4 lane additions, 2 lane-sum
            // additions, up to 3 tail additions and the bias: k = inDim/4 + 7; plus the oracle's
            // own final rounding to float32.
            const k = Math.floor(inDim / 4) + 7;
            kernels.matmul(format, out.ptr, kernels.f32(x).ptr, place(w.raw), bias ? kernels.f32(bias).ptr : null, rows, inDim, outDim);
            assertClose(out.array.subarray(0, rows * outDim), expected, (i) => {
              const r = Math.floor(i / outDim);
              const o = i % outDim;
              let sumAbs = bias ? Math.abs(bias[o]) : 0;
              for (let j = 0; j < inDim; j++) sumAbs += Math.abs(w.values[o * inDim + j] * x[r * inDim + j]);
              return (gamma(k) + u) * sumAbs + 1e-38;
            }, `matmul_${format} rows ${rows} in ${inDim} out ${outDim}`);
          }),
      ),
      { numRuns: 300 },
    );
  });

  it('matmul: any split of the output rows gives the same bits as the whole product (what threads rely on)', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...formats),
        fc.integer({ min: 1, max: 9 }),
        fc.integer({ min: 1, max: 70 }),
        fc.integer({ min: 1, max: 40 }),
        fc.array(fc.nat(), { maxLength: 5 }),
        fc.integer({ min: 0, max: 2 ** 31 }),
        (format, rows, inDim, outDim, cuts, seed) =>
          scoped(() => {
            const random = rng(seed);
            const x = kernels.f32(randomArray(random, rows * inDim, 1)).ptr;
            const w = place(randomWeights(random, format, outDim * inDim, 1).raw);
            const bias = kernels.f32(randomArray(random, outDim, 1)).ptr;
            const whole = kernels.f32(rows * outDim);
            const pieces = kernels.f32(rows * outDim);
            kernels.matmul(format, whole.ptr, x, w, bias, rows, inDim, outDim);
            const bounds = [0, ...cuts.map((c) => c % (outDim + 1)), outDim].sort((a, b) => a - b);
            for (let i = 0; i + 1 < bounds.length; i++) kernels.matmul(format, pieces.ptr, x, w, bias, rows, inDim, outDim, bounds[i], bounds[i + 1]);
            assert.deepEqual(new Uint32Array(pieces.array.slice().buffer), new Uint32Array(whole.array.slice().buffer));
          }),
      ),
      { numRuns: 150 },
    );
  });

  it('matmul_bf16p on a matrix rewritten by pair_bf16 gives exactly the bits of matmul_bf16 on the natural one, for any range', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 11 }),
        // every remainder mod 8 (blocks of 8, a block of 4, the scalar tail) and a real width
        fc.oneof(fc.integer({ min: 1, max: 70 }), fc.constantFrom(896, 1539)),
        fc.integer({ min: 1, max: 40 }),
        fc.boolean(),
        fc.tuple(fc.nat(), fc.nat()),
        fc.integer({ min: 0, max: 2 ** 31 }),
        (rows, inDim, outDim, withBias, range, seed) =>
          scoped(() => {
            const random = rng(seed);
            const x = kernels.f32(randomArray(random, rows * inDim, 1)).ptr;
            const { raw } = randomWeights(random, 'bf16', outDim * inDim, 1);
            const natural = place(raw);
            const paired = place(raw);
            // pair the rows in two pieces, as the loader's threads do
            const cut = range[0] % (outDim + 1);
            kernels.pair_bf16(paired, outDim, inDim, 0, cut);
            kernels.pair_bf16(paired, outDim, inDim, cut, outDim);
            const pairedBits = new Uint16Array(kernels.memory.buffer, paired, outDim * inDim);
            // the layout as documented: block w0..w7 stored as w0 w4 w1 w5 w2 w6 w3 w7, the rest natural
            for (let o = 0; o < outDim; o++) {
              for (let i = 0; i < inDim; i++) {
                const block = i - (i % 8);
                const at = block + 8 <= inDim ? block + ((i % 8) < 4 ? 2 * (i % 8) : 2 * (i % 8 - 4) + 1) : i;
                assert.equal(pairedBits[o * inDim + at], raw[o * inDim + i], `weight (${o}, ${i})`);
              }
            }
            const bias = withBias ? kernels.f32(randomArray(random, outDim, 1)).ptr : null;
            const [oStart, oEnd] = [range[0] % (outDim + 1), range[1] % (outDim + 1)].sort((a, b) => a - b);
            const want = kernels.f32(rows * outDim);
            const got = kernels.f32(rows * outDim);
            kernels.matmul_bf16(want.ptr, x, natural, bias, rows, inDim, outDim, oStart, oEnd);
            kernels.matmul_bf16p(got.ptr, x, paired, bias, rows, inDim, outDim, oStart, oEnd);
            assert.deepEqual(new Uint32Array(got.array.slice().buffer), new Uint32Array(want.array.slice().buffer));
          }),
      ),
      { numRuns: 200 },
    );
  });

  // ---- matmul_q8 -----------------------------------------------------------------------------

  /**
   * Random float32 weights for quantization: rows of one magnitude, with an outlier now and then
   * (the case per-group scales are for), and whole zero groups (scale 0).
   */
  function q8Source(random: () => number, outDim: number, inDim: number, scale: number): Float32Array {
    const w = randomArray(random, outDim * inDim, scale);
    for (let i = 0; i < w.length; i++) {
      const u = random();
      if (u < 0.01) w[i] *= 100;
      else if (u < 0.02) w[i] = 0;
    }
    if (outDim * inDim > Q8_GROUP && random() < 0.3) w.fill(0, 0, Q8_GROUP);
    return w;
  }

  const q8Shapes = fc.record({
    rows: fc.integer({ min: 1, max: 11 }),
    // non-multiples of 4, 8 and 32, and the real-shape remainders (896 = 28 · 32, 4864 = 152 · 32)
    inDim: fc.oneof(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 41, max: 300 }), fc.constantFrom(896, 1000)),
    outDim: fc.integer({ min: 1, max: 23 }),
    withBias: fc.boolean(),
    xScale: magnitudes,
    wScale: fc.constantFrom(1e-3, 1, 1e2, 1e5),
    seed: fc.integer({ min: 0, max: 2 ** 31 }),
    range: fc.tuple(fc.nat(), fc.nat()),
  });

  it('matmul_q8: the bits of its twin (W8A16), only inside [oStart, oEnd); the twin within the bound of W8A16 of the exact product', () => {
    fc.assert(
      fc.property(q8Shapes, ({ rows, inDim, outDim, withBias, xScale, wScale, seed, range }) =>
        scoped(() => {
          const random = rng(seed);
          const x = randomArray(random, rows * inDim, xScale);
          const q = quantizeQ8(q8Source(random, outDim, inDim, wScale), outDim, inDim);
          const bias = withBias ? randomArray(random, outDim, wScale * xScale) : null;
          const twin = new Float32Array(rows * outDim);
          oracleMatmulQ8(twin, x, q.values, q.scales, bias, rows, inDim, outDim);
          const dequantized = dequantizeQ8(q.values, q.scales, outDim, inDim);
          const [xp, wp, sp] = [kernels.f32(x).ptr, kernels.i8(q.values).ptr, kernels.u16(q.scales).ptr];
          const bp = bias ? kernels.f32(bias).ptr : null;

          const out = kernels.f32(rows * outDim + 1);
          out.array.fill(NaN);
          const [a, b] = [range[0] % (outDim + 1), range[1] % (outDim + 1)];
          const [oStart, oEnd] = [Math.min(a, b), Math.max(a, b)];
          kernels.matmul_q8(out.ptr, xp, wp, sp, bp, rows, inDim, outDim, oStart, oEnd);
          for (let r = 0; r < rows; r++) {
            for (let o = 0; o < outDim; o++) {
              const i = r * outDim + o;
              const inside = o >= oStart && o < oEnd;
              assert.equal(Number.isNaN(out.array[i]), !inside, `out[${r}, ${o}] written: ${!inside}, range [${oStart}, ${oEnd})`);
              if (inside) assert.equal(out.array[i], twin[i], `out[${r}, ${o}]: kernel ${out.array[i]}, twin ${twin[i]} (rows ${rows} in ${inDim} out ${outDim})`);
            }
          }
          assert.ok(Number.isNaN(out.array[rows * outDim]), 'wrote past the end of out');

          // The twin against Σ (q·s)·x in float64. Activation quantization: |x − xq·sx| ≤ m_g · 2^-14
          // per input (m_g the group's max |x|). Rounding: the group sums are exact integers; fl(G)
          // (|G| < 2^26: one rounding), fl(s·sx), the product, one addition per group into its lane,
          // 2 lane-sum additions and the bias: k = groups + 6 relative roundings of Σ |q·s·xq·sx|.
          const k = q8Groups(inDim) + 6;
          for (let r = 0; r < rows; r++) {
            for (let o = 0; o < outDim; o++) {
              let exact = bias ? bias[o] : 0;
              let sumAbs = bias ? Math.abs(bias[o]) : 0;
              let quantization = 0;
              for (let g = 0; g * Q8_GROUP < inDim; g++) {
                const end = Math.min(inDim, (g + 1) * Q8_GROUP);
                let m = 0;
                for (let j = g * Q8_GROUP; j < end; j++) m = Math.max(m, Math.abs(x[r * inDim + j]));
                for (let j = g * Q8_GROUP; j < end; j++) {
                  const wx = dequantized[o * inDim + j] * x[r * inDim + j];
                  exact += wx;
                  sumAbs += Math.abs(wx) + Math.abs(dequantized[o * inDim + j]) * m * 2 ** -14;
                  quantization += Math.abs(dequantized[o * inDim + j]) * m * 2 ** -14;
                }
              }
              const bound = quantization + gamma(k) * sumAbs + 1e-38;
              const got = twin[r * outDim + o];
              assert.ok(Math.abs(got - exact) <= bound, `twin out[${r}, ${o}] = ${got}, exact ${exact}, bound ${bound} (rows ${rows} in ${inDim} out ${outDim})`);
            }
          }
        }),
      ),
      { numRuns: 300 },
    );
  });

  it('matmul_q8: NaN or ±Infinity in a group of x makes its outputs NaN, as the twin', () =>
    scoped(() => {
      const [inDim, outDim] = [70, 5];
      const random = rng(7);
      const q = quantizeQ8(q8Source(random, outDim, inDim, 1), outDim, inDim);
      for (const bad of [NaN, Infinity, -Infinity]) {
        const x = randomArray(random, 2 * inDim, 1);
        x[inDim + 65] = bad; // row 1, the last (short) group
        const out = kernels.f32(2 * outDim);
        kernels.matmul_q8(out.ptr, kernels.f32(x).ptr, kernels.i8(q.values).ptr, kernels.u16(q.scales).ptr, null, 2, inDim, outDim);
        const twin = new Float32Array(2 * outDim);
        oracleMatmulQ8(twin, x, q.values, q.scales, null, 2, inDim, outDim);
        assert.deepEqual([...out.array], [...twin], `${bad}`);
        assert.ok(out.array.slice(0, outDim).every(Number.isFinite), `${bad}: row 0 finite`);
        assert.ok(out.array.slice(outDim).every(Number.isNaN), `${bad}: row 1 NaN`);
      }
    }));

  it('matmul_q8: any split of the output rows gives the same bits as the whole product', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 100 }), fc.integer({ min: 1, max: 40 }), fc.array(fc.nat(), { maxLength: 5 }), fc.integer({ min: 0, max: 2 ** 31 }), (rows, inDim, outDim, cuts, seed) =>
        scoped(() => {
          const random = rng(seed);
          const x = kernels.f32(randomArray(random, rows * inDim, 1)).ptr;
          const q = quantizeQ8(q8Source(random, outDim, inDim, 1), outDim, inDim);
          const [w, scales] = [kernels.i8(q.values).ptr, kernels.u16(q.scales).ptr];
          const bias = kernels.f32(randomArray(random, outDim, 1)).ptr;
          const whole = kernels.f32(rows * outDim);
          const pieces = kernels.f32(rows * outDim);
          kernels.matmul_q8(whole.ptr, x, w, scales, bias, rows, inDim, outDim);
          const bounds = [0, ...cuts.map((c) => c % (outDim + 1)), outDim].sort((a, b) => a - b);
          for (let i = 0; i + 1 < bounds.length; i++) kernels.matmul_q8(pieces.ptr, x, w, scales, bias, rows, inDim, outDim, bounds[i], bounds[i + 1]);
          assert.deepEqual(new Uint32Array(pieces.array.slice().buffer), new Uint32Array(whole.array.slice().buffer));
        }),
      ),
      { numRuns: 150 },
    );
  });

  it('matmul_q8 widens every int8 value exactly, in every lane position of the vector blocks and the tail', () =>
    scoped(() => {
      // Row o holds value v = (o % 255) − 127 at input o % inDim, zeros elsewhere; scale 1 (bf16 0x3f80).
      // With x = 1 the output is exactly v, whichever path (8-block, 4-block, scalar tail) reads it.
      const inDim = 15; // one 8-block, one 4-block, three tail inputs
      const outDim = 255 * inDim;
      const values = new Int8Array(outDim * inDim);
      for (let o = 0; o < outDim; o++) values[o * inDim + (o % inDim)] = (o % 255) - 127;
      const scales = new Uint16Array(outDim).fill(0x3f80);
      const out = kernels.f32(outDim);
      kernels.matmul_q8(out.ptr, kernels.f32(new Float32Array(inDim).fill(1)).ptr, kernels.i8(values).ptr, kernels.u16(scales).ptr, null, 1, inDim, outDim);
      for (let o = 0; o < outDim; o++) assert.equal(out.array[o], (o % 255) - 127, `row ${o}, input ${o % inDim}`);
    }));

  it('quantize_q8 (the loader’s quantizer) writes exactly the bytes of quantizeRowsQ8, from f32, bf16 and f16, for any row range', () => {
    fc.assert(
      fc.property(fc.constantFrom(...formats), fc.integer({ min: 1, max: 9 }), fc.oneof(fc.integer({ min: 1, max: 100 }), fc.constant(896)), fc.constantFrom(1e-37, 1e-30, 1e-3, 1, 1e4), fc.tuple(fc.nat(), fc.nat()), fc.integer({ min: 0, max: 2 ** 31 }), (format, rows, inDim, scale, range, seed) =>
        scoped(() => {
          const random = rng(seed);
          const source = randomWeights(random, format, rows * inDim, scale);
          // the oracle quantizes the decoded float32 values
          const expected = quantizeQ8(source.values, rows, inDim);
          const values = kernels.i8(rows * inDim);
          const scales = kernels.u16(rows * q8Groups(inDim));
          values.array.fill(99);
          const [a, b] = [range[0] % (rows + 1), range[1] % (rows + 1)];
          const [rStart, rEnd] = [Math.min(a, b), Math.max(a, b)];
          kernels.quantize_q8(values.ptr, scales.ptr, place(source.raw), format, rows, inDim, rStart, rEnd);
          const g = q8Groups(inDim);
          assert.deepEqual(values.array.slice(rStart * inDim, rEnd * inDim), expected.values.slice(rStart * inDim, rEnd * inDim), 'values');
          assert.deepEqual(scales.array.slice(rStart * g, rEnd * g), expected.scales.slice(rStart * g, rEnd * g), 'scales');
          assert.ok(values.array.subarray(0, rStart * inDim).every((v) => v === 99) && values.array.subarray(rEnd * inDim).every((v) => v === 99), 'wrote outside its rows');
        }),
      ),
      { numRuns: 200 },
    );
  });

  it('quantize_q8 marks a group holding NaN or ±Infinity with a non-finite scale (the loader reports it)', () =>
    scoped(() => {
      for (const bad of [NaN, Infinity, -Infinity]) {
        const inDim = 70;
        const w = randomArray(rng(1), 2 * inDim, 1);
        w[inDim + 40] = bad; // row 1, group 1
        const values = kernels.i8(2 * inDim);
        const scales = kernels.u16(2 * q8Groups(inDim));
        kernels.quantize_q8(values.ptr, scales.ptr, kernels.f32(w).ptr, 'f32', 2, inDim);
        const nonFinite = [...scales.array].map((s, j) => ((s & 0x7f80) === 0x7f80 ? j : -1)).filter((j) => j >= 0);
        assert.deepEqual(nonFinite, [q8Groups(inDim) + 1], `${bad}`);
      }
    }));

  it('dequantize_row_q8 gives the oracle’s q · s to the bit', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 6 }), fc.integer({ min: 1, max: 130 }), fc.constantFrom(1e-30, 1e-3, 1, 1e6), fc.integer({ min: 0, max: 2 ** 31 }), (outDim, inDim, scale, seed) =>
        scoped(() => {
          const random = rng(seed);
          const q = quantizeQ8(q8Source(random, outDim, inDim, scale), outDim, inDim);
          const expected = dequantizeQ8(q.values, q.scales, outDim, inDim);
          const [w, s, row] = [kernels.i8(q.values).ptr, kernels.u16(q.scales).ptr, kernels.f32(inDim)];
          for (let o = 0; o < outDim; o++) {
            kernels.dequantize_row_q8(row.ptr, w, s, inDim, o);
            assert.deepEqual(new Uint32Array(row.array.slice().buffer), new Uint32Array(expected.slice(o * inDim, (o + 1) * inDim).buffer), `row ${o}`);
          }
        }),
      ),
      { numRuns: 100 },
    );
  });

  for (const format of ['bf16', 'f16'] as const) {
    it(`matmul_${format} widens every one of the 65536 bit patterns exactly (vector lanes and scalar tail)`, () =>
      scoped(() => {
        const decode = format === 'bf16' ? bf16ToNumber : f16ToNumber;
        const n = 65536;
        // Vector path: row o holds pattern o in lane o % 4, zeros elsewhere; x = 1.
        const w = kernels.u16(n * 4);
        for (let o = 0; o < n; o++) w.array[o * 4 + (o % 4)] = o;
        const one = kernels.f32([1, 1, 1, 1]);
        const out = kernels.f32(n);
        kernels.matmul(format, out.ptr, one.ptr, w.ptr, null, 1, 4, n);
        // Scalar tail: inDim = 1, row o is pattern o.
        const w1 = kernels.u16(Uint16Array.from({ length: n }, (_, i) => i));
        const out1 = kernels.f32(n);
        kernels.matmul(format, out1.ptr, one.ptr, w1.ptr, null, 1, 1, n);
        for (let h = 0; h < n; h++) {
          const expected = decode(h);
          for (const [path, actual] of [['vector', out.array[h]], ['scalar', out1.array[h]]] as const) {
            // 1 · w + 0 loses only the sign of a zero, which a product cannot show anyway.
            if (Number.isNaN(expected)) assert.ok(Number.isNaN(actual), `${format} 0x${h.toString(16)} (${path}): NaN expected, got ${actual}`);
            else assert.ok(actual === expected, `${format} 0x${h.toString(16)} (${path}): ${expected} expected, got ${actual}`);
          }
        }
      }));
  }

  it('rmsnorm: within 2 ulps (same float64 sum of squares, other order), also in place', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 1, max: 130 }),
        magnitudes,
        fc.constantFrom(1e-6, 1e-5),
        fc.boolean(),
        fc.integer({ min: 0, max: 2 ** 31 }),
        (rows, dim, scale, eps, inPlace, seed) =>
          scoped(() => {
            const random = rng(seed);
            const x = randomArray(random, rows * dim, scale);
            const weight = randomArray(random, dim, 0.5, 1);
            const expected = new Float32Array(rows * dim);
            oracle.rmsnorm(expected, x, weight, eps, rows, dim);
            const xBuf = kernels.f32(x);
            const out = inPlace ? xBuf : kernels.f32(rows * dim);
            kernels.rmsnorm(out.ptr, xBuf.ptr, kernels.f32(weight).ptr, eps, rows, dim);
            assertClose(out.array, expected, (i) => 2 ** -22 * Math.abs(expected[i]) + 1e-44, `rmsnorm rows ${rows} dim ${dim}`);
          }),
      ),
      { numRuns: 200 },
    );
  });

  it('rope: within 1 ulp (same float64 arithmetic; libm cos/sin may differ in the last place)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 1, max: 66 }).map((h) => 2 * h),
        fc.oneof(fc.integer({ min: 0, max: 64 }), fc.integer({ min: 0, max: 131072 })),
        fc.constantFrom(10000, 1000000),
        fc.integer({ min: 0, max: 7 }),
        fc.integer({ min: 0, max: 2 ** 31 }),
        (numHeads, headDim, position, theta, offset, seed) =>
          scoped(() => {
            const random = rng(seed);
            const vec = randomArray(random, offset + numHeads * headDim, 3);
            const freqs = oracle.ropeFrequencies(headDim, theta);
            const expected = vec.slice();
            oracle.rope(expected, offset, numHeads, headDim, position, freqs);
            const buf = kernels.f32(vec);
            kernels.rope(buf.ptr, offset, numHeads, headDim, position, kernels.f32(freqs).ptr);
            const half = headDim / 2;
            assertClose(buf.array, expected, (i) => {
              if (i < offset) return 1e-45; // untouched
              const j = (i - offset) % headDim;
              const base = i - j;
              const pair = Math.abs(vec[base + (j % half)]) + Math.abs(vec[base + (j % half) + half]);
              return 2 ** -23 * (Math.abs(expected[i]) + 2 * pair) + 1e-44;
            }, `rope heads ${numHeads} d ${headDim} t ${position}`);
          }),
      ),
      { numRuns: 200 },
    );
  });

  it('softmax: within 2 ulps on inputs up to ±1e4, including -Infinity entries, only inside the window', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 300 }),
        magnitudes,
        fc.integer({ min: 0, max: 5 }),
        fc.boolean(),
        fc.integer({ min: 0, max: 2 ** 31 }),
        (n, scale, offset, masked, seed) =>
          scoped(() => {
            const random = rng(seed);
            const x = randomArray(random, offset + n + 2, scale);
            if (masked && n > 1) x[offset + Math.floor(random() * n)] = -Infinity;
            const expected = x.slice();
            oracle.softmax(expected, offset, n);
            const buf = kernels.f32(x);
            kernels.softmax(buf.ptr, offset, n);
            assertClose(buf.array, expected, (i) => 2 ** -22 * Math.abs(expected[i]) + 1e-45, `softmax n ${n} scale ${scale}`);
          }),
      ),
      { numRuns: 300 },
    );
  });

  /**
   * The attention bound. A score is a dot product of headDim terms (k = headDim/4 + 6 roundings
   * per term, as in matmul) plus the float32 rounding of score·scale on both sides; a score error
   * of at most Δ moves each probability by a factor within e^{±2Δ}; then Σ_s p_s v_s sums
   * `length` terms in float32 (k = length + 1) and softmax itself rounds a few times.
   */
  function attentionTolerance(q: Float32Array, qOffset: number, keys: Float32Array, values: Float32Array, length: number, capacity: number, numHeads: number, numKvHeads: number, headDim: number, exactScores: boolean) {
    const group = numHeads / numKvHeads;
    const scale = 1 / Math.sqrt(headDim);
    const tol = new Float64Array(numHeads * headDim);
    for (let h = 0; h < numHeads; h++) {
      const kv = Math.floor(h / group) * capacity * headDim;
      const scores: number[] = [];
      let delta = 0;
      for (let s = 0; s < length; s++) {
        let dot = 0;
        let dotAbs = 0;
        for (let i = 0; i < headDim; i++) {
          dot += q[qOffset + h * headDim + i] * keys[kv + s * headDim + i];
          dotAbs += Math.abs(q[qOffset + h * headDim + i] * keys[kv + s * headDim + i]);
        }
        scores.push(dot * scale);
        if (!exactScores) delta = Math.max(delta, gamma(Math.floor(headDim / 4) + 6) * dotAbs * scale + 2 * u * Math.abs(dot * scale));
      }
      const max = Math.max(...scores);
      const e = scores.map((s) => Math.exp(s - max));
      const sum = e.reduce((a, b) => a + b, 0);
      for (let i = 0; i < headDim; i++) {
        let weighted = 0;
        for (let s = 0; s < length; s++) weighted += (e[s] / sum) * Math.abs(values[kv + s * headDim + i]);
        tol[h * headDim + i] = (Math.expm1(2 * delta) + gamma(length + 6)) * weighted + 1e-38;
      }
    }
    return tol;
  }

  function checkAttention(q: Float32Array, qOffset: number, keys: Float32Array, values: Float32Array, length: number, capacity: number, numHeads: number, numKvHeads: number, headDim: number, what: string, exactScores = false) {
    const expected = new Float32Array(numHeads * headDim);
    oracle.attention(expected, q, qOffset, keys, values, length, capacity, numHeads, numKvHeads, headDim, new Float32Array(length));
    const out = kernels.f32(numHeads * headDim);
    kernels.attention(out.ptr, kernels.f32(q).ptr, qOffset, kernels.f32(keys).ptr, kernels.f32(values).ptr, length, capacity, numHeads, numKvHeads, headDim, kernels.f32(length).ptr);
    const tol = attentionTolerance(q, qOffset, keys, values, length, capacity, numHeads, numKvHeads, headDim, exactScores);
    assertClose(out.array, expected, (i) => tol[i], what);
    return out.array;
  }

  const attentionShapes = fc.record({
    numKvHeads: fc.integer({ min: 1, max: 3 }),
    group: fc.integer({ min: 1, max: 4 }),
    headDim: fc.oneof(fc.integer({ min: 1, max: 20 }), fc.constantFrom(32, 64, 67, 128)),
    length: fc.oneof(fc.constant(1), fc.integer({ min: 1, max: 70 })),
    spare: fc.integer({ min: 0, max: 5 }),
    qOffset: fc.integer({ min: 0, max: 9 }),
    seed: fc.integer({ min: 0, max: 2 ** 31 }),
  });

  it('attention: random queries, keys and values, grouped KV heads, within the derived bound', () => {
    fc.assert(
      fc.property(attentionShapes, fc.constantFrom(0.1, 1, 3), ({ numKvHeads, group, headDim, length, spare, qOffset, seed }, qkScale) =>
        scoped(() => {
          const random = rng(seed);
          const numHeads = numKvHeads * group;
          const capacity = length + spare;
          const q = randomArray(random, qOffset + numHeads * headDim, qkScale);
          const keys = randomArray(random, numKvHeads * capacity * headDim, qkScale);
          const values = randomArray(random, numKvHeads * capacity * headDim, 2);
          checkAttention(q, qOffset, keys, values, length, capacity, numHeads, numKvHeads, headDim, `attention kv ${numKvHeads} g ${group} d ${headDim} len ${length}`);
        }),
      ),
      { numRuns: 250 },
    );
  });

  it('attention: huge score ranges (exact integer dot products up to ~1e6) stay finite and match', () => {
    fc.assert(
      fc.property(attentionShapes, ({ numKvHeads, group, headDim, length, spare, qOffset, seed }) =>
        scoped(() => {
          // Integers in [-64, 64]: every product and partial sum is an integer below 2^24, so both
          // sides compute the same scores exactly, spread over up to ±64·64·d/√d.
          const random = rng(seed);
          const int = (n: number) => Float32Array.from({ length: n }, () => Math.round(128 * random()) - 64);
          const numHeads = numKvHeads * group;
          const capacity = length + spare;
          const values = randomArray(random, numKvHeads * capacity * headDim, 1e4);
          const out = checkAttention(int(qOffset + numHeads * headDim), qOffset, int(numKvHeads * capacity * headDim), values, length, capacity, numHeads, numKvHeads, headDim, `attention (large scores) d ${headDim} len ${length}`, true);
          assert.ok(out.every(Number.isFinite));
        }),
      ),
      { numRuns: 150 },
    );
  });

  it('attention over a single cache entry returns that entry’s values exactly', () =>
    scoped(() => {
      const random = rng(5);
      const [numHeads, numKvHeads, headDim, capacity] = [6, 2, 36, 4];
      const values = randomArray(random, numKvHeads * capacity * headDim, 1e4);
      const out = checkAttention(randomArray(random, numHeads * headDim, 1e3), 0, randomArray(random, numKvHeads * capacity * headDim, 1e3), values, 1, capacity, numHeads, numKvHeads, headDim, 'attention length 1');
      for (let h = 0; h < numHeads; h++) {
        const kv = Math.floor(h / 3) * capacity * headDim;
        assert.deepEqual(out.subarray(h * headDim, (h + 1) * headDim), values.subarray(kv, kv + headDim));
      }
    }));

  it('swiglu: within 2 ulps (same float64 silu), saturating for large |gate|, also in place', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 200 }), fc.constantFrom(1, 10, 1e3, 1e4), fc.boolean(), fc.integer({ min: 0, max: 2 ** 31 }), (n, scale, inPlace, seed) =>
        scoped(() => {
          const random = rng(seed);
          const gate = randomArray(random, n, scale);
          const up = randomArray(random, n, 3);
          const expected = new Float32Array(n);
          oracle.swiglu(expected, gate, up, n);
          const gateBuf = kernels.f32(gate);
          const out = inPlace ? gateBuf : kernels.f32(n);
          kernels.swiglu(out.ptr, gateBuf.ptr, kernels.f32(up).ptr, n);
          assertClose(out.array, expected, (i) => 2 ** -22 * Math.abs(expected[i]) + 1e-44, `swiglu n ${n}`);
        }),
      ),
      { numRuns: 200 },
    );
  });

  // ---- aggregate ------------------------------------------------------------------------------

  function randomAggregation(random: () => number, format: WeightFormat, P: number, H: number) {
    return {
      hidden: randomArray(random, P * H, 4),
      w0: randomWeights(random, format, H * P * H, 1 / Math.sqrt(P * H)),
      b0: randomArray(random, H, 0.3),
      w2: randomWeights(random, format, P * H, 2 / Math.sqrt(H)),
      b2: randomArray(random, P, 0.3),
    };
  }

  /**
   * The aggregation chains two matmuls, a silu and a softmax, so a worst-case bound compounds
   * too loosely to be useful. Its float32 errors are those of the matmuls (≤ γ_k Σ|terms| each,
   * k ≤ P·H/4 + 7 ≤ 90 here, i.e. ≤ 6e-6 relative) amplified by at most |W2|·|silu'| ≤ a few
   * in the logits and 2× through the softmax: 1e-4 relative to Σ_p w_p |h_p| covers it with
   * room to spare, while the classic bug (streams concatenated instead of interleaved) misses by
   * far more — the last test below checks exactly that.
   */
  const aggregationTolerance = 1e-4;

  function runAggregate(format: WeightFormat, P: number, H: number, smoothing: number, a: ReturnType<typeof randomAggregation>) {
    const out = kernels.f32(H);
    const weights = kernels.f32(P);
    kernels.aggregate(format, out.ptr, weights.ptr, kernels.f32(a.hidden).ptr, place(a.w0.raw), kernels.f32(a.b0).ptr, place(a.w2.raw), kernels.f32(a.b2).ptr, smoothing, P, H, kernels.f32(P * H + H).ptr);
    return { out: out.array, weights: weights.array };
  }

  function oracleAggregate(P: number, H: number, smoothing: number, a: ReturnType<typeof randomAggregation>, hidden = a.hidden) {
    const out = new Float32Array(H);
    const weights = new Float32Array(P);
    oracle.aggregate(out, weights, hidden, a.w0.values, a.b0, a.w2.values, a.b2, smoothing, P, H, new Float32Array(P * H + H));
    return { out, weights };
  }

  it('aggregate (f32, bf16, f16 weights), P = 1 … 8: weights and output within 1e-4 relative', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...formats),
        fc.integer({ min: 1, max: 8 }),
        fc.integer({ min: 1, max: 40 }),
        fc.constantFrom(0, 0.01, 0.1, 0.5),
        fc.integer({ min: 0, max: 2 ** 31 }),
        (format, P, H, smoothing, seed) =>
          scoped(() => {
            const a = randomAggregation(rng(seed), format, P, H);
            const expected = oracleAggregate(P, H, smoothing, a);
            const actual = runAggregate(format, P, H, smoothing, a);
            assertClose(actual.weights, expected.weights, () => aggregationTolerance, `aggregate_${format} weights P ${P} H ${H}`);
            assertClose(actual.out, expected.out, (j) => {
              let scale = 0;
              for (let p = 0; p < P; p++) scale += expected.weights[p] * Math.abs(a.hidden[p * H + j]);
              return aggregationTolerance * scale + 1e-30;
            }, `aggregate_${format} out P ${P} H ${H}`);
          }),
      ),
      { numRuns: 300 },
    );
  });

  it('aggregate: the tolerance is tight enough to catch streams concatenated instead of interleaved', () =>
    scoped(() => {
      for (const P of [2, 4, 8]) {
        const H = 24;
        const a = randomAggregation(rng(P), 'f32', P, H);
        // What a stream-major layout would compute: feed the oracle hidden states permuted so that
        // its interleaving reproduces c = concat(h[0], h[1], …).
        const permuted = new Float32Array(P * H);
        for (let j = 0; j < H; j++) for (let p = 0; p < P; p++) permuted[p * H + j] = a.hidden[j * P + p];
        const wrong = oracleAggregate(P, H, 0.01, a, permuted);
        const actual = runAggregate('f32', P, H, 0.01, a);
        const gap = Math.max(...actual.weights.map((w, p) => Math.abs(w - wrong.weights[p])));
        assert.ok(gap > 100 * aggregationTolerance, `P ${P}: the concatenated layout's weights differ by only ${gap}`);
      }
    }));
});
