// The reference kernels: plain TypeScript over Float32Array, written to read like SPEC.md.
// Each one has a twin with the same name in assembly/ (the fast path); the property tests in
// test/ tie the two together. Conventions, as in llama2.c: the output comes first, shapes are
// in the contract comment, all matrices are row-major, and a linear weight is [out, in]
// (y = W x + b), exactly as stored in Hugging Face checkpoints.
//
// Sums are accumulated in float64 (JavaScript numbers) and stored as float32: the oracle should
// be at least as accurate as the float32 math it is compared against.

/** out[r, o] = Σ_i w[o, i] · x[r, i] (+ bias[o]).  W (outDim, inDim) @ x (rows, inDim) -> out (rows, outDim) */
export function matmul(
  out: Float32Array,
  x: Float32Array,
  w: Float32Array,
  bias: Float32Array | null,
  rows: number,
  inDim: number,
  outDim: number,
): void {
  for (let r = 0; r < rows; r++) {
    const xOff = r * inDim;
    for (let o = 0; o < outDim; o++) {
      const wOff = o * inDim;
      let sum = bias === null ? 0 : bias[o];
      for (let i = 0; i < inDim; i++) sum += w[wOff + i] * x[xOff + i];
      out[r * outDim + o] = sum;
    }
  }
}

/** out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight.  x, out (rows, dim); out may alias x. */
export function rmsnorm(
  out: Float32Array,
  x: Float32Array,
  weight: Float32Array,
  eps: number,
  rows: number,
  dim: number,
): void {
  for (let r = 0; r < rows; r++) {
    const off = r * dim;
    let sumSquares = 0;
    for (let i = 0; i < dim; i++) sumSquares += x[off + i] * x[off + i];
    // Hugging Face computes x * rsqrt(variance + eps) in float32, then multiplies by the weight.
    const scale = Math.fround(1 / Math.sqrt(Math.fround(sumSquares / dim) + eps));
    for (let i = 0; i < dim; i++) out[off + i] = Math.fround(x[off + i] * scale) * weight[i];
  }
}

/**
 * The RoPE frequencies f_j = theta^(-2j/d) for j < d/2, in float32 as Hugging Face computes
 * them (inv_freq = 1 / theta^(arange(0, d, 2) / d)).
 */
export function ropeFrequencies(headDim: number, theta: number): Float32Array {
  const half = headDim / 2;
  const freqs = new Float32Array(half);
  for (let j = 0; j < half; j++) freqs[j] = 1 / Math.pow(theta, Math.fround((2 * j) / headDim));
  return freqs;
}

/**
 * Rotary position embedding, "rotate_half" convention (Hugging Face Qwen2), in place.
 * vec (numHeads, headDim); element j pairs with element j + d/2 of the same head, NOT with j + 1
 * (that is llama2.c's convention, and silently wrong for Hugging Face checkpoints).
 *   out[j]       = u[j]       · cos(t·f_j) − u[j + d/2] · sin(t·f_j)
 *   out[j + d/2] = u[j + d/2] · cos(t·f_j) + u[j]       · sin(t·f_j)
 */
export function rope(
  vec: Float32Array,
  offset: number,
  numHeads: number,
  headDim: number,
  position: number,
  freqs: Float32Array,
): void {
  const half = headDim / 2;
  for (let j = 0; j < half; j++) {
    // float32 angle, like the reference (freqs = inv_freq @ position_ids in float32)
    const angle = Math.fround(position * freqs[j]);
    const cos = Math.fround(Math.cos(angle));
    const sin = Math.fround(Math.sin(angle));
    for (let h = 0; h < numHeads; h++) {
      const base = offset + h * headDim;
      const a = vec[base + j];
      const b = vec[base + j + half];
      vec[base + j] = a * cos - b * sin;
      vec[base + j + half] = b * cos + a * sin;
    }
  }
}

/** Numerically safe softmax over x[offset .. offset + n), in place. */
export function softmax(x: Float32Array, offset: number, n: number): void {
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (x[offset + i] > max) max = x[offset + i];
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const e = Math.exp(x[offset + i] - max);
    x[offset + i] = e;
    sum += e;
  }
  for (let i = 0; i < n; i++) x[offset + i] /= sum;
}

/**
 * Grouped-query attention of ONE query position of one stream over its cache.
 *   out   (numHeads · headDim)          written
 *   q     (numHeads · headDim)          at qOffset, already rotated
 *   keys, values (numKvHeads, capacity, headDim)   the stream's cache of one layer: entries
 *         0..length-1 are valid (the T prefix entries first, then real tokens, causal)
 *   scores (length)                      scratch
 * Query head h reads KV head floor(h / (numHeads / numKvHeads)).
 */
export function attention(
  out: Float32Array,
  q: Float32Array,
  qOffset: number,
  keys: Float32Array,
  values: Float32Array,
  length: number,
  capacity: number,
  numHeads: number,
  numKvHeads: number,
  headDim: number,
  scores: Float32Array,
): void {
  const group = numHeads / numKvHeads;
  const scale = 1 / Math.sqrt(headDim);
  for (let h = 0; h < numHeads; h++) {
    const kvBase = Math.floor(h / group) * capacity * headDim;
    const qBase = qOffset + h * headDim;
    for (let s = 0; s < length; s++) {
      const kBase = kvBase + s * headDim;
      let dot = 0;
      for (let i = 0; i < headDim; i++) dot += q[qBase + i] * keys[kBase + i];
      scores[s] = dot * scale;
    }
    softmax(scores, 0, length);
    const oBase = h * headDim;
    for (let i = 0; i < headDim; i++) {
      let sum = 0;
      for (let s = 0; s < length; s++) sum += scores[s] * values[kvBase + s * headDim + i];
      out[oBase + i] = sum;
    }
  }
}

/** silu(z) = z / (1 + e^-z) */
export function silu(z: number): number {
  return z / (1 + Math.exp(-z));
}

/** out[i] = silu(gate[i]) · up[i], for i < n.  out may alias gate. */
export function swiglu(out: Float32Array, gate: Float32Array, up: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) out[i] = silu(gate[i]) * up[i];
}

/**
 * ParScale output aggregation for one position (SPEC.md step 4).
 *   out     (H)            y = Σ_p w_p · h[p]
 *   weightsOut (P)         the smoothed aggregation weights w (also returned for --hidden dumps)
 *   hidden  (P, H)         the P streams' final hidden states (after the final norm)
 *   w0 (H, P·H), b0 (H), w2 (P, H), b2 (P)   model.aggregate_layer.{0,2}
 *   scratch (P·H + H)
 * The aggregation MLP reads the streams INTERLEAVED: c[j·P + p] = h[p][j] (the reference code's
 * `(h n_parscale)` rearrange). Concatenating stream after stream would run with no error and give
 * wrong answers on every real checkpoint.
 */
export function aggregate(
  out: Float32Array,
  weightsOut: Float32Array,
  hidden: Float32Array,
  w0: Float32Array,
  b0: Float32Array,
  w2: Float32Array,
  b2: Float32Array,
  smoothing: number,
  P: number,
  H: number,
  scratch: Float32Array,
): void {
  const c = scratch.subarray(0, P * H);
  const z = scratch.subarray(P * H, P * H + H);
  for (let j = 0; j < H; j++) for (let p = 0; p < P; p++) c[j * P + p] = hidden[p * H + j];
  matmul(z, c, w0, b0, 1, P * H, H);
  for (let j = 0; j < H; j++) z[j] = silu(z[j]);
  matmul(weightsOut, z, w2, b2, 1, H, P);
  softmax(weightsOut, 0, P);
  // Smoothing keeps every stream's weight at least s / P (reference: skipped when s == 0,
  // which is the same formula).
  for (let p = 0; p < P; p++) weightsOut[p] = weightsOut[p] * (1 - smoothing) + smoothing / P;
  for (let j = 0; j < H; j++) {
    let sum = 0;
    for (let p = 0; p < P; p++) sum += weightsOut[p] * hidden[p * H + j];
    out[j] = sum;
  }
}
