// The pure half of bench/paper-cost.ts: the paper's fitted parallel scaling law, the
// non-embedding parameter count N of a configuration, the ParScale model family's shapes, and
// the choice of a P = 1 shape whose N matches a target. No files, no timing.
//
// Sources (QwenLM/ParScale at commit cd6acb4, read for facts only):
// - the law and its fitting code: parametric_fit.py lines 22-24,
//     pred = E + (A * 1e9 / (N * (ln(P) * k + 1))) ** alpha
//   i.e. the optimiser's A is in units of 1e9 parameters;
// - the fitted constants: figures/scaling_law.png (the paper's Figure 2), annotated per corpus
//   with A in plain parameters (A = 1.131 × 10^7 there is 0.01131 in the code's units; the test
//   checks that these constants reproduce the losses listed in parametric_fit.py);
// - the family's non-embedding counts: parametric_fit.py lines 65-68 (P = 1, 2, 4, 8 rows).
import type { ModelConfig } from '../src/checkpoint/config.ts';
import type { Shape } from '../tools/make-checkpoint.ts';

export interface LawFit {
  /** what the constants were fitted on */
  corpus: string;
  /** irreducible loss */
  E: number;
  /** in parameters (not the fitting code's units of 1e9) */
  A: number;
  alpha: number;
  /** P streams ≈ multiplying N by (k·ln P + 1) */
  k: number;
  /** goodness of fit, as annotated */
  r2: number;
  source: string;
}

export const LAW_FITS = {
  'stack-v2-python': {
    corpus: 'Stack-V2-Python',
    E: 0.6912,
    A: 1.131e7,
    alpha: 0.1894,
    k: 0.3935,
    r2: 0.9978,
    source: 'paper Figure 2, left panel (QwenLM/ParScale figures/scaling_law.png)',
  },
  pile: {
    corpus: 'Pile',
    E: 1.2888,
    A: 1.974e8,
    alpha: 0.1963,
    k: 0.3345,
    r2: 0.9987,
    source: 'paper Figure 2, right panel (QwenLM/ParScale figures/scaling_law.png)',
  },
} as const satisfies Record<string, LawFit>;
export type FitName = keyof typeof LAW_FITS;

/** The parallel scaling law: loss = E + (A / (N · (k·ln P + 1)))^α, N non-embedding parameters. */
export function predictedLoss(fit: LawFit, N: number, P: number): number {
  return fit.E + (fit.A / (N * (fit.k * Math.log(P) + 1))) ** fit.alpha;
}

/** The N of the P = 1 model with the same predicted loss as N parameters run with P streams. */
export function equivalentN(fit: LawFit, N: number, P: number): number {
  return N * (fit.k * Math.log(P) + 1);
}

/**
 * Non-embedding parameters of a configuration, counted the way the paper's fitting code counts
 * them (parametric_fit.py's P > 1 rows include the prefixes and the aggregation layer):
 * everything except model.embed_tokens and lm_head.
 */
export function nonEmbeddingParameters(config: ModelConfig): number {
  const { hiddenSize: H, intermediateSize: I, numLayers: L, numHeads: nH, numKvHeads: nKV, headDim: d } = config;
  const P = config.parscaleN;
  const T = config.parscaleNTokens;
  const attention = (nH * d * H + nH * d) + 2 * (nKV * d * H + nKV * d) + H * nH * d; // q, k, v with biases; o without
  const mlp = 3 * H * I; // gate, up, down
  const norms = 2 * H; // input and post-attention RMSNorm weights
  let N = L * (attention + mlp + norms) + H; // + the final norm
  if (P > 1) {
    N += L * 2 * P * nKV * T * d; // prefix_k and prefix_v, [P, nKV, T, d] each, per layer
    N += P * H * H + H + P * H + P; // aggregate_layer.0 [H, P·H] + bias, aggregate_layer.2 [P, H] + bias
  }
  return N;
}

/**
 * A Shape (config.json spelling) as the ModelConfig fields the count needs. Not through parseConfig:
 * the shape search counts partial shapes too (intermediate 0 for the attention-only part).
 */
export function shapeConfig(shape: Shape, P: number, prefixTokens = 48): ModelConfig {
  return {
    modelType: 'qwen2_parscale',
    hiddenSize: shape.hidden_size,
    intermediateSize: shape.intermediate_size,
    numLayers: shape.num_hidden_layers,
    numHeads: shape.num_attention_heads,
    numKvHeads: shape.num_key_value_heads,
    headDim: shape.hidden_size / shape.num_attention_heads,
    vocabSize: shape.vocab_size,
    rmsNormEps: 1e-6,
    ropeTheta: shape.rope_theta,
    maxPositionEmbeddings: shape.max_position_embeddings,
    tieWordEmbeddings: shape.tie_word_embeddings,
    torchDtype: 'bfloat16',
    bosTokenId: 151643,
    eosTokenIds: [151643],
    parscaleN: P,
    parscaleNTokens: prefixTokens,
    parscaleAttnSmooth: 0.01,
  };
}

/**
 * The models the law was fitted on. parametric_fit.py lists only their N; the widths below are
 * the unique (hidden, intermediate) that give exactly those N with the 1.8B model's 36 layers,
 * 16 query / 2 KV heads and vocabulary (cost_analysis.py's defaults; its README example, hidden
 * 2560 / intermediate 13824, is the 4.4B one). `label` is the paper's figure label (non-embedding
 * size), `name` the Hugging Face name (total size with the embedding).
 */
export const FAMILY: { label: string; name: string; hidden: number; intermediate: number; N: [number, number, number, number] }[] = [
  { label: '0.5B', name: 'ParScale-0.7B', hidden: 896, intermediate: 4864, N: [535813376, 538195842, 540577412, 545340552] },
  { label: '0.7B', name: 'ParScale-0.9B', hidden: 1024, intermediate: 5504, N: [693753856, 696738818, 699722756, 705690632] },
  { label: '1.1B', name: 'ParScale-1.3B', hidden: 1280, intermediate: 6912, N: [1088376320, 1092762882, 1097148164, 1105918728] },
  { label: '1.6B', name: 'ParScale-1.8B', hidden: 1536, intermediate: 8320, N: [1571472384, 1577522690, 1583571460, 1595669000] },
  { label: '2.8B', name: 'ParScale-3B', hidden: 2048, intermediate: 11008, N: [2774773760, 2784937986, 2795100164, 2815424520] },
  { label: '4.4B', name: 'ParScale-4.7B', hidden: 2560, intermediate: 13824, N: [4353203200, 4368529922, 4383854084, 4414502408] },
];
/** The P of each column of FAMILY[i].N. */
export const FAMILY_P = [1, 2, 4, 8] as const;

export interface ShapeChoice {
  shape: Shape;
  N: number;
  targetN: number;
  /** (N − target) / target */
  mismatch: number;
}

/**
 * The P = 1 shape closest to `targetN` non-embedding parameters, grown from `base` the way the
 * ParScale family grows: layers, heads, KV heads and vocabulary kept, intermediate/hidden kept
 * near the base's ratio (the family stays at 5.38-5.43), hidden a multiple of `hiddenStep`
 * (default 8 per head, so the head dimension stays a multiple of 8) and intermediate a multiple
 * of `intermediateStep` (default 128, as in every family member): the hidden size is the
 * nearest step to the exact solution at the base ratio, then the intermediate size the nearest
 * step to the target. The mismatch is at most half an intermediate step, 1.5·L·H·step weights.
 */
export function chooseEquivalentShape(base: Shape, targetN: number, options: { hiddenStep?: number; intermediateStep?: number } = {}): ShapeChoice {
  const nH = base.num_attention_heads;
  const hiddenStep = options.hiddenStep ?? 8 * nH;
  const intermediateStep = options.intermediateStep ?? 128;
  const L = base.num_hidden_layers;
  const ratio = base.intermediate_size / base.hidden_size;
  const withSizes = (hidden: number, intermediate: number): Shape => ({ ...base, hidden_size: hidden, intermediate_size: intermediate });
  const count = (shape: Shape) => nonEmbeddingParameters(shapeConfig(shape, 1));
  // At the base ratio r = I/H, with g = nKV/nH and d = H/nH, a layer holds (2 + 2g + 3r)·H²
  // weights (q, o, k and v, gate/up/down) and (3 + 2g)·H biases and norms: solve L·(a·H² + b·H) + H = target.
  const g = base.num_key_value_heads / nH;
  const a = L * (2 + 2 * g + 3 * ratio);
  const b = L * (3 + 2 * g) + 1;
  const exactHidden = (-b + Math.sqrt(b * b + 4 * a * targetN)) / (2 * a);
  const hidden = Math.max(hiddenStep, Math.round(exactHidden / hiddenStep) * hiddenStep);
  // then N is linear in the intermediate size, 3·L·H per unit: round it to the nearest step
  const withoutMlp = count(withSizes(hidden, 0));
  const intermediate = Math.max(intermediateStep, Math.round((targetN - withoutMlp) / (3 * L * hidden) / intermediateStep) * intermediateStep);
  const shape = withSizes(hidden, intermediate);
  const N = count(shape);
  return { shape, N, targetN, mismatch: (N - targetN) / targetN };
}
