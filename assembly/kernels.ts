// The fast kernels: AssemblyScript compiled to WebAssembly with 128-bit SIMD. Each export is the
// twin of the function with the same name in src/reference/kernels.ts (the oracle), with the same
// arguments in the same order — the int8 ones of src/reference/q8.ts (matmul_q8; quantize_q8 is
// quantizeRowsQ8 there, dequantize_row_q8 a row of dequantizeQ8); test/wasm-kernels.test.ts ties
// each pair together.
//
// Build: `npm run build:wasm` (asconfig.json) writes src/wasm-bridge/kernels.wasm, which is
// committed so a clean clone needs no compiler; test/wasm-build.test.ts rebuilds it and fails if
// the committed file is stale.
//
// Conventions
// - Every array argument is a byte offset ("pointer") into the module's one linear memory. That
//   memory is imported and shared: src/wasm-bridge allocates every buffer in it, and worker
//   threads running their own instance of this module over the same memory see the same data.
// - Element offsets the oracle takes (`offset`, `qOffset`) are kept, so a call reads like its twin.
// - Weight matrices stay at their stored width (f32, bf16 or f16) and are widened to f32 in
//   registers; vectors (biases, norm weights, activations, caches) are f32.
// - Nothing here allocates: scratch space comes from the caller. No GC, no runtime (--runtime stub).
// - Floating point: where the oracle's float64 arithmetic is cheap (norms, RoPE, softmax, SwiGLU),
//   it is mirrored in f64 so results agree to the last bit or nearly; the big sums (matmul and the
//   attention dot products) accumulate in f32 lanes, which is what makes them fast. WebAssembly
//   has no fused multiply-add outside relaxed SIMD, so in the plain build every mul then add is
//   rounded twice — and the result is the same on every machine. The relaxed-SIMD build fuses
//   the matrix products' multiply-adds (see madd below); the engine picks the build (bridge).

// Weight formats. Only compile-time constants are passed: the @inline helpers below fold every
// `format ==` test away, so each exported matmul is its own straight-line loop.
const F32: i32 = 0;
const BF16: i32 = 1;
const F16: i32 = 2;
/**
 * bf16 in "paired" order, the layout the wasm backend keeps bf16 matrices in (pair_bf16 below
 * writes it at load): within each row, every full block of 8 weights w0..w7 is stored as
 * w0 w4 w1 w5 w2 w6 w3 w7, and a last partial block (inDim % 8 weights) as it was. One 16-byte
 * load then holds w0..w3 in the low halves of its four 32-bit lanes and w4..w7 in the high
 * halves: a shift left by 16 gives w0..w3 as f32, a mask of the high halves w4..w7 — two cheap
 * instructions for eight weights, where the natural order needs two widening loads and two
 * shifts. The products are the same, in the same order, as for natural bf16.
 */
const BF16P: i32 = 3;

// @ts-ignore: decorator
@inline function weightShift(format: i32): usize {
  return format == F32 ? 2 : 1; // log2 of the bytes per weight
}

/**
 * f16 → f32 of four lanes holding u16 bit patterns, with integer ops (WebAssembly SIMD has no
 * half-precision instruction). F. Giesen's half_to_float: shift exponent and mantissa into f32
 * position and add 112 to the exponent (bias 15 → 127). Inf/NaN (exponent 31) need another 112
 * to reach 255. Subnormals (exponent 0) are renormalised with one exact f32 subtraction: with the
 * exponent field bumped to 113 the lane holds 2^-14 · (1 + m/1024); subtracting 2^-14 leaves
 * m · 2^-24, the subnormal's value. No f32 subnormal is ever produced, so no slow path is hit.
 */
// @ts-ignore: decorator
@inline function f16x4ToF32(h: v128): v128 {
  const magnitude = i32x4.shl(v128.and(h, i32x4.splat(0x7fff)), 13);
  const exponent = v128.and(magnitude, i32x4.splat(0x0f800000));
  let f = i32x4.add(magnitude, i32x4.splat(0x38000000));
  const infNan = i32x4.eq(exponent, i32x4.splat(0x0f800000));
  f = i32x4.add(f, v128.and(infNan, i32x4.splat(0x38000000)));
  const renormalised = f32x4.sub(i32x4.add(f, i32x4.splat(0x00800000)), i32x4.splat(0x38800000));
  f = v128.bitselect(renormalised, f, i32x4.eq(exponent, i32x4.splat(0)));
  return v128.or(f, i32x4.shl(v128.and(h, i32x4.splat(0x8000)), 16));
}

/** The same conversion for one value. */
function f16ToF32(h: u32): f32 {
  const magnitude = (h & 0x7fff) << 13;
  const exponent = magnitude & 0x0f800000;
  let f = magnitude + 0x38000000;
  if (exponent == 0x0f800000) f += 0x38000000;
  else if (exponent == 0) f = reinterpret<u32>(reinterpret<f32>(f + 0x00800000) - reinterpret<f32>(<u32>0x38800000));
  return reinterpret<f32>(f | ((h & 0x8000) << 16));
}

/** Four consecutive weights at p, widened to f32x4. */
// @ts-ignore: decorator
@inline function load4(format: i32, p: usize): v128 {
  if (format == F32) return v128.load(p);
  // load16x4_u reads four u16 and zero-extends each into a 32-bit lane (one pmovzxwd on x86).
  const h = v128.load16x4_u(p);
  // bf16 is the high half of an f32: shifting it up is the exact conversion. (A BF16P row's
  // partial last block is in natural order.)
  if (format == BF16 || format == BF16P) return i32x4.shl(h, 16);
  return f16x4ToF32(h);
}

/** Weights i .. i + 3 of the block of 8 that starts at p (weight i), as f32x4. */
// @ts-ignore: decorator
@inline function low8(format: i32, p: usize): v128 {
  if (format == BF16P) return i32x4.shl(v128.load(p), 16);
  return load4(format, p);
}

/** Weights i + 4 .. i + 7 of the block of 8 that starts at p (weight i), as f32x4. */
// @ts-ignore: decorator
@inline function high8(format: i32, p: usize): v128 {
  if (format == BF16P) return v128.and(v128.load(p), i32x4.splat(0xffff0000));
  return load4(format, p + (<usize>4 << weightShift(format)));
}

/** One weight at p, widened to f32. */
// @ts-ignore: decorator
@inline function load1(format: i32, p: usize): f32 {
  if (format == F32) return load<f32>(p);
  const h = <u32>load<u16>(p);
  if (format == BF16 || format == BF16P) return reinterpret<f32>(h << 16); // tails are natural
  return f16ToF32(h);
}

/**
 * acc + w · x, lane by lane: the multiply-add of the matrix products. The plain build
 * (kernels.wasm) rounds the product and then the sum. The relaxed-SIMD build
 * (kernels-relaxed.wasm, `npm run build:wasm` compiles both from this file) uses
 * f32x4.relaxed_madd, which the engine turns into one fused multiply-add where the CPU has one
 * (x86 FMA3, ARM NEON): one instruction instead of two and one rounding instead of two. Relaxed
 * SIMD lets an engine fuse or not, so that build's bits may differ between machines (never
 * between threads or runs on one machine); both stay within the tests' summation bound.
 */
// @ts-ignore: decorator
@inline function madd(acc: v128, w: v128, x: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(w, x, acc);
  return f32x4.add(acc, f32x4.mul(w, x));
}

/** Lane sum in a fixed order: (l0 + l2) + (l1 + l3). */
// @ts-ignore: decorator
@inline function hsum(v: v128): f32 {
  const folded = f32x4.add(v, v128.shuffle<f32>(v, v, 2, 3, 0, 1));
  return f32x4.extract_lane(folded, 0) + f32x4.extract_lane(folded, 1);
}

// ---------------------------------------------------------------------------------------------
// matmul
//
// Every output out[r, o] is computed by exactly the same sequence of f32 operations, whatever
// tile computes it and whatever output range a thread was given: one f32x4 accumulator over the
// inDim & ~3 leading weights (acc += w·x, four lanes), the lane sum hsum(acc), then the scalar
// tail i = inDim & ~3 .. inDim − 1 in order, then the bias. So splitting the output rows over
// threads changes no bit of the result.

/** Finish one output: lane sum, scalar tail, bias. */
// @ts-ignore: decorator
@inline function finish(format: i32, acc: v128, wRow: usize, xRow: usize, vecEnd: i32, inDim: i32, bias: usize, o: i32): f32 {
  let sum = hsum(acc);
  for (let i = vecEnd; i < inDim; i++) {
    sum += load1(format, wRow + (<usize>i << weightShift(format))) * load<f32>(xRow + (<usize>i << 2));
  }
  if (bias != 0) sum += load<f32>(bias + (<usize>o << 2));
  return sum;
}

/**
 * Four output rows (o0..o3) × two activation rows (r, r + 1), the tile for 2 rows and more with
 * f32 weights (and q8's dequantized rows), and for the pair of rows a bf16/f16 chunk leaves after
 * its groups of 4 (see matmulAny): each weight vector is loaded and widened once and used for both rows;
 * eight independent accumulators keep the adders busy. Register budget (16 xmm on x86-64):
 * 8 accumulators + 2 activation vectors + 1 weight vector. The weight rows are given by address
 * (matmul_q8 passes rows it dequantized into scratch).
 */
// @ts-ignore: decorator
@inline function tile4x2Rows(format: i32, out: usize, x: usize, w0: usize, w1: usize, w2: usize, w3: usize, bias: usize, inDim: i32, outDim: i32, o0: i32, o1: i32, o2: i32, o3: i32, r: i32): void {
  const shift = weightShift(format);
  const x0 = x + ((<usize>r * <usize>inDim) << 2);
  const x1 = x0 + (<usize>inDim << 2);
  let a00 = f32x4.splat(0), a01 = f32x4.splat(0), a10 = f32x4.splat(0), a11 = f32x4.splat(0);
  let a20 = f32x4.splat(0), a21 = f32x4.splat(0), a30 = f32x4.splat(0), a31 = f32x4.splat(0);
  const vecEnd = inDim & ~3;
  const vec8 = inDim & ~7;
  for (let i = 0; i < vec8; i += 8) {
    const xOff = <usize>i << 2;
    const wOff = <usize>i << shift;
    // inputs i .. i + 3
    let xv0 = v128.load(x0 + xOff);
    let xv1 = v128.load(x1 + xOff);
    let wv = low8(format, w0 + wOff);
    a00 = madd(a00, wv, xv0);
    a01 = madd(a01, wv, xv1);
    wv = low8(format, w1 + wOff);
    a10 = madd(a10, wv, xv0);
    a11 = madd(a11, wv, xv1);
    wv = low8(format, w2 + wOff);
    a20 = madd(a20, wv, xv0);
    a21 = madd(a21, wv, xv1);
    wv = low8(format, w3 + wOff);
    a30 = madd(a30, wv, xv0);
    a31 = madd(a31, wv, xv1);
    // inputs i + 4 .. i + 7
    xv0 = v128.load(x0 + xOff, 16);
    xv1 = v128.load(x1 + xOff, 16);
    wv = high8(format, w0 + wOff);
    a00 = madd(a00, wv, xv0);
    a01 = madd(a01, wv, xv1);
    wv = high8(format, w1 + wOff);
    a10 = madd(a10, wv, xv0);
    a11 = madd(a11, wv, xv1);
    wv = high8(format, w2 + wOff);
    a20 = madd(a20, wv, xv0);
    a21 = madd(a21, wv, xv1);
    wv = high8(format, w3 + wOff);
    a30 = madd(a30, wv, xv0);
    a31 = madd(a31, wv, xv1);
  }
  if (vec8 < vecEnd) {
    // a last block of 4 inputs (natural order in every format)
    const xOff = <usize>vec8 << 2;
    const wOff = <usize>vec8 << shift;
    const xv0 = v128.load(x0 + xOff);
    const xv1 = v128.load(x1 + xOff);
    let wv = load4(format, w0 + wOff);
    a00 = madd(a00, wv, xv0);
    a01 = madd(a01, wv, xv1);
    wv = load4(format, w1 + wOff);
    a10 = madd(a10, wv, xv0);
    a11 = madd(a11, wv, xv1);
    wv = load4(format, w2 + wOff);
    a20 = madd(a20, wv, xv0);
    a21 = madd(a21, wv, xv1);
    wv = load4(format, w3 + wOff);
    a30 = madd(a30, wv, xv0);
    a31 = madd(a31, wv, xv1);
  }
  const out0 = out + ((<usize>r * <usize>outDim) << 2);
  const out1 = out0 + (<usize>outDim << 2);
  store<f32>(out0 + (<usize>o0 << 2), finish(format, a00, w0, x0, vecEnd, inDim, bias, o0));
  store<f32>(out1 + (<usize>o0 << 2), finish(format, a01, w0, x1, vecEnd, inDim, bias, o0));
  store<f32>(out0 + (<usize>o1 << 2), finish(format, a10, w1, x0, vecEnd, inDim, bias, o1));
  store<f32>(out1 + (<usize>o1 << 2), finish(format, a11, w1, x1, vecEnd, inDim, bias, o1));
  store<f32>(out0 + (<usize>o2 << 2), finish(format, a20, w2, x0, vecEnd, inDim, bias, o2));
  store<f32>(out1 + (<usize>o2 << 2), finish(format, a21, w2, x1, vecEnd, inDim, bias, o2));
  store<f32>(out0 + (<usize>o3 << 2), finish(format, a30, w3, x0, vecEnd, inDim, bias, o3));
  store<f32>(out1 + (<usize>o3 << 2), finish(format, a31, w3, x1, vecEnd, inDim, bias, o3));
}

/**
 * Two output rows (o0, o1) × four activation rows (r .. r + 3), the tile for 4 rows and more: each
 * weight vector is loaded and widened once for four rows (bf16 and f16 spend widening
 * instructions per weight vector on the same ports as the multiplies and adds, so this is where
 * their extra cost is paid least often). Register budget: 8 accumulators + 4 activation vectors +
 * the weight vectors in flight, within the 15 SIMD registers V8 allocates on x86-64.
 */
// @ts-ignore: decorator
@inline function tile2x4Rows(format: i32, out: usize, x: usize, w0: usize, w1: usize, bias: usize, inDim: i32, outDim: i32, o0: i32, o1: i32, r: i32): void {
  const shift = weightShift(format);
  const xRowBytes = <usize>inDim << 2;
  const x0 = x + <usize>r * xRowBytes;
  const x1 = x0 + xRowBytes;
  const x2 = x1 + xRowBytes;
  const x3 = x2 + xRowBytes;
  let a00 = f32x4.splat(0), a01 = f32x4.splat(0), a02 = f32x4.splat(0), a03 = f32x4.splat(0);
  let a10 = f32x4.splat(0), a11 = f32x4.splat(0), a12 = f32x4.splat(0), a13 = f32x4.splat(0);
  const vecEnd = inDim & ~3;
  const vec8 = inDim & ~7;
  for (let i = 0; i < vec8; i += 8) {
    const xOff = <usize>i << 2;
    const wOff = <usize>i << shift;
    // inputs i .. i + 3
    let xv0 = v128.load(x0 + xOff);
    let xv1 = v128.load(x1 + xOff);
    let xv2 = v128.load(x2 + xOff);
    let xv3 = v128.load(x3 + xOff);
    let wv = low8(format, w0 + wOff);
    a00 = madd(a00, wv, xv0);
    a01 = madd(a01, wv, xv1);
    a02 = madd(a02, wv, xv2);
    a03 = madd(a03, wv, xv3);
    wv = low8(format, w1 + wOff);
    a10 = madd(a10, wv, xv0);
    a11 = madd(a11, wv, xv1);
    a12 = madd(a12, wv, xv2);
    a13 = madd(a13, wv, xv3);
    // inputs i + 4 .. i + 7
    xv0 = v128.load(x0 + xOff, 16);
    xv1 = v128.load(x1 + xOff, 16);
    xv2 = v128.load(x2 + xOff, 16);
    xv3 = v128.load(x3 + xOff, 16);
    wv = high8(format, w0 + wOff);
    a00 = madd(a00, wv, xv0);
    a01 = madd(a01, wv, xv1);
    a02 = madd(a02, wv, xv2);
    a03 = madd(a03, wv, xv3);
    wv = high8(format, w1 + wOff);
    a10 = madd(a10, wv, xv0);
    a11 = madd(a11, wv, xv1);
    a12 = madd(a12, wv, xv2);
    a13 = madd(a13, wv, xv3);
  }
  if (vec8 < vecEnd) {
    // a last block of 4 inputs (natural order in every format)
    const xOff = <usize>vec8 << 2;
    const wOff = <usize>vec8 << shift;
    const xv0 = v128.load(x0 + xOff);
    const xv1 = v128.load(x1 + xOff);
    const xv2 = v128.load(x2 + xOff);
    const xv3 = v128.load(x3 + xOff);
    let wv = load4(format, w0 + wOff);
    a00 = madd(a00, wv, xv0);
    a01 = madd(a01, wv, xv1);
    a02 = madd(a02, wv, xv2);
    a03 = madd(a03, wv, xv3);
    wv = load4(format, w1 + wOff);
    a10 = madd(a10, wv, xv0);
    a11 = madd(a11, wv, xv1);
    a12 = madd(a12, wv, xv2);
    a13 = madd(a13, wv, xv3);
  }
  const out0 = out + ((<usize>r * <usize>outDim) << 2);
  const outRowBytes = <usize>outDim << 2;
  const out1 = out0 + outRowBytes;
  const out2 = out1 + outRowBytes;
  const out3 = out2 + outRowBytes;
  store<f32>(out0 + (<usize>o0 << 2), finish(format, a00, w0, x0, vecEnd, inDim, bias, o0));
  store<f32>(out1 + (<usize>o0 << 2), finish(format, a01, w0, x1, vecEnd, inDim, bias, o0));
  store<f32>(out2 + (<usize>o0 << 2), finish(format, a02, w0, x2, vecEnd, inDim, bias, o0));
  store<f32>(out3 + (<usize>o0 << 2), finish(format, a03, w0, x3, vecEnd, inDim, bias, o0));
  store<f32>(out0 + (<usize>o1 << 2), finish(format, a10, w1, x0, vecEnd, inDim, bias, o1));
  store<f32>(out1 + (<usize>o1 << 2), finish(format, a11, w1, x1, vecEnd, inDim, bias, o1));
  store<f32>(out2 + (<usize>o1 << 2), finish(format, a12, w1, x2, vecEnd, inDim, bias, o1));
  store<f32>(out3 + (<usize>o1 << 2), finish(format, a13, w1, x3, vecEnd, inDim, bias, o1));
}

/** Four output rows × one activation row (rows = 1, or the last row of an odd count); weight rows by address. */
// @ts-ignore: decorator
@inline function tile4x1Rows(format: i32, out: usize, x: usize, w0: usize, w1: usize, w2: usize, w3: usize, bias: usize, inDim: i32, outDim: i32, o0: i32, o1: i32, o2: i32, o3: i32, r: i32): void {
  const shift = weightShift(format);
  const x0 = x + ((<usize>r * <usize>inDim) << 2);
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
  const vecEnd = inDim & ~3;
  const vec8 = inDim & ~7;
  for (let i = 0; i < vec8; i += 8) {
    const wOff = <usize>i << shift;
    const xOff = <usize>i << 2;
    const xLow = v128.load(x0 + xOff); // inputs i .. i + 3
    const xHigh = v128.load(x0 + xOff, 16); // inputs i + 4 .. i + 7
    a0 = madd(a0, low8(format, w0 + wOff), xLow);
    a1 = madd(a1, low8(format, w1 + wOff), xLow);
    a2 = madd(a2, low8(format, w2 + wOff), xLow);
    a3 = madd(a3, low8(format, w3 + wOff), xLow);
    a0 = madd(a0, high8(format, w0 + wOff), xHigh);
    a1 = madd(a1, high8(format, w1 + wOff), xHigh);
    a2 = madd(a2, high8(format, w2 + wOff), xHigh);
    a3 = madd(a3, high8(format, w3 + wOff), xHigh);
  }
  if (vec8 < vecEnd) {
    // a last block of 4 inputs (natural order in every format)
    const wOff = <usize>vec8 << shift;
    const xv = v128.load(x0 + (<usize>vec8 << 2));
    a0 = madd(a0, load4(format, w0 + wOff), xv);
    a1 = madd(a1, load4(format, w1 + wOff), xv);
    a2 = madd(a2, load4(format, w2 + wOff), xv);
    a3 = madd(a3, load4(format, w3 + wOff), xv);
  }
  const out0 = out + ((<usize>r * <usize>outDim) << 2);
  store<f32>(out0 + (<usize>o0 << 2), finish(format, a0, w0, x0, vecEnd, inDim, bias, o0));
  store<f32>(out0 + (<usize>o1 << 2), finish(format, a1, w1, x0, vecEnd, inDim, bias, o1));
  store<f32>(out0 + (<usize>o2 << 2), finish(format, a2, w2, x0, vecEnd, inDim, bias, o2));
  store<f32>(out0 + (<usize>o3 << 2), finish(format, a3, w3, x0, vecEnd, inDim, bias, o3));
}

/** Bytes of activation rows kept hot while every weight row streams past them (prefill). */
const ACTIVATION_CHUNK_BYTES: i32 = 256 * 1024;

// @ts-ignore: decorator
@inline function matmulAny(format: i32, out: usize, x: usize, w: usize, bias: usize, rows: i32, inDim: i32, outDim: i32, oStart: i32, oEnd: i32): void {
  // Every tile walks its rows' inputs in blocks of 8 (low8, high8), then one block of 4 if
  // inDim & 4, then the scalar tail: the same order for every format, paired bf16 included.
  // Decode (rows = P ≤ 8): all rows in one chunk, so each weight row is read from memory exactly
  // once per call. Prefill (rows = P × tokens): chunks of rows (a multiple of 4) small enough to
  // stay in cache; the weights are then read once per chunk. Within a chunk, for bf16 and f16
  // weights, groups of 4 rows take two 2 × 4 tiles per 4 outputs (each weight vector widened once
  // for 4 rows); then pairs of rows the 4 × 2 tile, a last odd row the 4 × 1 tile. f32 weights
  // need no widening and stay on the 4 × 2 tile (fewer loads per multiply-add; the 2 × 4 tile
  // measured 0–6 % slower for them in bench/matmul-rows.bench.ts).
  const chunk = rows <= 8 ? rows : max(8, (ACTIVATION_CHUNK_BYTES / max(1, inDim * 4)) & ~3);
  const last = oEnd - 1;
  const wRowBytes = <usize>inDim << weightShift(format);
  // A tile's four outputs come from the four quarters of the range: o, o + q, o + 2q, o + 3q.
  // Its four weight rows are then four long sequential streams through memory. With adjacent
  // rows (o .. o + 3) every stream would end after one row (3 KB for inDim 1536) and restart
  // four rows further on, and at decode, where each weight is used for only 1-8 rows, that
  // held the read rate to about 60 % of a plain read loop (bench/matmul-rows.bench.ts --dram).
  // Which outputs share a tile changes no output's operations.
  const quarter = (oEnd - oStart + 3) >> 2;
  for (let r0 = 0; r0 < rows; r0 += chunk) {
    const r1 = min(rows, r0 + chunk);
    for (let o = oStart; o < oStart + quarter; o++) {
      // Past the end of the range the tile repeats the last row: the same inputs give the same
      // bits, stored to the same place, and there is only one code path.
      const o1 = min(o + quarter, last);
      const o2 = min(o + 2 * quarter, last);
      const o3 = min(o + 3 * quarter, last);
      const w0 = w + <usize>o * wRowBytes, w1 = w + <usize>o1 * wRowBytes;
      const w2 = w + <usize>o2 * wRowBytes, w3 = w + <usize>o3 * wRowBytes;
      let r = r0;
      if (format != F32) {
        for (; r + 4 <= r1; r += 4) {
          tile2x4Rows(format, out, x, w0, w1, bias, inDim, outDim, o, o1, r);
          tile2x4Rows(format, out, x, w2, w3, bias, inDim, outDim, o2, o3, r);
        }
      }
      for (; r + 2 <= r1; r += 2) tile4x2Rows(format, out, x, w0, w1, w2, w3, bias, inDim, outDim, o, o1, o2, o3, r);
      if (r < r1) tile4x1Rows(format, out, x, w0, w1, w2, w3, bias, inDim, outDim, o, o1, o2, o3, r);
    }
  }
}

/**
 * out[r, o] = Σ_i w[o, i] · x[r, i] (+ bias[o]) for every row r and the outputs o in [oStart, oEnd)
 * (a thread's share; the whole product is oStart = 0, oEnd = outDim).
 *   W (outDim, inDim) f32 @ x (rows, inDim) -> out (rows, outDim); bias (outDim) f32 or 0 for none.
 * Rows are the P streams at decode and P × tokens at prefill; each weight row is read once for
 * all of them (see matmulAny). out must not overlap x.
 */
export function matmul_f32(out: usize, x: usize, w: usize, bias: usize, rows: i32, inDim: i32, outDim: i32, oStart: i32, oEnd: i32): void {
  matmulAny(F32, out, x, w, bias, rows, inDim, outDim, oStart, oEnd);
}

/** matmul_f32 with W (outDim, inDim) stored as bf16 (u16 each), widened exactly in registers. */
export function matmul_bf16(out: usize, x: usize, w: usize, bias: usize, rows: i32, inDim: i32, outDim: i32, oStart: i32, oEnd: i32): void {
  matmulAny(BF16, out, x, w, bias, rows, inDim, outDim, oStart, oEnd);
}

/** matmul_f32 with W (outDim, inDim) stored as IEEE f16 (u16 each), widened exactly in registers. */
export function matmul_f16(out: usize, x: usize, w: usize, bias: usize, rows: i32, inDim: i32, outDim: i32, oStart: i32, oEnd: i32): void {
  matmulAny(F16, out, x, w, bias, rows, inDim, outDim, oStart, oEnd);
}

/**
 * matmul_bf16 with W in paired order (BF16P above; pair_bf16 writes it). Same operations in the
 * same order as matmul_bf16 on the natural matrix, so the same bits; fewer instructions per weight.
 */
export function matmul_bf16p(out: usize, x: usize, w: usize, bias: usize, rows: i32, inDim: i32, outDim: i32, oStart: i32, oEnd: i32): void {
  matmulAny(BF16P, out, x, w, bias, rows, inDim, outDim, oStart, oEnd);
}

/**
 * Rows [rStart, rEnd) of a bf16 matrix w (rows, inDim), rewritten in place from natural to paired
 * order (BF16P): each full block of 8 weights w0..w7 becomes w0 w4 w1 w5 w2 w6 w3 w7. Rows are
 * independent, so threads may take any split.
 */
export function pair_bf16(w: usize, inDim: i32, rStart: i32, rEnd: i32): void {
  const vec8 = inDim & ~7;
  for (let r = rStart; r < rEnd; r++) {
    const row = w + ((<usize>r * <usize>inDim) << 1);
    for (let i = 0; i < vec8; i += 8) {
      const p = row + (<usize>i << 1);
      const v = v128.load(p);
      v128.store(p, v128.shuffle<u16>(v, v, 0, 4, 1, 5, 2, 6, 3, 7));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// matmul_q8: int8 weights with one scale per group of Q8_GROUP consecutive inputs of a row
//
// Format (written by src/reference/q8.ts at load; that file is its definition and the oracle):
//   w      (outDim, inDim) int8, row-major: q[o, i] in [-127, 127]
//   scales (outDim, ceil(inDim / Q8_GROUP)) bf16 bits: s[o, g] = max |W[o, g·G .. g·G + G)| / 127,
//          rounded UP to a bf16, so |W / s| ≤ 127 and rounding to nearest never needs clamping
//   the weight is q · s. q has 7 significant bits and s 8, so q · s is exact in f32 (the
//   embedding lookup, dequantize_row_q8, uses it as is).
//
// Why G = 32 and bf16 scales. The rounding error of a weight is at most s/2 = max|W_group| / 254,
// so a group should be small enough to follow the local magnitude (real checkpoints have outlier
// input channels that would set the scale of a whole long row). Bytes per weight are
// 1 + 2/G: 1.0625 at G = 32, against 2 for bf16 (decode reads 1.88× fewer bytes). G = 64 would
// save 3 % of the bytes for a larger step wherever a group's max grows (≈ +15 % for Gaussian
// rows); G = 16 would cost 6 % more bytes. A bf16 scale has f32's range (no underflow for tiny
// groups, unlike f16) and its short mantissa costs nothing: q is computed with the stored scale,
// so the error bound s/2 (+ |W| · 2^-23) holds as stated. G is a multiple of 8, so a vector block never straddles
// two groups. Any inDim works: the last group of a row may be shorter.
//
// The product is W8A16: each row of x is quantized to int16 per group of Q8_GROUP inputs (the same
// groups as the weights), and the products of a group are summed exactly in int32 with
// i32x4.dot_i16x8_s (8 multiplies and 4 adds in one instruction, pmaddwd on x86); only the group
// sum goes to f32, times the weight's and the activation's scales. An f32 route (widen every int8
// to f32, multiply, add) needs about 3 vector instructions per weight and so stays below the
// memory's speed at decode; this one needs under 1.
//
// Activations (quantizeRowX; q8.ts quantizeX is its twin): for a group with m = max |x| over it,
//   sx = 2^(E − 14), E the exponent field of m (at least 2^-126), so m / sx < 2^15;
//   xq = x / sx rounded to nearest even (exact scaling: sx is a power of two), clamped to
//        [-32768, 32767] (only +32768 can occur), so |x − xq · sx| ≤ sx ≤ m · 2^-14.
//   m = 0: sx = 0 and xq = 0. m NaN or ±Infinity: sx = NaN and xq = 0 (the outputs are NaN).
//   sx is kept as bf16 bits (a power of two is exact in bf16).
// This adds an error of at most Σ_g m_g · 2^-14 · Σ_{i in g} |q_i · s_g| to an output (about
// 2^-14 of the group's largest activation times the weights' magnitude, far below int8's own
// rounding of the weights, about max |W| / 254 per weight).
//
// Each output out[r, o] is then computed by exactly these operations, in this order, whatever tile
// or thread computes it (so splitting the outputs over threads changes no bit):
//   acc = f32x4(0); per group g, with start = 32g, end = min(inDim, start + 32), end8 = start +
//   ((end − start) & ~7):
//     G = i32x4(0); for each 8-block i = start, start + 8, … < end8: lane l of G += q[i+2l] · xq[i+2l]
//     + q[i+2l+1] · xq[i+2l+1] (exact integers: |G| ≤ 8 · 127 · 32768 < 2^31);
//     lane 0 of G += Σ q[i] · xq[i] over i = end8 .. end − 1 (exact);
//     c = f32(s_g) · f32(sx_g) (f32 product); acc = acc + f32(G) · c (f32x4, rounded per lane);
//   out = (acc0 + acc2) + (acc1 + acc3), then + bias[o].
// src/reference/q8.ts matmul_q8 does the same in scalar JavaScript, so the two agree to the bit.

const Q8_GROUP: i32 = 32;
const Q8_GROUP_SHIFT: i32 = 5;

/**
 * Rows of x quantized at a time (so each weight row is read from memory once for P ≤ 8 at decode):
 * their int16 values and scales take 16 · (inDim + groups) bytes of scratch (q8.ts q8ScratchBytes).
 */
const Q8_X_ROWS: i32 = 8;

/** A dequantized weight: q[i] · s[i / G] (exact in f32), for dequantizeRowQ8's tail. */
// @ts-ignore: decorator
@inline function q8Weight(wRow: usize, scaleRow: usize, i: i32): f32 {
  const s = reinterpret<f32>(<u32>load<u16>(scaleRow + (<usize>(i >> Q8_GROUP_SHIFT) << 1)) << 16);
  return <f32>load<i8>(wRow + <usize>i) * s;
}

/** The scale of group g, in all four lanes (bf16 << 16 is the exact f32). */
// @ts-ignore: decorator
@inline function q8Scale(scaleRow: usize, g: i32): v128 {
  return i32x4.shl(v128.load16_splat(scaleRow + (<usize>g << 1)), 16);
}

/**
 * Quantize one row of x (inDim f32) to int16 values at xq (inDim) and one bf16-bit power-of-two
 * scale per group at xs (see the format above).
 */
// @ts-ignore: decorator
@inline function quantizeRowX(xq: usize, xs: usize, xRow: usize, inDim: i32): void {
  const groups = (inDim + Q8_GROUP - 1) >> Q8_GROUP_SHIFT;
  for (let g = 0; g < groups; g++) {
    const start = g << Q8_GROUP_SHIFT;
    const end = min(inDim, start + Q8_GROUP);
    const end4 = start + ((end - start) & ~3);
    // m = max |x| over the group, on the bits: with the sign cleared, the bit patterns of floats
    // order as their values, and NaN (exponent all ones, mantissa ≠ 0) above +Infinity, so NaN wins.
    // One integer max per vector instead of f32x4.max's NaN-and-signed-zero sequence.
    const absMask = i32x4.splat(0x7fffffff);
    let mv = i32x4.splat(0);
    for (let i = start; i < end4; i += 4) mv = i32x4.max_s(mv, v128.and(v128.load(xRow + (<usize>i << 2)), absMask));
    mv = i32x4.max_s(mv, v128.shuffle<i32>(mv, mv, 2, 3, 0, 1));
    mv = i32x4.max_s(mv, v128.shuffle<i32>(mv, mv, 1, 0, 3, 2));
    let mBits = i32x4.extract_lane(mv, 0);
    for (let i = end4; i < end; i++) mBits = max(mBits, load<i32>(xRow + (<usize>i << 2)) & 0x7fffffff);
    const e = <u32>mBits >>> 23;
    const m = reinterpret<f32>(mBits);
    if (e == 0xff || m == 0) {
      store<u16>(xs + (<usize>g << 1), e == 0xff ? 0x7fc0 : 0);
      for (let i = start; i < end; i++) store<i16>(xq + (<usize>i << 1), 0);
      continue;
    }
    const se = max<u32>(e, 15) - 14; // exponent field of sx: 1 .. 240
    store<u16>(xs + (<usize>g << 1), <u16>(se << 7));
    const inverse = reinterpret<f32>((254 - se) << 23); // 1 / sx, exact
    const inv = f32x4.splat(inverse);
    // Rounding to an integer by adding 1.5 · 2^23: for |v| < 2^22 the sum's last mantissa bit is
    // worth 1, so the addition itself rounds v to nearest even, and the sum's bits minus those of
    // 1.5 · 2^23 are that integer (|v| ≤ 32768 here). Two instructions instead of nearest and
    // trunc_sat (a long sequence on x86 without AVX-512).
    const magic = f32x4.splat(12582912.0);
    const magicBits = i32x4.splat(0x4b400000);
    const end8 = start + ((end - start) & ~7);
    for (let i = start; i < end8; i += 8) {
      const p = xRow + (<usize>i << 2);
      const lo = i32x4.sub(f32x4.add(f32x4.mul(v128.load(p), inv), magic), magicBits);
      const hi = i32x4.sub(f32x4.add(f32x4.mul(v128.load(p, 16), inv), magic), magicBits);
      v128.store(xq + (<usize>i << 1), i16x8.narrow_i32x4_s(lo, hi)); // saturates +32768 to 32767
    }
    for (let i = end8; i < end; i++) {
      const v = <i32>nearest<f32>(load<f32>(xRow + (<usize>i << 2)) * inverse);
      store<i16>(xq + (<usize>i << 1), <i16>min(v, 32767));
    }
  }
}

/** Σ q[i] · xq[i] over the group's scalar remainder i = end8 .. end − 1 (exact), for lane 0. */
// @ts-ignore: decorator
@inline function q8TailDot(wRow: usize, xq: usize, end8: i32, end: i32): i32 {
  let t = 0;
  for (let i = end8; i < end; i++) t += <i32>load<i8>(wRow + <usize>i) * <i32>load<i16>(xq + (<usize>i << 1));
  return t;
}

/** Add the group's integer sums G into acc: acc + f32(G) · (s · sx). */
// @ts-ignore: decorator
@inline function q8GroupAdd(acc: v128, G: v128, s: v128, sx: v128): v128 {
  return f32x4.add(acc, f32x4.mul(f32x4.convert_i32x4_s(G), f32x4.mul(s, sx)));
}

/** G with the group's scalar remainder added to lane 0 (an exact integer sum). */
// @ts-ignore: decorator
@inline function q8AddTail(G: v128, wRow: usize, xq: usize, end8: i32, end: i32): v128 {
  return i32x4.add(G, i32x4.replace_lane(i32x4.splat(0), 0, q8TailDot(wRow, xq, end8, end)));
}

/** Finish one output: lane sum, bias. */
// @ts-ignore: decorator
@inline function finishQ8(acc: v128, bias: usize, o: i32): f32 {
  let sum = hsum(acc);
  if (bias != 0) sum += load<f32>(bias + (<usize>o << 2));
  return sum;
}

/**
 * Two output rows (o0, o1) × two activation rows (quantized at xq0, xq1 with scales xs0, xs1):
 * each block of 8 weights is widened (to int16, by the load) once for both rows. Registers:
 * 4 output + 4 group accumulators, 2 activation blocks, 2 weight blocks.
 */
// @ts-ignore: decorator
@inline function tileQ8x2(out: usize, w: usize, scales: usize, bias: usize, xq0: usize, xs0: usize, xq1: usize, xs1: usize, inDim: i32, outDim: i32, o0: i32, o1: i32, r: i32): void {
  const groups = (inDim + Q8_GROUP - 1) >> Q8_GROUP_SHIFT;
  const sRowBytes = <usize>groups << 1;
  const w0 = w + <usize>o0 * <usize>inDim, s0 = scales + <usize>o0 * sRowBytes;
  const w1 = w + <usize>o1 * <usize>inDim, s1 = scales + <usize>o1 * sRowBytes;
  let a00 = f32x4.splat(0), a01 = f32x4.splat(0), a10 = f32x4.splat(0), a11 = f32x4.splat(0);
  for (let g = 0; g < groups; g++) {
    const start = g << Q8_GROUP_SHIFT;
    const end = min(inDim, start + Q8_GROUP);
    const end8 = start + ((end - start) & ~7);
    let g00 = i32x4.splat(0), g01 = i32x4.splat(0), g10 = i32x4.splat(0), g11 = i32x4.splat(0);
    for (let i = start; i < end8; i += 8) {
      const xOff = <usize>i << 1;
      const xv0 = v128.load(xq0 + xOff), xv1 = v128.load(xq1 + xOff);
      let q = v128.load8x8_s(w0 + <usize>i);
      g00 = i32x4.add(g00, i32x4.dot_i16x8_s(q, xv0));
      g01 = i32x4.add(g01, i32x4.dot_i16x8_s(q, xv1));
      q = v128.load8x8_s(w1 + <usize>i);
      g10 = i32x4.add(g10, i32x4.dot_i16x8_s(q, xv0));
      g11 = i32x4.add(g11, i32x4.dot_i16x8_s(q, xv1));
    }
    if (end8 < end) { // only in the last group, when inDim is not a multiple of 8
      g00 = q8AddTail(g00, w0, xq0, end8, end);
      g01 = q8AddTail(g01, w0, xq1, end8, end);
      g10 = q8AddTail(g10, w1, xq0, end8, end);
      g11 = q8AddTail(g11, w1, xq1, end8, end);
    }
    const sc0 = q8Scale(s0, g), sc1 = q8Scale(s1, g);
    const sx0 = q8Scale(xs0, g), sx1 = q8Scale(xs1, g);
    a00 = q8GroupAdd(a00, g00, sc0, sx0);
    a01 = q8GroupAdd(a01, g01, sc0, sx1);
    a10 = q8GroupAdd(a10, g10, sc1, sx0);
    a11 = q8GroupAdd(a11, g11, sc1, sx1);
  }
  const out0 = out + ((<usize>r * <usize>outDim) << 2);
  const out1 = out0 + (<usize>outDim << 2);
  store<f32>(out0 + (<usize>o0 << 2), finishQ8(a00, bias, o0));
  store<f32>(out1 + (<usize>o0 << 2), finishQ8(a01, bias, o0));
  store<f32>(out0 + (<usize>o1 << 2), finishQ8(a10, bias, o1));
  store<f32>(out1 + (<usize>o1 << 2), finishQ8(a11, bias, o1));
}

/** Four output rows × one activation row (P = 1 decode, or the last row of an odd count). */
// @ts-ignore: decorator
@inline function tileQ8x1(out: usize, w: usize, scales: usize, bias: usize, xq0: usize, xs0: usize, inDim: i32, outDim: i32, o0: i32, o1: i32, o2: i32, o3: i32, r: i32): void {
  const groups = (inDim + Q8_GROUP - 1) >> Q8_GROUP_SHIFT;
  const sRowBytes = <usize>groups << 1;
  const w0 = w + <usize>o0 * <usize>inDim, s0 = scales + <usize>o0 * sRowBytes;
  const w1 = w + <usize>o1 * <usize>inDim, s1 = scales + <usize>o1 * sRowBytes;
  const w2 = w + <usize>o2 * <usize>inDim, s2 = scales + <usize>o2 * sRowBytes;
  const w3 = w + <usize>o3 * <usize>inDim, s3 = scales + <usize>o3 * sRowBytes;
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
  for (let g = 0; g < groups; g++) {
    const start = g << Q8_GROUP_SHIFT;
    const end = min(inDim, start + Q8_GROUP);
    const end8 = start + ((end - start) & ~7);
    let g0 = i32x4.splat(0), g1 = i32x4.splat(0), g2 = i32x4.splat(0), g3 = i32x4.splat(0);
    for (let i = start; i < end8; i += 8) {
      const xv = v128.load(xq0 + (<usize>i << 1));
      g0 = i32x4.add(g0, i32x4.dot_i16x8_s(v128.load8x8_s(w0 + <usize>i), xv));
      g1 = i32x4.add(g1, i32x4.dot_i16x8_s(v128.load8x8_s(w1 + <usize>i), xv));
      g2 = i32x4.add(g2, i32x4.dot_i16x8_s(v128.load8x8_s(w2 + <usize>i), xv));
      g3 = i32x4.add(g3, i32x4.dot_i16x8_s(v128.load8x8_s(w3 + <usize>i), xv));
    }
    if (end8 < end) {
      g0 = q8AddTail(g0, w0, xq0, end8, end);
      g1 = q8AddTail(g1, w1, xq0, end8, end);
      g2 = q8AddTail(g2, w2, xq0, end8, end);
      g3 = q8AddTail(g3, w3, xq0, end8, end);
    }
    const sx = q8Scale(xs0, g);
    a0 = q8GroupAdd(a0, g0, q8Scale(s0, g), sx);
    a1 = q8GroupAdd(a1, g1, q8Scale(s1, g), sx);
    a2 = q8GroupAdd(a2, g2, q8Scale(s2, g), sx);
    a3 = q8GroupAdd(a3, g3, q8Scale(s3, g), sx);
  }
  const out0 = out + ((<usize>r * <usize>outDim) << 2);
  store<f32>(out0 + (<usize>o0 << 2), finishQ8(a0, bias, o0));
  store<f32>(out0 + (<usize>o1 << 2), finishQ8(a1, bias, o1));
  store<f32>(out0 + (<usize>o2 << 2), finishQ8(a2, bias, o2));
  store<f32>(out0 + (<usize>o3 << 2), finishQ8(a3, bias, o3));
}

/** Lanes 0..3 / 4..7 of eight int8 weights already loaded as i16x8 (v128.load8x8_s), as f32x4. */
// @ts-ignore: decorator
@inline function q8Low(q: v128): v128 {
  return f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(q));
}
// @ts-ignore: decorator
@inline function q8High(q: v128): v128 {
  return f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(q));
}

/** Row `row` of an int8 matrix as f32 weights q · s (exact) at out (inDim). */
// @ts-ignore: decorator
@inline function dequantizeRowQ8(out: usize, w: usize, scales: usize, inDim: i32, row: i32): void {
  const groups = (inDim + Q8_GROUP - 1) >> Q8_GROUP_SHIFT;
  const wRow = w + <usize>row * <usize>inDim;
  const sRow = scales + <usize>row * (<usize>groups << 1);
  const end8 = inDim & ~7;
  for (let i = 0; i < end8; i += 8) {
    const q = v128.load8x8_s(wRow + <usize>i);
    const s = q8Scale(sRow, i >> Q8_GROUP_SHIFT);
    v128.store(out + (<usize>i << 2), f32x4.mul(q8Low(q), s));
    v128.store(out + (<usize>i << 2), f32x4.mul(q8High(q), s), 16);
  }
  for (let i = end8; i < inDim; i++) store<f32>(out + (<usize>i << 2), q8Weight(wRow, sRow, i));
}

/**
 * matmul_f32 with W (outDim, inDim) as int8 values and per-group bf16 scales (format above), the
 * activations quantized to int16 per group (W8A16, see above):
 *   out[r, o] ≈ Σ_i (q[o, i] · s[o, i / 32]) · x[r, i] (+ bias[o]), for o in [oStart, oEnd).
 * scratch: 16 · (inDim + groups) bytes for this thread (required; q8.ts q8ScratchBytes): Q8_X_ROWS
 * rows of x at a time are quantized into it (int16 values, 2 · inDim bytes a row, from scratch;
 * bf16 scales, 2 · groups bytes a row, after the Q8_X_ROWS rows of values), then every weight row
 * of the range is read once for those rows. Each
 * thread quantizes the rows itself; the result depends only on x, so every thread gets the same.
 *
 * Which outputs a tile computes together. A tile's 4 outputs are not adjacent rows but one from
 * each quarter of the range: o + t, o + t + Q, o + t + 2Q, o + t + 3Q (Q = ⌈n / 4⌉ for the range's
 * n outputs, t = 0 .. Q − 1). With short rows (inDim 1536: 1.5 KB of int8) four adjacent rows are
 * one 6 KB stretch the memory restarts every few KB; four quarters are four long sequential streams
 * the hardware prefetcher follows. Past the end of the range a tile repeats the last output (same
 * inputs, same bits, same place). Each output's operations are those above, whatever tile, range
 * or thread computes it, so any split of [0, outDim) over threads gives the same bits.
 */
export function matmul_q8(out: usize, x: usize, w: usize, scales: usize, bias: usize, rows: i32, inDim: i32, outDim: i32, oStart: i32, oEnd: i32, scratch: usize): void {
  if (oEnd <= oStart) return;
  const groups = (inDim + Q8_GROUP - 1) >> Q8_GROUP_SHIFT;
  const xqRowBytes = <usize>inDim << 1;
  const xsBase = scratch + (<usize>Q8_X_ROWS * xqRowBytes);
  const xsRowBytes = <usize>groups << 1;
  const last = oEnd - 1;
  const quarter = (oEnd - oStart + 3) >> 2;
  for (let r0 = 0; r0 < rows; r0 += Q8_X_ROWS) {
    const r1 = min(rows, r0 + Q8_X_ROWS);
    for (let r = r0; r < r1; r++) {
      const j = <usize>(r - r0);
      quantizeRowX(scratch + j * xqRowBytes, xsBase + j * xsRowBytes, x + ((<usize>r * <usize>inDim) << 2), inDim);
    }
    for (let t = 0; t < quarter; t++) {
      const o0 = oStart + t;
      const o1 = min(o0 + quarter, last);
      const o2 = min(o0 + 2 * quarter, last);
      const o3 = min(o0 + 3 * quarter, last);
      let r = r0;
      for (; r + 2 <= r1; r += 2) {
        const j = <usize>(r - r0);
        const xq0 = scratch + j * xqRowBytes, xs0 = xsBase + j * xsRowBytes;
        const xq1 = xq0 + xqRowBytes, xs1 = xs0 + xsRowBytes;
        tileQ8x2(out, w, scales, bias, xq0, xs0, xq1, xs1, inDim, outDim, o0, o1, r);
        tileQ8x2(out, w, scales, bias, xq0, xs0, xq1, xs1, inDim, outDim, o2, o3, r);
      }
      if (r < r1) {
        const j = <usize>(r - r0);
        tileQ8x1(out, w, scales, bias, scratch + j * xqRowBytes, xsBase + j * xsRowBytes, inDim, outDim, o0, o1, o2, o3, r);
      }
    }
  }
}

/** One row of an int8 matrix dequantized to f32 (the embedding lookup of a quantized tied embedding). */
export function dequantize_row_q8(out: usize, w: usize, scales: usize, inDim: i32, row: i32): void {
  dequantizeRowQ8(out, w, scales, inDim, row);
}

/**
 * Quantize rows [rStart, rEnd) of source (rows, inDim), stored as `format` (0 f32, 1 bf16, 2 f16),
 * into values (rows, inDim) int8 and scales (rows, ceil(inDim / 32)) bf16 — exactly quantizeRowsQ8
 * in src/reference/q8.ts, operation for operation (so the two agree to the bit):
 *   s = max|w| / 127 (in f64) rounded up to a bf16;  q = nearest-even(w · fl32(1 / s))  (0 where s = 0).
 * Sixteen weights per step: widen to f32, multiply, round, convert, then narrow i32 → i16 → i8
 * (|q| ≤ 127, so the saturating narrows never saturate). A group holding NaN or ±Infinity gets a
 * non-finite scale (bf16 exponent all ones) and zero values: the caller checks the scales and
 * reports the row. Rows are independent, so any split over threads gives the same bytes.
 */
export function quantize_q8(values: usize, scales: usize, source: usize, format: i32, rows: i32, inDim: i32, rStart: i32, rEnd: i32): void {
  if (format == F32) quantizeAny(F32, values, scales, source, inDim, rStart, rEnd);
  else if (format == BF16) quantizeAny(BF16, values, scales, source, inDim, rStart, rEnd);
  else quantizeAny(F16, values, scales, source, inDim, rStart, rEnd);
}

// @ts-ignore: decorator
@inline function quantizeAny(format: i32, values: usize, scales: usize, source: usize, inDim: i32, rStart: i32, rEnd: i32): void {
  const groups = (inDim + Q8_GROUP - 1) >> Q8_GROUP_SHIFT;
  const shift = weightShift(format);
  for (let r = rStart; r < rEnd; r++) {
    const src = source + ((<usize>r * <usize>inDim) << shift);
    const dst = values + <usize>r * <usize>inDim;
    const sRow = scales + ((<usize>r * <usize>groups) << 1);
    for (let g = 0; g < groups; g++) {
      const start = g << Q8_GROUP_SHIFT;
      const end = min(inDim, start + Q8_GROUP);
      const end4 = start + ((end - start) & ~3);
      // max |w| over the group; NaN wins (f32x4.max and the scalar test both propagate it)
      let mv = f32x4.splat(0);
      for (let i = start; i < end4; i += 4) mv = f32x4.max(mv, f32x4.abs(load4(format, src + (<usize>i << shift))));
      let m = max(max(f32x4.extract_lane(mv, 0), f32x4.extract_lane(mv, 1)), max(f32x4.extract_lane(mv, 2), f32x4.extract_lane(mv, 3)));
      for (let i = end4; i < end; i++) m = max(m, Mathf.abs(load1(format, src + (<usize>i << shift))));
      // the smallest bf16 ≥ m / 127 (as bf16AtLeast: via the float32 at or above the f64 quotient)
      const v = <f64>m / 127.0;
      let bits = reinterpret<u32>(<f32>v);
      if (<f64>(<f32>v) < v) bits += 1;
      let high = bits >>> 16;
      if ((bits & 0xffff) != 0) high += 1;
      if (m > 0 && high < 0x0080) high = 0x0080; // no subnormal scale (1/s would overflow): see q8.ts
      store<u16>(sRow + (<usize>g << 1), <u16>high);
      const scale = reinterpret<f32>(high << 16);
      if (!isFinite(scale) || scale == 0) {
        for (let i = start; i < end; i++) store<i8>(dst + <usize>i, 0);
        continue;
      }
      const inverse: f32 = 1 / scale;
      const inv = f32x4.splat(inverse);
      let i = start;
      for (; i + 16 <= end; i += 16) {
        const p = src + (<usize>i << shift);
        const q0 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(load4(format, p), inv)));
        const q1 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(load4(format, p + (<usize>4 << shift)), inv)));
        const q2 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(load4(format, p + (<usize>8 << shift)), inv)));
        const q3 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(load4(format, p + (<usize>12 << shift)), inv)));
        v128.store(dst + <usize>i, i8x16.narrow_i16x8_s(i16x8.narrow_i32x4_s(q0, q1), i16x8.narrow_i32x4_s(q2, q3)));
      }
      for (; i < end; i++) store<i8>(dst + <usize>i, <i8>(<i32>nearest<f32>(load1(format, src + (<usize>i << shift)) * inverse)));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The small kernels

/** out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight.  x, out (rows, dim); weight (dim); out may alias x. */
export function rmsnorm(out: usize, x: usize, weight: usize, eps: f64, rows: i32, dim: i32): void {
  const vecEnd = dim & ~3;
  for (let r = 0; r < rows; r++) {
    const xr = x + ((<usize>r * <usize>dim) << 2);
    const outr = out + ((<usize>r * <usize>dim) << 2);
    // Σ x² in f64 like the oracle: each f32x4 is widened into two f64x2 (the square of an f32 is
    // exact in f64), in two accumulators.
    let low = f64x2.splat(0);
    let high = f64x2.splat(0);
    for (let i = 0; i < vecEnd; i += 4) {
      const v = v128.load(xr + (<usize>i << 2));
      const v01 = f64x2.promote_low_f32x4(v);
      const v23 = f64x2.promote_low_f32x4(v128.shuffle<f32>(v, v, 2, 3, 0, 1));
      low = f64x2.add(low, f64x2.mul(v01, v01));
      high = f64x2.add(high, f64x2.mul(v23, v23));
    }
    let sumSquares = (f64x2.extract_lane(low, 0) + f64x2.extract_lane(low, 1)) + (f64x2.extract_lane(high, 0) + f64x2.extract_lane(high, 1));
    for (let i = vecEnd; i < dim; i++) {
      const v = <f64>load<f32>(xr + (<usize>i << 2));
      sumSquares += v * v;
    }
    // Hugging Face: x * rsqrt(variance + eps) in float32, then times the weight (the oracle's
    // rounding, step by step; f32 · f32 rounded to f32 is what the oracle's fround gives).
    const scale = <f32>(1 / Math.sqrt(<f64>(<f32>(sumSquares / <f64>dim)) + eps));
    const scales = f32x4.splat(scale);
    for (let i = 0; i < vecEnd; i += 4) {
      const off = <usize>i << 2;
      v128.store(outr + off, f32x4.mul(f32x4.mul(v128.load(xr + off), scales), v128.load(weight + off)));
    }
    for (let i = vecEnd; i < dim; i++) {
      const off = <usize>i << 2;
      store<f32>(outr + off, (load<f32>(xr + off) * scale) * load<f32>(weight + off));
    }
  }
}

/**
 * Rotary position embedding, "rotate_half" convention (Hugging Face Qwen2), in place.
 * vec (numHeads, headDim) at element `offset`; freqs (headDim / 2) f32 from ropeFrequencies.
 *   out[j]       = u[j]       · cos(t·f_j) − u[j + d/2] · sin(t·f_j)
 *   out[j + d/2] = u[j + d/2] · cos(t·f_j) + u[j]       · sin(t·f_j)
 * Element j pairs with j + d/2, not j + 1. Computed in f64 with the oracle's roundings (it costs
 * d/2 cos/sin per call, nothing next to a matmul), so the result matches it to the bit except
 * where the two libm's cos differ in the last f64 place.
 */
export function rope(vec: usize, offset: i32, numHeads: i32, headDim: i32, position: i32, freqs: usize): void {
  const half = headDim >> 1;
  for (let j = 0; j < half; j++) {
    const angle = <f32>(<f64>position * <f64>load<f32>(freqs + (<usize>j << 2)));
    const cos = <f64>(<f32>Math.cos(<f64>angle));
    const sin = <f64>(<f32>Math.sin(<f64>angle));
    for (let h = 0; h < numHeads; h++) {
      const base = vec + (<usize>(offset + h * headDim) << 2);
      const pa = base + (<usize>j << 2);
      const pb = base + (<usize>(j + half) << 2);
      const a = <f64>load<f32>(pa);
      const b = <f64>load<f32>(pb);
      store<f32>(pa, <f32>(a * cos - b * sin));
      store<f32>(pb, <f32>(b * cos + a * sin));
    }
  }
}

/** Numerically safe softmax over x[offset .. offset + n), in place (f64 exp and sum, like the oracle). */
export function softmax(x: usize, offset: i32, n: i32): void {
  const p = x + (<usize>offset << 2);
  let maximum: f32 = -Infinity;
  for (let i = 0; i < n; i++) {
    const v = load<f32>(p + (<usize>i << 2));
    if (v > maximum) maximum = v;
  }
  let sum: f64 = 0;
  for (let i = 0; i < n; i++) {
    const e = Math.exp(<f64>load<f32>(p + (<usize>i << 2)) - <f64>maximum);
    store<f32>(p + (<usize>i << 2), <f32>e);
    sum += e;
  }
  for (let i = 0; i < n; i++) store<f32>(p + (<usize>i << 2), <f32>(<f64>load<f32>(p + (<usize>i << 2)) / sum));
}

/** q · k over n f32 values: one f32x4 accumulator, lane sum, scalar tail (the order dot4 uses too). */
// @ts-ignore: decorator
@inline function dot(q: usize, k: usize, n: i32): f32 {
  const vecEnd = n & ~3;
  let acc = f32x4.splat(0);
  for (let i = 0; i < vecEnd; i += 4) acc = f32x4.add(acc, f32x4.mul(v128.load(q + (<usize>i << 2)), v128.load(k + (<usize>i << 2))));
  let sum = hsum(acc);
  for (let i = vecEnd; i < n; i++) sum += load<f32>(q + (<usize>i << 2)) * load<f32>(k + (<usize>i << 2));
  return sum;
}

/**
 * Grouped-query attention of ONE query position of one stream over its cache.
 *   out   (numHeads · headDim)                    written
 *   q     (numHeads · headDim) at element qOffset  already rotated
 *   keys, values (numKvHeads, capacity, headDim)   entries 0..length-1 valid (prefix first, causal)
 *   scores (length)                                scratch
 * Query head h reads KV head floor(h / (numHeads / numKvHeads)). Scores are q·k in f32 lanes,
 * scaled in f64 and rounded like the oracle; the softmax is the safe one above; the weighted sum of
 * values runs over the cache in order with four f32x4 accumulators per 16 output elements.
 */
export function attention(out: usize, q: usize, qOffset: i32, keys: usize, values: usize, length: i32, capacity: i32, numHeads: i32, numKvHeads: i32, headDim: i32, scores: usize): void {
  const group = numHeads / numKvHeads;
  const scale = 1 / Math.sqrt(<f64>headDim);
  const rowBytes = <usize>headDim << 2;
  const vecEnd = headDim & ~3;
  for (let h = 0; h < numHeads; h++) {
    const kvBase = <usize>(h / group) * <usize>capacity * rowBytes;
    const qh = q + (<usize>(qOffset + h * headDim) << 2);
    const k = keys + kvBase;
    // scores: four keys at a time share each load of q
    let s = 0;
    for (; s + 4 <= length; s += 4) {
      const k0 = k + <usize>s * rowBytes;
      const k1 = k0 + rowBytes;
      const k2 = k1 + rowBytes;
      const k3 = k2 + rowBytes;
      let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
      for (let i = 0; i < vecEnd; i += 4) {
        const off = <usize>i << 2;
        const qv = v128.load(qh + off);
        a0 = f32x4.add(a0, f32x4.mul(qv, v128.load(k0 + off)));
        a1 = f32x4.add(a1, f32x4.mul(qv, v128.load(k1 + off)));
        a2 = f32x4.add(a2, f32x4.mul(qv, v128.load(k2 + off)));
        a3 = f32x4.add(a3, f32x4.mul(qv, v128.load(k3 + off)));
      }
      let d0 = hsum(a0), d1 = hsum(a1), d2 = hsum(a2), d3 = hsum(a3);
      for (let i = vecEnd; i < headDim; i++) {
        const off = <usize>i << 2;
        const qi = load<f32>(qh + off);
        d0 += qi * load<f32>(k0 + off);
        d1 += qi * load<f32>(k1 + off);
        d2 += qi * load<f32>(k2 + off);
        d3 += qi * load<f32>(k3 + off);
      }
      const sp = scores + (<usize>s << 2);
      store<f32>(sp, <f32>(<f64>d0 * scale));
      store<f32>(sp, <f32>(<f64>d1 * scale), 4);
      store<f32>(sp, <f32>(<f64>d2 * scale), 8);
      store<f32>(sp, <f32>(<f64>d3 * scale), 12);
    }
    for (; s < length; s++) store<f32>(scores + (<usize>s << 2), <f32>(<f64>dot(qh, k + <usize>s * rowBytes, headDim) * scale));
    softmax(scores, 0, length);

    // out_h = Σ_s p_s · v_s, 16 output elements at a time kept in registers over the whole cache
    const v = values + kvBase;
    const oh = out + (<usize>h * rowBytes);
    let i = 0;
    for (; i + 16 <= vecEnd; i += 16) {
      const off = <usize>i << 2;
      let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
      for (let t = 0; t < length; t++) {
        const p = v128.load32_splat(scores + (<usize>t << 2));
        const vt = v + <usize>t * rowBytes + off;
        a0 = f32x4.add(a0, f32x4.mul(p, v128.load(vt)));
        a1 = f32x4.add(a1, f32x4.mul(p, v128.load(vt, 16)));
        a2 = f32x4.add(a2, f32x4.mul(p, v128.load(vt, 32)));
        a3 = f32x4.add(a3, f32x4.mul(p, v128.load(vt, 48)));
      }
      v128.store(oh + off, a0);
      v128.store(oh + off, a1, 16);
      v128.store(oh + off, a2, 32);
      v128.store(oh + off, a3, 48);
    }
    for (; i < vecEnd; i += 4) {
      const off = <usize>i << 2;
      let a = f32x4.splat(0);
      for (let t = 0; t < length; t++) a = f32x4.add(a, f32x4.mul(v128.load32_splat(scores + (<usize>t << 2)), v128.load(v + <usize>t * rowBytes + off)));
      v128.store(oh + off, a);
    }
    for (; i < headDim; i++) {
      const off = <usize>i << 2;
      let a: f32 = 0;
      for (let t = 0; t < length; t++) a += load<f32>(scores + (<usize>t << 2)) * load<f32>(v + <usize>t * rowBytes + off);
      store<f32>(oh + off, a);
    }
  }
}

/** out[i] = silu(gate[i]) · up[i] for i < n, silu(z) = z / (1 + e^-z), in f64 like the oracle.  out may alias gate. */
export function swiglu(out: usize, gate: usize, up: usize, n: i32): void {
  for (let i = 0; i < n; i++) {
    const off = <usize>i << 2;
    const g = <f64>load<f32>(gate + off);
    store<f32>(out + off, <f32>((g / (1 + Math.exp(-g))) * <f64>load<f32>(up + off)));
  }
}

// @ts-ignore: decorator
@inline function aggregateAny(format: i32, out: usize, weightsOut: usize, hidden: usize, w0: usize, b0: usize, w2: usize, b2: usize, smoothing: f64, P: i32, H: i32, scratch: usize): void {
  const c = scratch;
  const z = scratch + (<usize>(P * H) << 2);
  // The aggregation MLP reads the streams INTERLEAVED (feature-major, stream-minor):
  // c[j·P + p] = h[p][j], the reference code's `(h n_parscale)` layout.
  for (let j = 0; j < H; j++) {
    for (let p = 0; p < P; p++) store<f32>(c + (<usize>(j * P + p) << 2), load<f32>(hidden + (<usize>(p * H + j) << 2)));
  }
  matmulAny(format, z, c, w0, b0, 1, P * H, H, 0, H);
  for (let j = 0; j < H; j++) {
    const zj = <f64>load<f32>(z + (<usize>j << 2));
    store<f32>(z + (<usize>j << 2), <f32>(zj / (1 + Math.exp(-zj))));
  }
  matmulAny(format, weightsOut, z, w2, b2, 1, H, P, 0, P);
  softmax(weightsOut, 0, P);
  // Smoothing keeps every stream's weight at least s / P.
  for (let p = 0; p < P; p++) {
    const wp = weightsOut + (<usize>p << 2);
    store<f32>(wp, <f32>(<f64>load<f32>(wp) * (1 - smoothing) + smoothing / <f64>P));
  }
  // y = Σ_p w_p · h[p], four features at a time, streams summed in order
  const vecEnd = H & ~3;
  for (let j = 0; j < vecEnd; j += 4) {
    let acc = f32x4.splat(0);
    for (let p = 0; p < P; p++) {
      acc = f32x4.add(acc, f32x4.mul(v128.load32_splat(weightsOut + (<usize>p << 2)), v128.load(hidden + (<usize>(p * H + j) << 2))));
    }
    v128.store(out + (<usize>j << 2), acc);
  }
  for (let j = vecEnd; j < H; j++) {
    let acc: f32 = 0;
    for (let p = 0; p < P; p++) acc += load<f32>(weightsOut + (<usize>p << 2)) * load<f32>(hidden + (<usize>(p * H + j) << 2));
    store<f32>(out + (<usize>j << 2), acc);
  }
}

/**
 * ParScale output aggregation for one position (SPEC.md step 4).
 *   out (H)                 y = Σ_p w_p · h[p]
 *   weightsOut (P)          the smoothed aggregation weights w
 *   hidden (P, H)           the streams' final hidden states (after the final norm)
 *   w0 (H, P·H), b0 (H), w2 (P, H), b2 (P)   model.aggregate_layer.{0,2}; w0 and w2 f32 here
 *   scratch (P·H + H)
 * z = W2 · silu(W0 · c + b0) + b2 with c interleaved (see aggregateAny); w = softmax(z) smoothed.
 */
export function aggregate_f32(out: usize, weightsOut: usize, hidden: usize, w0: usize, b0: usize, w2: usize, b2: usize, smoothing: f64, P: i32, H: i32, scratch: usize): void {
  aggregateAny(F32, out, weightsOut, hidden, w0, b0, w2, b2, smoothing, P, H, scratch);
}

/** aggregate_f32 with w0 and w2 stored as bf16 (biases f32). */
export function aggregate_bf16(out: usize, weightsOut: usize, hidden: usize, w0: usize, b0: usize, w2: usize, b2: usize, smoothing: f64, P: i32, H: i32, scratch: usize): void {
  aggregateAny(BF16, out, weightsOut, hidden, w0, b0, w2, b2, smoothing, P, H, scratch);
}

/** aggregate_f32 with w0 and w2 stored as f16 (biases f32). */
export function aggregate_f16(out: usize, weightsOut: usize, hidden: usize, w0: usize, b0: usize, w2: usize, b2: usize, smoothing: f64, P: i32, H: i32, scratch: usize): void {
  aggregateAny(F16, out, weightsOut, hidden, w0, b0, w2, b2, smoothing, P, H, scratch);
}

// ---------------------------------------------------------------------------------------------
// Roofline references for the benchmarks

/** Reads [ptr, ptr + bytes) with v128 loads (64 bytes per step, four independent sums); bytes is rounded down to 64. */
export function read_bandwidth(ptr: usize, bytes: usize): i32 {
  let a0 = i32x4.splat(0), a1 = i32x4.splat(0), a2 = i32x4.splat(0), a3 = i32x4.splat(0);
  const end = ptr + (bytes & ~(<usize>63));
  for (let p = ptr; p < end; p += 64) {
    a0 = i32x4.add(a0, v128.load(p));
    a1 = i32x4.add(a1, v128.load(p, 16));
    a2 = i32x4.add(a2, v128.load(p, 32));
    a3 = i32x4.add(a3, v128.load(p, 48));
  }
  const sum = i32x4.add(i32x4.add(a0, a1), i32x4.add(a2, a3));
  return i32x4.extract_lane(sum, 0) + i32x4.extract_lane(sum, 1) + i32x4.extract_lane(sum, 2) + i32x4.extract_lane(sum, 3);
}

/**
 * The mul + add peak: `iterations` steps of acc = acc · 0.5 + 1 on twelve independent f32x4
 * accumulators (96 flops per step; the chains converge to 2, so no overflow or subnormal).
 * Twelve chains hide the mul-then-add latency; the result is returned so nothing is optimised away.
 */
export function madd_peak(iterations: i32): f32 {
  const m = f32x4.splat(0.5);
  const c = f32x4.splat(1);
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0.1), a2 = f32x4.splat(0.2), a3 = f32x4.splat(0.3);
  let a4 = f32x4.splat(0.4), a5 = f32x4.splat(0.5), a6 = f32x4.splat(0.6), a7 = f32x4.splat(0.7);
  let a8 = f32x4.splat(0.8), a9 = f32x4.splat(0.9), a10 = f32x4.splat(1.1), a11 = f32x4.splat(1.2);
  for (let i = 0; i < iterations; i++) {
    a0 = f32x4.add(f32x4.mul(a0, m), c);
    a1 = f32x4.add(f32x4.mul(a1, m), c);
    a2 = f32x4.add(f32x4.mul(a2, m), c);
    a3 = f32x4.add(f32x4.mul(a3, m), c);
    a4 = f32x4.add(f32x4.mul(a4, m), c);
    a5 = f32x4.add(f32x4.mul(a5, m), c);
    a6 = f32x4.add(f32x4.mul(a6, m), c);
    a7 = f32x4.add(f32x4.mul(a7, m), c);
    a8 = f32x4.add(f32x4.mul(a8, m), c);
    a9 = f32x4.add(f32x4.mul(a9, m), c);
    a10 = f32x4.add(f32x4.mul(a10, m), c);
    a11 = f32x4.add(f32x4.mul(a11, m), c);
  }
  const sum = f32x4.add(
    f32x4.add(f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3)), f32x4.add(f32x4.add(a4, a5), f32x4.add(a6, a7))),
    f32x4.add(f32x4.add(a8, a9), f32x4.add(a10, a11)),
  );
  return hsum(sum);
}

/**
 * madd_peak with the products' own multiply-add (madd above): in the relaxed-SIMD build a fused
 * multiply-add per step, in the plain build the same as madd_peak. The benchmarks state the
 * relaxed build's efficiency against this peak too.
 */
export function fma_peak(iterations: i32): f32 {
  const m = f32x4.splat(0.5);
  const c = f32x4.splat(1);
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0.1), a2 = f32x4.splat(0.2), a3 = f32x4.splat(0.3);
  let a4 = f32x4.splat(0.4), a5 = f32x4.splat(0.5), a6 = f32x4.splat(0.6), a7 = f32x4.splat(0.7);
  let a8 = f32x4.splat(0.8), a9 = f32x4.splat(0.9), a10 = f32x4.splat(1.1), a11 = f32x4.splat(1.2);
  for (let i = 0; i < iterations; i++) {
    a0 = madd(c, a0, m);
    a1 = madd(c, a1, m);
    a2 = madd(c, a2, m);
    a3 = madd(c, a3, m);
    a4 = madd(c, a4, m);
    a5 = madd(c, a5, m);
    a6 = madd(c, a6, m);
    a7 = madd(c, a7, m);
    a8 = madd(c, a8, m);
    a9 = madd(c, a9, m);
    a10 = madd(c, a10, m);
    a11 = madd(c, a11, m);
  }
  const sum = f32x4.add(
    f32x4.add(f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3)), f32x4.add(f32x4.add(a4, a5), f32x4.add(a6, a7))),
    f32x4.add(f32x4.add(a8, a9), f32x4.add(a10, a11)),
  );
  return hsum(sum);
}

/** The first byte after this module's static data (math tables): the bridge allocates from here. */
export function heap_base(): usize {
  return __heap_base;
}
