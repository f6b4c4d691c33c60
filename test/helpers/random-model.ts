// Small random Qwen2-ParScale models built directly in memory, for property tests of the
// reference forward pass (no checkpoint files involved).
import type { ModelConfig } from '../../src/checkpoint/config.ts';
import type { ReferenceWeights } from '../../src/reference/model.ts';
import { createRng } from '../../src/generation/sampling.ts';

/** The sampler's seeded generator (mulberry32) serves as test data source too. */
export const rng = createRng;

export function randomArray(random: () => number, n: number, scale: number, center = 0): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = center + scale * (2 * random() - 1);
  return out;
}

export function tinyConfig(overrides: Partial<ModelConfig> = {}): ModelConfig {
  return {
    modelType: 'qwen2_parscale',
    hiddenSize: 16,
    intermediateSize: 24,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 4,
    vocabSize: 32,
    rmsNormEps: 1e-6,
    ropeTheta: 10000,
    maxPositionEmbeddings: 256,
    tieWordEmbeddings: true,
    torchDtype: 'float32',
    bosTokenId: null,
    eosTokenIds: [0],
    parscaleN: 2,
    parscaleNTokens: 3,
    parscaleAttnSmooth: 0.01,
    ...overrides,
  };
}

export function randomWeights(config: ModelConfig, seed: number): ReferenceWeights {
  const random = rng(seed);
  const { hiddenSize: H, intermediateSize: I, numHeads, numKvHeads, headDim: d, vocabSize: V } = config;
  const P = config.parscaleN;
  const T = config.parscaleNTokens;
  const linear = (out: number, inp: number) => randomArray(random, out * inp, 1.5 / Math.sqrt(inp));
  const embedTokens = randomArray(random, V * H, 1);
  return {
    embedTokens,
    layers: Array.from({ length: config.numLayers }, () => ({
      inputNorm: randomArray(random, H, 0.2, 1),
      qWeight: linear(numHeads * d, H),
      qBias: randomArray(random, numHeads * d, 0.2),
      kWeight: linear(numKvHeads * d, H),
      kBias: randomArray(random, numKvHeads * d, 0.2),
      vWeight: linear(numKvHeads * d, H),
      vBias: randomArray(random, numKvHeads * d, 0.2),
      oWeight: linear(H, numHeads * d),
      postAttentionNorm: randomArray(random, H, 0.2, 1),
      gateWeight: linear(I, H),
      upWeight: linear(I, H),
      downWeight: linear(H, I),
      prefixKeys: P > 1 ? randomArray(random, P * numKvHeads * T * d, 1.5) : null,
      prefixValues: P > 1 ? randomArray(random, P * numKvHeads * T * d, 1.5) : null,
    })),
    norm: randomArray(random, H, 0.2, 1),
    aggregation:
      P > 1
        ? {
            w0: linear(H, P * H),
            b0: randomArray(random, H, 0.2),
            w2: linear(P, H).map((v) => v * 4),
            b2: randomArray(random, P, 0.5),
          }
        : null,
    lmHead: config.tieWordEmbeddings ? embedTokens : linear(V, H),
  };
}
