// The int8 weight format ("q8") of the wasm backend's `weights: 'int8'` option, defined once here:
// the quantizer the bridge runs at load, the exact dequantization, and `matmul_q8`, the twin of the
// kernel with the same name in assembly/kernels.ts (weights q · s, activations quantized to int16
// per group by quantizeX: W8A16; the two agree to the bit). It lives next to the reference kernels, not in the bridge, because it is an oracle: the
// reference backend itself never quantizes (it stays the float32 truth), but the tests that measure
// what int8 costs need the quantized model's exact weights without the wasm kernels.
//
// A matrix W (outDim, inDim) becomes
//   values (outDim, inDim) int8 in [-127, 127]
//   scales (outDim, ceil(inDim / Q8_GROUP)) bf16 bits, one per group of Q8_GROUP consecutive inputs
//          of a row (the last group of a row may be shorter)
// with, for the group g of row o: s = max|W[o, group]| / 127 rounded UP to a bf16 (at least 2^-126,
// the smallest normal bf16, unless the group is all zeros), and
// q = round-to-nearest-even(W · fl(1 / s)), in float32 (fl: rounded to float32), so that the
// kernels quantize with SIMD and still agree to the bit. Symmetric (no zero point): 0 stays 0.
// Rounding the scale up keeps |W · fl(1/s)| ≤ 127 · (1 + 2^-24) < 127.5, so no value is ever
// clamped, and the error of every weight is at most s/2 + |W| · 2^-23 (the second term from
// fl(1/s)): about max|W[o, group]| / 254. The weight the kernels use is q · s, which is exact in
// float32 (7 + 8 significant bits). Why 32 and bf16: see the comment on matmul_q8 in
// assembly/kernels.ts.
export const Q8_GROUP = 32;

/** 2^-126, the smallest normal bf16 (as its bits): the floor of every non-zero scale. */
export const MIN_NORMAL_BF16 = 0x0080;

/** Scale groups per row of `inDim` inputs. */
export function q8Groups(inDim: number): number {
  return Math.ceil(inDim / Q8_GROUP);
}

/**
 * Bytes of scratch the wasm kernel matmul_q8 needs (per thread) for inDim inputs: up to 8 rows of
 * activations quantized to int16 (2 · inDim bytes a row) and their bf16 scales (2 per group), see
 * assembly/kernels.ts. Grows with inDim, so a scratch for the largest inDim serves every matrix.
 */
export function q8ScratchBytes(inDim: number): number {
  return 16 * (inDim + q8Groups(inDim));
}

/** Bytes of a quantized (outDim, inDim) matrix: the int8 values plus the bf16 scales. */
export function q8Bytes(outDim: number, inDim: number): number {
  return outDim * inDim + 2 * outDim * q8Groups(inDim);
}

const f32 = new Float32Array(1);
const f32Bits = new Uint32Array(f32.buffer);

/** The smallest bf16 (as its 16 bits) that is ≥ v, for finite v ≥ 0. */
export function bf16AtLeast(v: number): number {
  f32[0] = v;
  let bits = f32Bits[0];
  if (f32[0] < v) bits += 1; // float32 rounded down: the next float32 up
  const high = bits >>> 16;
  return (bits & 0xffff) === 0 ? high : high + 1;
}

/** The float32 value of bf16 bits. */
export function bf16Value(bits: number): number {
  f32Bits[0] = bits << 16;
  return f32[0];
}

/**
 * Quantize rows [0, rows) of `w` (rows, inDim) into values/scales starting at row `rowOffset` of the
 * destination (so a matrix can be quantized piece by piece as it is read). Throws a RangeError naming
 * `what` and the row for a NaN or infinite weight, which has no int8 representation.
 */
export function quantizeRowsQ8(values: Int8Array, scales: Uint16Array, w: Float32Array, rows: number, inDim: number, rowOffset = 0, what = 'matrix'): void {
  const groups = q8Groups(inDim);
  for (let r = 0; r < rows; r++) {
    const from = r * inDim;
    const to = (rowOffset + r) * inDim;
    for (let g = 0; g < groups; g++) {
      const start = g * Q8_GROUP;
      const end = Math.min(inDim, start + Q8_GROUP);
      let max = 0;
      for (let i = start; i < end; i++) {
        const a = Math.abs(w[from + i]);
        if (a > max) max = a;
        else if (a !== a) max = NaN;
      }
      if (!Number.isFinite(max)) {
        throw new RangeError(`${what}: row ${rowOffset + r} has a non-finite weight (NaN or ±Infinity) in inputs ${start}..${end - 1}; it cannot be quantized to int8 (use the stored weights)`);
      }
      // never a subnormal scale: its inverse would overflow to Infinity (groups with max|W| below
      // ~1.5e-36); the smallest normal bf16 keeps 1/s = 2^126 finite and the error ≤ s/2 = 2^-127
      const scaleBits = max > 0 ? Math.max(bf16AtLeast(max / 127), MIN_NORMAL_BF16) : 0;
      scales[(rowOffset + r) * groups + g] = scaleBits;
      const s = bf16Value(scaleBits);
      // s = 0 only when the whole group is 0; float32 arithmetic, as the SIMD kernel does it
      const inverse = s === 0 ? 0 : Math.fround(1 / s);
      for (let i = start; i < end; i++) values[to + i] = roundHalfEven(Math.fround(w[from + i] * inverse));
    }
  }
}

/** Round to the nearest integer, ties to even (WebAssembly's f32.nearest). */
function roundHalfEven(x: number): number {
  const r = Math.round(x); // ties up
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** A whole matrix quantized: see the format above. */
export function quantizeQ8(w: Float32Array, outDim: number, inDim: number): { values: Int8Array; scales: Uint16Array } {
  const values = new Int8Array(outDim * inDim);
  const scales = new Uint16Array(outDim * q8Groups(inDim));
  quantizeRowsQ8(values, scales, w, outDim, inDim);
  return { values, scales };
}

/** The float32 weights q · s the kernels multiply with (exact). */
export function dequantizeQ8(values: Int8Array, scales: Uint16Array, outDim: number, inDim: number): Float32Array {
  const groups = q8Groups(inDim);
  const w = new Float32Array(outDim * inDim);
  for (let o = 0; o < outDim; o++) {
    for (let i = 0; i < inDim; i++) w[o * inDim + i] = values[o * inDim + i] * bf16Value(scales[o * groups + Math.floor(i / Q8_GROUP)]);
  }
  return w;
}

/**
 * One row of activations quantized to int16 per group of Q8_GROUP inputs, as matmul_q8 does it
 * (assembly/kernels.ts quantizeRowX is the twin): for the group's m = max |x|, the scale is
 * sx = 2^(E − 14) with E the exponent field of m (at least 1: sx ≥ 2^-126), so m / sx < 2^15, and
 * xq = x / sx rounded to nearest even, clamped to [-32768, 32767]: |x − xq · sx| ≤ sx ≤ m · 2^-14.
 * A group of zeros gets sx = 0; one holding NaN or ±Infinity sx = NaN (its outputs become NaN).
 * Both with xq = 0. Returns the values and the scales as float32 values.
 */
export function quantizeX(x: Float32Array, inDim: number): { xq: Int16Array; sx: Float32Array } {
  const groups = q8Groups(inDim);
  const xq = new Int16Array(inDim);
  const sx = new Float32Array(groups);
  for (let g = 0; g < groups; g++) {
    const start = g * Q8_GROUP;
    const end = Math.min(inDim, start + Q8_GROUP);
    let max = 0;
    for (let i = start; i < end; i++) {
      const a = Math.abs(x[i]);
      if (a > max) max = a;
      else if (a !== a) max = NaN;
    }
    if (!Number.isFinite(max) || max === 0) {
      sx[g] = max === 0 ? 0 : NaN;
      continue; // xq stays 0
    }
    f32[0] = max;
    const e = (f32Bits[0] >>> 23) & 0xff;
    const se = Math.max(e, 15) - 14;
    f32Bits[0] = se << 23;
    sx[g] = f32[0];
    f32Bits[0] = (254 - se) << 23;
    const inverse = f32[0]; // 1 / sx, a power of two: x · inverse is exact
    for (let i = start; i < end; i++) xq[i] = Math.min(32767, roundHalfEven(x[i] * inverse));
  }
  return { xq, sx };
}

/**
 * out[r, o] ≈ Σ_i (q[o, i] · s[o, i / 32]) · x[r, i] (+ bias[o]), with each row of x quantized by
 * quantizeX (W8A16): the twin of assembly's matmul_q8, operation for operation, so the two agree to
 * the bit. Per output: four float32 lane accumulators; per group g the exact integer sums
 * G[l] = Σ q[i] · xq[i] over the inputs i of the group's 8-blocks with (i mod 8) >> 1 = l, the
 * group's remainder past its last 8-block going to lane 0; then acc[l] += fl(G[l]) · fl(s · sx)
 * (each step rounded to float32); finally (acc0 + acc2) + (acc1 + acc3), then + bias.
 *   W (outDim, inDim) as int8 values + bf16 scales @ x (rows, inDim) -> out (rows, outDim)
 */
export function matmul_q8(out: Float32Array, x: Float32Array, values: Int8Array, scales: Uint16Array, bias: Float32Array | null, rows: number, inDim: number, outDim: number): void {
  const groups = q8Groups(inDim);
  const fr = Math.fround;
  const G = [0, 0, 0, 0];
  const acc = [0, 0, 0, 0];
  for (let r = 0; r < rows; r++) {
    const { xq, sx } = quantizeX(x.subarray(r * inDim, (r + 1) * inDim), inDim);
    for (let o = 0; o < outDim; o++) {
      acc.fill(0);
      for (let g = 0; g < groups; g++) {
        const start = g * Q8_GROUP;
        const end = Math.min(inDim, start + Q8_GROUP);
        const end8 = start + ((end - start) & ~7);
        G.fill(0);
        for (let i = start; i < end; i++) G[i < end8 ? (i & 7) >> 1 : 0] += values[o * inDim + i] * xq[i];
        const c = fr(bf16Value(scales[o * groups + g]) * sx[g]);
        for (let l = 0; l < 4; l++) acc[l] = fr(acc[l] + fr(fr(G[l]) * c));
      }
      let sum = fr(fr(acc[0] + acc[2]) + fr(acc[1] + acc[3]));
      if (bias !== null) sum = fr(sum + bias[o]);
      out[r * outDim + o] = sum;
    }
  }
}
