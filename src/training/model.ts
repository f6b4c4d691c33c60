// The training forward and backward pass of Qwen2-ParScale over a batch of sequences.
//
// The forward computes exactly the function of ReferenceModel.forward (src/reference/model.ts,
// SPEC.md) for a full causal prefill, but keeps every activation the backward needs;
// test/training-model.test.ts checks its logits against ReferenceModel. The backward then walks
// the same steps in reverse. Everything is generic over Float32Array (training) and Float64Array
// (the gradient checks of test/training-gradients.test.ts). The matrix products run on the
// TypeScript kernels or, with `kernels: 'wasm'`, on the WebAssembly ones (wasm-products.ts).
//
// Layouts. A batch is B sequences of n tokens. Rows of per-stream activations are (B, P, n):
// row (b·P + p)·n + t is stream p of sequence b at position t. Rows of per-position activations
// (after the aggregation) are (B, n): row b·n + t. Loss = mean over all B·n positions of the
// cross-entropy of the next token (targets given by the caller).
//
// ParScale appears in three places, all marked "ParScale": the prefix entries of attention, the
// copy of the embedding into P streams, the aggregation after the final norm.
import type { ModelConfig } from '../checkpoint/config.ts';
import { ropeFrequencies } from '../reference/kernels.ts';
import {
  type Floats,
  rmsnormBackward,
  rmsnormForward,
  ropeRotate,
  ropeTables,
  silu,
  siluGrad,
} from './kernels.ts';
import { type KernelChoice, linearProducts } from './wasm-products.ts';
import { type Gradients, type ModelParams, zerosLike } from './weights.ts';

export interface Batch {
  /** (B, n) input token ids */
  inputs: Int32Array;
  /** (B, n) the token each position must predict (−1: ignore this position) */
  targets: Int32Array;
  batchSize: number;
  length: number;
}

interface LayerActivations<A extends Floats> {
  input: A; //     (rows, H)     residual stream entering the layer
  rstd1: Float64Array; // (rows) input_layernorm's 1/rms
  normed1: A; //   (rows, H)     input_layernorm output
  q: A; //         (rows, nH·d)  after RoPE
  k: A; //         (rows, nKV·d) after RoPE
  v: A; //         (rows, nKV·d)
  probs: A; //     (rows, nH, S) attention weights over S = T + n entries (prefix first; causal)
  heads: A; //     (rows, nH·d)  attention output, heads concatenated
  mid: A; //       (rows, H)     residual stream after the attention block
  rstd2: Float64Array;
  normed2: A; //   (rows, H)     post_attention_layernorm output
  gate: A; //      (rows, I)     gate_proj output (before silu)
  up: A; //        (rows, I)     up_proj output
  act: A; //       (rows, I)     silu(gate) · up
}

export interface Activations<A extends Floats> {
  batch: Batch;
  layers: LayerActivations<A>[];
  final: A; //        (rows, H)  residual stream after the last layer
  rstdFinal: Float64Array;
  hidden: A; //       (rows, H)  after model.norm: the streams' final hidden states
  // ParScale aggregation (null when P = 1), per position row (B, n):
  mixed: A | null; //     (N, P·H) c, interleaved: c[j·P + p] = h[p][j]
  aggPre: A | null; //    (N, H)   W0 c + b0
  aggAct: A | null; //    (N, H)   silu(W0 c + b0)
  aggSoftmax: A | null; // (N, P)  softmax(W2 · aggAct + b2)
  aggWeights: A | null; // (N, P)  smoothed: softmax · (1 − s) + s / P
  y: A; //            (N, H)     the aggregated hidden state (= hidden when P = 1)
  logits: A; //       (N, V)
  /** mean cross-entropy over the positions whose target is ≥ 0 */
  loss: number;
  /** how many positions count in the loss */
  count: number;
}

type Make<A extends Floats> = (n: number) => A;

function maker<A extends Floats>(params: ModelParams<A>): Make<A> {
  const ctor = params.embedTokens.constructor as new (n: number) => A;
  return (n) => new ctor(n);
}

export interface ForwardOptions {
  /**
   * Which kernels compute the matrix products: 'ts' (default here; kernels.ts, the oracle) or
   * 'wasm' (wasm-products.ts, for Float32Array weights). Everything else is the same code.
   */
  kernels?: KernelChoice;
}

/** The training forward pass. Returns every activation, the logits and the loss. */
export function trainingForward<A extends Floats>(
  config: ModelConfig,
  w: ModelParams<A>,
  batch: Batch,
  options: ForwardOptions = {},
): Activations<A> {
  const { linearForward } = linearProducts(options.kernels);
  const make = maker(w);
  const { hiddenSize: H, intermediateSize: I, headDim: d, numHeads: nH, numKvHeads: nKV, vocabSize: V } = config;
  const qDim = nH * d;
  const kvDim = nKV * d;
  const P = config.parscaleN;
  const T = P > 1 ? config.parscaleNTokens : 0; // prefix entries before the real tokens
  const { batchSize: B, length: n } = batch;
  const rows = B * P * n;
  const N = B * n;
  const S = T + n; // attention entries a stream can see at most
  const eps = config.rmsNormEps;
  const { cos, sin } = ropeTables(ropeFrequencies(d, config.ropeTheta), n);
  const scale = 1 / Math.sqrt(d);
  const group = nH / nKV;

  // 1. Embedding, copied to every stream (ParScale).
  let x = make(rows * H);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < n; t++) {
      const token = batch.inputs[b * n + t];
      if (!(token >= 0 && token < V)) throw new RangeError(`token id ${token} is outside the vocabulary [0, ${V})`);
      const from = w.embedTokens.subarray(token * H, (token + 1) * H);
      for (let p = 0; p < P; p++) x.set(from, ((b * P + p) * n + t) * H);
    }
  }

  // 2. The decoder layers.
  const layers: LayerActivations<A>[] = [];
  for (const layer of w.layers) {
    const input = x;
    const rstd1 = new Float64Array(rows);
    const normed1 = make(rows * H);
    rmsnormForward(normed1, rstd1, input, layer.inputNorm, eps, rows, H);
    const q = make(rows * qDim);
    const k = make(rows * kvDim);
    const v = make(rows * kvDim);
    linearForward(q, normed1, layer.qWeight, layer.qBias, rows, H, qDim);
    linearForward(k, normed1, layer.kWeight, layer.kBias, rows, H, kvDim);
    linearForward(v, normed1, layer.vWeight, layer.vBias, rows, H, kvDim);
    for (let row = 0; row < rows; row++) {
      const t = row % n; // real tokens have positions 0..n−1 whatever the prefix
      ropeRotate(q, row * qDim, nH, d, t, cos, sin, 1);
      ropeRotate(k, row * kvDim, nKV, d, t, cos, sin, 1);
    }

    // Attention. Stream p's entry s < T is prefix_k[p, kv, s] / prefix_v[p, kv, s] (ParScale,
    // never rotated); entry T + u is real token u of the same sequence and stream (u ≤ t).
    const probs = make(rows * nH * S);
    const heads = make(rows * qDim);
    for (let b = 0; b < B; b++) {
      for (let p = 0; p < P; p++) {
        const rowBase = (b * P + p) * n;
        for (let t = 0; t < n; t++) {
          const row = rowBase + t;
          const visible = T + t + 1;
          for (let h = 0; h < nH; h++) {
            const kv = Math.floor(h / group);
            const qOff = row * qDim + h * d;
            const pOff = (row * nH + h) * S;
            let max = -Infinity;
            for (let s = 0; s < visible; s++) {
              let keys: Floats;
              let kOff: number;
              if (s < T) {
                keys = layer.prefixKeys!;
                kOff = ((p * nKV + kv) * T + s) * d;
              } else {
                keys = k;
                kOff = (rowBase + s - T) * kvDim + kv * d;
              }
              let dot = 0;
              for (let i = 0; i < d; i++) dot += q[qOff + i] * keys[kOff + i];
              const score = dot * scale;
              probs[pOff + s] = score;
              if (probs[pOff + s] > max) max = probs[pOff + s];
            }
            let sum = 0;
            for (let s = 0; s < visible; s++) {
              const e = Math.exp(probs[pOff + s] - max);
              probs[pOff + s] = e;
              sum += e;
            }
            for (let s = 0; s < visible; s++) probs[pOff + s] /= sum;
            const oOff = row * qDim + h * d; // heads is zero here; add Σ_s p_s v_s
            for (let s = 0; s < visible; s++) {
              const prob = probs[pOff + s];
              let values: Floats;
              let vOff: number;
              if (s < T) {
                values = layer.prefixValues!;
                vOff = ((p * nKV + kv) * T + s) * d;
              } else {
                values = v;
                vOff = (rowBase + s - T) * kvDim + kv * d;
              }
              for (let i = 0; i < d; i++) heads[oOff + i] += prob * values[vOff + i];
            }
          }
        }
      }
    }

    // output projection and residual
    const mid = make(rows * H);
    linearForward(mid, heads, layer.oWeight, null, rows, qDim, H);
    for (let i = 0; i < rows * H; i++) mid[i] += input[i];

    // SwiGLU MLP and residual: x = mid + down(silu(gate(b)) · up(b)), b = post_attention_layernorm(mid)
    const rstd2 = new Float64Array(rows);
    const normed2 = make(rows * H);
    rmsnormForward(normed2, rstd2, mid, layer.postAttentionNorm, eps, rows, H);
    const gate = make(rows * I);
    const up = make(rows * I);
    const act = make(rows * I);
    linearForward(gate, normed2, layer.gateWeight, null, rows, H, I);
    linearForward(up, normed2, layer.upWeight, null, rows, H, I);
    for (let i = 0; i < rows * I; i++) act[i] = silu(gate[i]) * up[i];
    x = make(rows * H);
    linearForward(x, act, layer.downWeight, null, rows, I, H);
    for (let i = 0; i < rows * H; i++) x[i] += mid[i];

    layers.push({ input, rstd1, normed1, q, k, v, probs, heads, mid, rstd2, normed2, gate, up, act });
  }

  // 3. Final norm, per stream.
  const rstdFinal = new Float64Array(rows);
  const hidden = make(rows * H);
  rmsnormForward(hidden, rstdFinal, x, w.norm, eps, rows, H);

  // 4. ParScale aggregation.
  const y = make(N * H);
  let mixed: A | null = null;
  let aggPre: A | null = null;
  let aggAct: A | null = null;
  let aggSoftmax: A | null = null;
  let aggWeights: A | null = null;
  if (w.aggregation !== null) {
    const a = w.aggregation;
    const s = config.parscaleAttnSmooth;
    mixed = make(N * P * H);
    // interleaved, the reference code's `(h n_parscale)`: c[j·P + p] = h[p][j]
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < n; t++) {
        const cOff = (b * n + t) * P * H;
        for (let p = 0; p < P; p++) {
          const hOff = ((b * P + p) * n + t) * H;
          for (let j = 0; j < H; j++) mixed[cOff + j * P + p] = hidden[hOff + j];
        }
      }
    }
    aggPre = make(N * H);
    aggAct = make(N * H);
    linearForward(aggPre, mixed, a.w0, a.b0, N, P * H, H);
    for (let i = 0; i < N * H; i++) aggAct[i] = silu(aggPre[i]);
    aggSoftmax = make(N * P);
    aggWeights = make(N * P);
    linearForward(aggSoftmax, aggAct, a.w2, a.b2, N, H, P);
    for (let r = 0; r < N; r++) {
      let max = -Infinity;
      for (let p = 0; p < P; p++) max = Math.max(max, aggSoftmax[r * P + p]);
      let sum = 0;
      for (let p = 0; p < P; p++) {
        const e = Math.exp(aggSoftmax[r * P + p] - max);
        aggSoftmax[r * P + p] = e;
        sum += e;
      }
      for (let p = 0; p < P; p++) {
        aggSoftmax[r * P + p] /= sum;
        aggWeights[r * P + p] = aggSoftmax[r * P + p] * (1 - s) + s / P;
      }
    }
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < n; t++) {
        const r = b * n + t;
        for (let j = 0; j < H; j++) {
          let acc = 0;
          for (let p = 0; p < P; p++) acc += aggWeights[r * P + p] * hidden[((b * P + p) * n + t) * H + j];
          y[r * H + j] = acc;
        }
      }
    }
  } else {
    y.set(hidden); // P = 1: rows (B, 1, n) are the positions (B, n)
  }

  // 5. LM head and the mean cross-entropy of the next token.
  const logits = make(N * V);
  linearForward(logits, y, w.lmHead, null, N, H, V);
  let lossSum = 0;
  let count = 0;
  for (let r = 0; r < N; r++) {
    const target = batch.targets[r];
    if (target < 0) continue;
    let max = -Infinity;
    for (let i = 0; i < V; i++) max = Math.max(max, logits[r * V + i]);
    let sum = 0;
    for (let i = 0; i < V; i++) sum += Math.exp(logits[r * V + i] - max);
    lossSum += Math.log(sum) + max - logits[r * V + target];
    count++;
  }
  const loss = count === 0 ? 0 : lossSum / count;
  return { batch, layers, final: x, rstdFinal, hidden, mixed, aggPre, aggAct, aggSoftmax, aggWeights, y, logits, loss, count };
}

export interface BackwardOptions extends ForwardOptions {
  /**
   * Stage-2 training with a frozen backbone: compute no gradient for the plain Qwen2 weights
   * (they stay zero), only for prefixes and the aggregation layer. Gradients still flow THROUGH
   * the backbone to reach the prefixes.
   */
  freezeBackbone?: boolean;
  /** Add into these gradients instead of fresh zeros (gradient accumulation). */
  into?: Gradients<Floats>;
  /** Multiply the loss by this before differentiating (e.g. 1 / accumulation steps). */
  lossScale?: number;
}

/** dLoss/dθ for every parameter, from the activations of trainingForward. */
export function trainingBackward<A extends Floats>(
  config: ModelConfig,
  w: ModelParams<A>,
  acts: Activations<A>,
  options: BackwardOptions = {},
): Gradients<A> {
  const { linearBackwardInput, linearBackwardWeight } = linearProducts(options.kernels);
  const make = maker(w);
  const g = (options.into as Gradients<A> | undefined) ?? zerosLike(w);
  const frozen = options.freezeBackbone === true;
  const bb = <X>(grad: X): X | null => (frozen ? null : grad); // a backbone gradient, or none
  const { hiddenSize: H, intermediateSize: I, headDim: d, numHeads: nH, numKvHeads: nKV, vocabSize: V } = config;
  const qDim = nH * d;
  const kvDim = nKV * d;
  const P = config.parscaleN;
  const T = P > 1 ? config.parscaleNTokens : 0;
  const { batchSize: B, length: n } = acts.batch;
  const rows = B * P * n;
  const N = B * n;
  const S = T + n;
  const { cos, sin } = ropeTables(ropeFrequencies(d, config.ropeTheta), n);
  const scale = 1 / Math.sqrt(d);
  const group = nH / nKV;

  // 5. Cross-entropy and LM head: dlogits = (softmax − onehot) / count.
  const dLogits = make(N * V);
  const lossScale = (options.lossScale ?? 1) / Math.max(acts.count, 1);
  for (let r = 0; r < N; r++) {
    const target = acts.batch.targets[r];
    if (target < 0) continue;
    let max = -Infinity;
    for (let i = 0; i < V; i++) max = Math.max(max, acts.logits[r * V + i]);
    let sum = 0;
    for (let i = 0; i < V; i++) sum += Math.exp(acts.logits[r * V + i] - max);
    for (let i = 0; i < V; i++) dLogits[r * V + i] = (Math.exp(acts.logits[r * V + i] - max) / sum) * lossScale;
    dLogits[r * V + target] -= lossScale;
  }
  const dy = make(N * H);
  linearBackwardInput(dy, dLogits, w.lmHead, N, H, V);
  // tied: g.lmHead is g.embedTokens, so this adds the head's share to the embedding's gradient
  if (!frozen) linearBackwardWeight(g.lmHead, null, dLogits, acts.y, N, H, V);

  // 4. ParScale aggregation: y = Σ_p w_p h_p, w = softmax(W2 silu(W0 c + b0) + b2)·(1 − s) + s/P.
  const dHidden = make(rows * H);
  if (w.aggregation !== null) {
    const a = w.aggregation;
    const ga = g.aggregation!;
    const s = config.parscaleAttnSmooth;
    const hidden = acts.hidden;
    const weights = acts.aggWeights!;
    const soft = acts.aggSoftmax!;
    const dLogit = make(N * P); // dLoss / d(W2 · act + b2)
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < n; t++) {
        const r = b * n + t;
        // y_j = Σ_p w_p h_p,j: dh_p,j += w_p dy_j, dw_p = Σ_j dy_j h_p,j
        let dot = 0; // Σ_p soft_p · dsoft_p
        const dSoft = new Float64Array(P);
        for (let p = 0; p < P; p++) {
          const hOff = ((b * P + p) * n + t) * H;
          const wp = weights[r * P + p];
          let dw = 0;
          for (let j = 0; j < H; j++) {
            dHidden[hOff + j] += wp * dy[r * H + j];
            dw += dy[r * H + j] * hidden[hOff + j];
          }
          dSoft[p] = dw * (1 - s); // smoothing is affine
          dot += soft[r * P + p] * dSoft[p];
        }
        // softmax backward
        for (let p = 0; p < P; p++) dLogit[r * P + p] = soft[r * P + p] * (dSoft[p] - dot);
      }
    }
    const dAct = make(N * H);
    linearBackwardInput(dAct, dLogit, a.w2, N, H, P);
    linearBackwardWeight(ga.w2, ga.b2, dLogit, acts.aggAct!, N, H, P);
    const pre = acts.aggPre!;
    for (let i = 0; i < N * H; i++) dAct[i] *= siluGrad(pre[i]); // now dLoss / d(W0 c + b0)
    const dMixed = make(N * P * H);
    linearBackwardInput(dMixed, dAct, a.w0, N, P * H, H);
    linearBackwardWeight(ga.w0, ga.b0, dAct, acts.mixed!, N, P * H, H);
    // undo the interleaving: c[j·P + p] = h[p][j]
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < n; t++) {
        const cOff = (b * n + t) * P * H;
        for (let p = 0; p < P; p++) {
          const hOff = ((b * P + p) * n + t) * H;
          for (let j = 0; j < H; j++) dHidden[hOff + j] += dMixed[cOff + j * P + p];
        }
      }
    }
  } else {
    dHidden.set(dy);
  }

  // 3. Final norm.
  let dx = make(rows * H); // dLoss / d(residual stream), walking back through the layers
  rmsnormBackward(dx, bb(g.norm), dHidden, acts.final, acts.rstdFinal, w.norm, rows, H);

  // 2. The decoder layers, last first.
  for (let l = config.numLayers - 1; l >= 0; l--) {
    const layer = w.layers[l];
    const gl = g.layers[l];
    const act = acts.layers[l];

    // MLP: x = mid + down(silu(gate) · up)
    const dAct = make(rows * I);
    linearBackwardInput(dAct, dx, layer.downWeight, rows, I, H);
    if (!frozen) linearBackwardWeight(gl.downWeight, null, dx, act.act, rows, I, H);
    const dGate = make(rows * I);
    const dUp = make(rows * I);
    for (let i = 0; i < rows * I; i++) {
      dGate[i] = dAct[i] * act.up[i] * siluGrad(act.gate[i]);
      dUp[i] = dAct[i] * silu(act.gate[i]);
    }
    const dNormed2 = make(rows * H);
    linearBackwardInput(dNormed2, dGate, layer.gateWeight, rows, H, I);
    linearBackwardInput(dNormed2, dUp, layer.upWeight, rows, H, I);
    if (!frozen) {
      linearBackwardWeight(gl.gateWeight, null, dGate, act.normed2, rows, H, I);
      linearBackwardWeight(gl.upWeight, null, dUp, act.normed2, rows, H, I);
    }
    const dMid = dx; // the residual passes dx through unchanged; the norm adds its share
    rmsnormBackward(dMid, bb(gl.postAttentionNorm), dNormed2, act.mid, act.rstd2, layer.postAttentionNorm, rows, H);

    // Attention output projection: mid = input + Wo · heads
    const dHeads = make(rows * qDim);
    linearBackwardInput(dHeads, dMid, layer.oWeight, rows, qDim, H);
    if (!frozen) linearBackwardWeight(gl.oWeight, null, dMid, act.heads, rows, qDim, H);

    // Attention. out = Σ_s p_s v_s, p = softmax(scale · q·k_s):
    //   dv_s += p_s dout;  dp_s = dout·v_s;  dscore_s = p_s (dp_s − Σ_u p_u dp_u)
    //   dq += scale Σ_s dscore_s k_s;  dk_s += scale · dscore_s q
    // Prefix entries (s < T) send their gradients to prefix_k / prefix_v of this stream.
    const dq = make(rows * qDim);
    const dk = make(rows * kvDim);
    const dv = make(rows * kvDim);
    const dScore = new Float64Array(S);
    const pk = layer.prefixKeys;
    const pv = layer.prefixValues;
    const gpk = gl.prefixKeys;
    const gpv = gl.prefixValues;
    for (let b = 0; b < B; b++) {
      for (let p = 0; p < P; p++) {
        const rowBase = (b * P + p) * n;
        for (let t = 0; t < n; t++) {
          const row = rowBase + t;
          const visible = T + t + 1;
          for (let h = 0; h < nH; h++) {
            const kv = Math.floor(h / group);
            const qOff = row * qDim + h * d;
            const pOff = (row * nH + h) * S;
            let dot = 0;
            for (let s = 0; s < visible; s++) {
              const prob = act.probs[pOff + s];
              let dp = 0;
              if (s < T) {
                const off = ((p * nKV + kv) * T + s) * d;
                for (let i = 0; i < d; i++) {
                  dp += dHeads[qOff + i] * pv![off + i];
                  gpv![off + i] += prob * dHeads[qOff + i];
                }
              } else {
                const off = (rowBase + s - T) * kvDim + kv * d;
                for (let i = 0; i < d; i++) {
                  dp += dHeads[qOff + i] * act.v[off + i];
                  dv[off + i] += prob * dHeads[qOff + i];
                }
              }
              dScore[s] = dp;
              dot += prob * dp;
            }
            for (let s = 0; s < visible; s++) {
              const ds = act.probs[pOff + s] * (dScore[s] - dot) * scale;
              if (ds === 0) continue;
              if (s < T) {
                const off = ((p * nKV + kv) * T + s) * d;
                for (let i = 0; i < d; i++) {
                  dq[qOff + i] += ds * pk![off + i];
                  gpk![off + i] += ds * act.q[qOff + i];
                }
              } else {
                const off = (rowBase + s - T) * kvDim + kv * d;
                for (let i = 0; i < d; i++) {
                  dq[qOff + i] += ds * act.k[off + i];
                  dk[off + i] += ds * act.q[qOff + i];
                }
              }
            }
          }
        }
      }
    }
    // RoPE backward: rotate the gradients back (the prefix was never rotated).
    for (let row = 0; row < rows; row++) {
      const t = row % n;
      ropeRotate(dq, row * qDim, nH, d, t, cos, sin, -1);
      ropeRotate(dk, row * kvDim, nKV, d, t, cos, sin, -1);
    }

    // q/k/v projections (with bias) and input_layernorm
    const dNormed1 = make(rows * H);
    linearBackwardInput(dNormed1, dq, layer.qWeight, rows, H, qDim);
    linearBackwardInput(dNormed1, dk, layer.kWeight, rows, H, kvDim);
    linearBackwardInput(dNormed1, dv, layer.vWeight, rows, H, kvDim);
    if (!frozen) {
      linearBackwardWeight(gl.qWeight, gl.qBias, dq, act.normed1, rows, H, qDim);
      linearBackwardWeight(gl.kWeight, gl.kBias, dk, act.normed1, rows, H, kvDim);
      linearBackwardWeight(gl.vWeight, gl.vBias, dv, act.normed1, rows, H, kvDim);
    }
    rmsnormBackward(dMid, bb(gl.inputNorm), dNormed1, act.input, act.rstd1, layer.inputNorm, rows, H);
    dx = dMid; // dLoss / d(layer input)
  }

  // 1. Embedding: every stream's copy sends its gradient back to the same row.
  if (!frozen) {
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < n; t++) {
        const eOff = acts.batch.inputs[b * n + t] * H;
        for (let p = 0; p < P; p++) {
          const xOff = ((b * P + p) * n + t) * H;
          for (let j = 0; j < H; j++) g.embedTokens[eOff + j] += dx[xOff + j];
        }
      }
    }
  }
  return g;
}

/** Loss and gradients of one batch. */
export function lossAndGradients<A extends Floats>(
  config: ModelConfig,
  w: ModelParams<A>,
  batch: Batch,
  options: BackwardOptions = {},
): { loss: number; grads: Gradients<A> } {
  const acts = trainingForward(config, w, batch, options);
  return { loss: acts.loss, grads: trainingBackward(config, w, acts, options) };
}

/** Loss only (validation, finite differences). */
export function batchLoss<A extends Floats>(config: ModelConfig, w: ModelParams<A>, batch: Batch, options: ForwardOptions = {}): number {
  return trainingForward(config, w, batch, options).loss;
}
