// Kernels for training: the forward kernels of src/reference/kernels.ts rewritten to be a few
// times faster in plain JavaScript, and their backward passes. They are generic over Float32Array
// (training) and Float64Array (gradient checks in float64), and tested against the reference
// kernels in test/training-kernels.test.ts.
//
// Conventions as in the reference: output first, shapes in the contract comment, row-major,
// linear weights [out, in] (y = W x + b). Backward kernels ADD into their gradient outputs
// (gradients of a tensor used twice, like a tied embedding, simply accumulate).

export type Floats = Float32Array | Float64Array;

/**
 * out[r, o] (+)= Σ_i w[o, i] · x[r, i] (+ bias[o]).  W (outDim, inDim) @ x (rows, inDim) -> out (rows, outDim)
 * The one hot loop of training. Like llm.c's matmul_forward it computes a 4 × 2 block of outputs
 * per pass over i, so each loaded value is used 2 or 4 times (≈ 1.8× the reference triple loop
 * in V8). Sums are accumulated in float64, like the reference matmul. With `accumulate` the
 * result is added to out instead of stored.
 */
export function matmulRows(
  out: Floats,
  x: Floats,
  w: Floats,
  bias: Floats | null,
  rows: number,
  inDim: number,
  outDim: number,
  accumulate: boolean,
): void {
  const keep = accumulate ? 1 : 0;
  let r = 0;
  for (; r + 4 <= rows; r += 4) {
    const x0 = r * inDim;
    const x1 = x0 + inDim;
    const x2 = x1 + inDim;
    const x3 = x2 + inDim;
    const y0 = r * outDim;
    const y1 = y0 + outDim;
    const y2 = y1 + outDim;
    const y3 = y2 + outDim;
    let o = 0;
    for (; o + 2 <= outDim; o += 2) {
      const wa = o * inDim;
      const wb = wa + inDim;
      let s0 = 0;
      let s1 = 0;
      let s2 = 0;
      let s3 = 0;
      let t0 = 0;
      let t1 = 0;
      let t2 = 0;
      let t3 = 0;
      for (let i = 0; i < inDim; i++) {
        const a = w[wa + i];
        const b = w[wb + i];
        const v0 = x[x0 + i];
        const v1 = x[x1 + i];
        const v2 = x[x2 + i];
        const v3 = x[x3 + i];
        s0 += a * v0;
        s1 += a * v1;
        s2 += a * v2;
        s3 += a * v3;
        t0 += b * v0;
        t1 += b * v1;
        t2 += b * v2;
        t3 += b * v3;
      }
      const ba = bias === null ? 0 : bias[o];
      const bb = bias === null ? 0 : bias[o + 1];
      out[y0 + o] = keep * out[y0 + o] + s0 + ba;
      out[y1 + o] = keep * out[y1 + o] + s1 + ba;
      out[y2 + o] = keep * out[y2 + o] + s2 + ba;
      out[y3 + o] = keep * out[y3 + o] + s3 + ba;
      out[y0 + o + 1] = keep * out[y0 + o + 1] + t0 + bb;
      out[y1 + o + 1] = keep * out[y1 + o + 1] + t1 + bb;
      out[y2 + o + 1] = keep * out[y2 + o + 1] + t2 + bb;
      out[y3 + o + 1] = keep * out[y3 + o + 1] + t3 + bb;
    }
    for (; o < outDim; o++) {
      const wa = o * inDim;
      let s0 = 0;
      let s1 = 0;
      let s2 = 0;
      let s3 = 0;
      for (let i = 0; i < inDim; i++) {
        const a = w[wa + i];
        s0 += a * x[x0 + i];
        s1 += a * x[x1 + i];
        s2 += a * x[x2 + i];
        s3 += a * x[x3 + i];
      }
      const ba = bias === null ? 0 : bias[o];
      out[y0 + o] = keep * out[y0 + o] + s0 + ba;
      out[y1 + o] = keep * out[y1 + o] + s1 + ba;
      out[y2 + o] = keep * out[y2 + o] + s2 + ba;
      out[y3 + o] = keep * out[y3 + o] + s3 + ba;
    }
  }
  for (; r < rows; r++) {
    const xOff = r * inDim;
    for (let o = 0; o < outDim; o++) {
      const wOff = o * inDim;
      let sum = bias === null ? 0 : bias[o];
      for (let i = 0; i < inDim; i++) sum += w[wOff + i] * x[xOff + i];
      out[r * outDim + o] = keep * out[r * outDim + o] + sum;
    }
  }
}

/** out (cols, rows) = the transpose of m (rows, cols) */
export function transpose<A extends Floats>(out: A, m: Floats, rows: number, cols: number): A {
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = m[r * cols + c];
  return out;
}

function like<A extends Floats>(m: A, n: number): A {
  return new (m.constructor as new (n: number) => A)(n);
}

/** out[r, o] = Σ_i w[o, i] · x[r, i] (+ bias[o]).  W (outDim, inDim) @ x (rows, inDim) -> out (rows, outDim) */
export function linearForward(
  out: Floats,
  x: Floats,
  w: Floats,
  bias: Floats | null,
  rows: number,
  inDim: number,
  outDim: number,
): void {
  matmulRows(out, x, w, bias, rows, inDim, outDim, false);
}

/**
 * dx[r, i] += Σ_o dy[r, o] · w[o, i].  dy (rows, outDim), W (outDim, inDim) -> dx (rows, inDim)
 * Computed as dy @ Wᵀᵀ: one transpose of W (O(weights)) makes it the same dot-product kernel.
 */
export function linearBackwardInput(
  dx: Floats,
  dy: Floats,
  w: Floats,
  rows: number,
  inDim: number,
  outDim: number,
): void {
  const wT = transpose(like(w, inDim * outDim), w, outDim, inDim); // (inDim, outDim)
  matmulRows(dx, dy, wT, null, rows, outDim, inDim, true);
}

/**
 * dw[o, i] += Σ_r dy[r, o] · x[r, i];  db[o] += Σ_r dy[r, o].
 * dy (rows, outDim), x (rows, inDim) -> dw (outDim, inDim), db (outDim) (db may be null)
 * Computed as dyᵀ (outDim, rows) against xᵀ (inDim, rows): again the dot-product kernel.
 */
export function linearBackwardWeight(
  dw: Floats,
  db: Floats | null,
  dy: Floats,
  x: Floats,
  rows: number,
  inDim: number,
  outDim: number,
): void {
  const dyT = transpose(like(dy, rows * outDim), dy, rows, outDim); // (outDim, rows)
  const xT = transpose(like(x, rows * inDim), x, rows, inDim); //      (inDim, rows)
  matmulRows(dw, dyT, xT, null, outDim, rows, inDim, true);
  if (db !== null) {
    for (let o = 0; o < outDim; o++) {
      let sum = 0;
      for (let r = 0; r < rows; r++) sum += dyT[o * rows + r];
      db[o] += sum;
    }
  }
}

/**
 * out[r] = x[r] · rstd[r] · weight, rstd[r] = 1 / sqrt(mean(x[r]^2) + eps); keeps rstd for the
 * backward.  x, out (rows, dim); rstd (rows)
 */
export function rmsnormForward(
  out: Floats,
  rstd: Float64Array,
  x: Floats,
  weight: Floats,
  eps: number,
  rows: number,
  dim: number,
): void {
  for (let r = 0; r < rows; r++) {
    const off = r * dim;
    let sumSquares = 0;
    for (let i = 0; i < dim; i++) sumSquares += x[off + i] * x[off + i];
    const scale = 1 / Math.sqrt(sumSquares / dim + eps);
    rstd[r] = scale;
    for (let i = 0; i < dim; i++) out[off + i] = x[off + i] * scale * weight[i];
  }
}

/**
 * Backward of y = x · rstd · g with rstd = (mean(x²) + eps)^(-1/2):
 *   dx_i += rstd · g_i dy_i − x_i · rstd³ / dim · Σ_j g_j dy_j x_j
 *   dg_i += Σ_r dy_i x_i rstd            (dg may be null when the weight is frozen)
 */
export function rmsnormBackward(
  dx: Floats,
  dg: Floats | null,
  dy: Floats,
  x: Floats,
  rstd: Float64Array,
  weight: Floats,
  rows: number,
  dim: number,
): void {
  for (let r = 0; r < rows; r++) {
    const off = r * dim;
    const s = rstd[r];
    let dot = 0;
    for (let i = 0; i < dim; i++) dot += weight[i] * dy[off + i] * x[off + i];
    const c = (s * s * s * dot) / dim;
    for (let i = 0; i < dim; i++) {
      dx[off + i] += s * weight[i] * dy[off + i] - x[off + i] * c;
      if (dg !== null) dg[i] += dy[off + i] * x[off + i] * s;
    }
  }
}

/**
 * RoPE tables for positions 0..n−1: cos/sin (n, d/2), computed exactly as the reference rope
 * does (float32 angle t·f_j, float32 cos and sin) so the training forward matches it.
 */
export function ropeTables(freqs: Float32Array, n: number): { cos: Float64Array; sin: Float64Array } {
  const half = freqs.length;
  const cos = new Float64Array(n * half);
  const sin = new Float64Array(n * half);
  for (let t = 0; t < n; t++) {
    for (let j = 0; j < half; j++) {
      const angle = Math.fround(t * freqs[j]);
      cos[t * half + j] = Math.fround(Math.cos(angle));
      sin[t * half + j] = Math.fround(Math.sin(angle));
    }
  }
  return { cos, sin };
}

/**
 * Rotate numHeads heads of vec at offset by position t, "rotate_half" convention (element j pairs
 * with j + d/2). direction +1 is the forward rotation; −1 rotates back, which is the backward
 * pass (a rotation's Jacobian transposed is the opposite rotation).
 */
export function ropeRotate(
  vec: Floats,
  offset: number,
  numHeads: number,
  headDim: number,
  t: number,
  cos: Float64Array,
  sin: Float64Array,
  direction: 1 | -1,
): void {
  const half = headDim / 2;
  for (let j = 0; j < half; j++) {
    const c = cos[t * half + j];
    const s = direction * sin[t * half + j];
    for (let h = 0; h < numHeads; h++) {
      const base = offset + h * headDim;
      const a = vec[base + j];
      const b = vec[base + j + half];
      vec[base + j] = a * c - b * s;
      vec[base + j + half] = b * c + a * s;
    }
  }
}

/** silu(z) = z / (1 + e^-z) */
export function silu(z: number): number {
  return z / (1 + Math.exp(-z));
}

/** d silu / dz = σ(z) · (1 + z · (1 − σ(z))) */
export function siluGrad(z: number): number {
  const sigma = 1 / (1 + Math.exp(-z));
  return sigma * (1 + z * (1 - sigma));
}
