// The trainable parameters: the same structure as ReferenceWeights (src/reference/model.ts), made
// generic over the array type so the gradient checks can run the very same code in float64.
// Gradients use this structure too: grads.layers[3].qWeight is dLoss/dWq of layer 3. With tied
// embeddings grads.lmHead IS grads.embedTokens (as weights.lmHead is weights.embedTokens), so the
// two uses of the embedding add into one gradient.
import type { ModelConfig } from '../checkpoint/config.ts';
import { expectedTensors } from '../checkpoint/config.ts';
import type { Floats } from './kernels.ts';

export interface LayerParams<A extends Floats = Float32Array> {
  inputNorm: A; //         [H]            input_layernorm.weight
  qWeight: A; //           [nH·d, H]      self_attn.q_proj.weight
  qBias: A; //             [nH·d]
  kWeight: A; //           [nKV·d, H]     self_attn.k_proj.weight
  kBias: A; //             [nKV·d]
  vWeight: A; //           [nKV·d, H]     self_attn.v_proj.weight
  vBias: A; //             [nKV·d]
  oWeight: A; //           [H, nH·d]      self_attn.o_proj.weight (no bias)
  postAttentionNorm: A; // [H]            post_attention_layernorm.weight
  gateWeight: A; //        [I, H]         mlp.gate_proj.weight
  upWeight: A; //          [I, H]         mlp.up_proj.weight
  downWeight: A; //        [H, I]         mlp.down_proj.weight
  prefixKeys: A | null; // [P, nKV, T, d] self_attn.prefix_k (ParScale, P > 1)
  prefixValues: A | null; // [P, nKV, T, d] self_attn.prefix_v (ParScale, P > 1)
}

export interface AggregationParams<A extends Floats = Float32Array> {
  w0: A; // [H, P·H]  model.aggregate_layer.0.weight (reads streams interleaved)
  b0: A; // [H]       model.aggregate_layer.0.bias
  w2: A; // [P, H]    model.aggregate_layer.2.weight
  b2: A; // [P]       model.aggregate_layer.2.bias
}

export interface ModelParams<A extends Floats = Float32Array> {
  embedTokens: A; // [V, H]  model.embed_tokens.weight
  layers: LayerParams<A>[];
  norm: A; //        [H]     model.norm.weight
  aggregation: AggregationParams<A> | null; // ParScale, P > 1
  lmHead: A; //      [V, H]  lm_head.weight, or the embedding itself when tied
}

/** dLoss/dθ for every parameter θ, in the structure of the weights. */
export type Gradients<A extends Floats = Float32Array> = ModelParams<A>;

export type TensorRole = 'backbone' | 'prefix' | 'aggregation';

export interface ParameterEntry<A extends Floats = Float32Array> {
  /** The checkpoint tensor name (SPEC.md "Tensors"). */
  name: string;
  shape: number[];
  data: A;
  /** backbone: the plain Qwen2 weights; prefix and aggregation: what ParScale adds. */
  role: TensorRole;
  /** AdamW weight decay applies to matrices only: not to norms, biases or prefixes. */
  decay: boolean;
}

const LAYER_FIELDS: [string, keyof LayerParams][] = [
  ['input_layernorm.weight', 'inputNorm'],
  ['self_attn.q_proj.weight', 'qWeight'],
  ['self_attn.q_proj.bias', 'qBias'],
  ['self_attn.k_proj.weight', 'kWeight'],
  ['self_attn.k_proj.bias', 'kBias'],
  ['self_attn.v_proj.weight', 'vWeight'],
  ['self_attn.v_proj.bias', 'vBias'],
  ['self_attn.o_proj.weight', 'oWeight'],
  ['post_attention_layernorm.weight', 'postAttentionNorm'],
  ['mlp.gate_proj.weight', 'gateWeight'],
  ['mlp.up_proj.weight', 'upWeight'],
  ['mlp.down_proj.weight', 'downWeight'],
  ['self_attn.prefix_k', 'prefixKeys'],
  ['self_attn.prefix_v', 'prefixValues'],
];

/**
 * Every parameter tensor with its checkpoint name, in expectedTensors order. The one place that
 * maps names to fields for training (saving, optimizer state, freezing, gradient checks).
 * With tied embeddings there is no lm_head entry: the embedding entry carries both uses.
 */
export function parameterEntries<A extends Floats>(config: ModelConfig, params: ModelParams<A>): ParameterEntry<A>[] {
  const entries: ParameterEntry<A>[] = [];
  for (const [name, shape] of expectedTensors(config)) {
    let data: A | null = null;
    let role: TensorRole = 'backbone';
    const layerMatch = /^model\.layers\.(\d+)\.(.+)$/.exec(name);
    if (layerMatch !== null) {
      const field = LAYER_FIELDS.find(([suffix]) => suffix === layerMatch[2]);
      if (field === undefined) throw new Error(`internal: no field for tensor ${name}`);
      data = params.layers[Number(layerMatch[1])][field[1]] as A | null;
      if (field[1] === 'prefixKeys' || field[1] === 'prefixValues') role = 'prefix';
    } else if (name === 'model.embed_tokens.weight') {
      data = params.embedTokens;
    } else if (name === 'model.norm.weight') {
      data = params.norm;
    } else if (name === 'lm_head.weight') {
      data = params.lmHead;
    } else if (name.startsWith('model.aggregate_layer.')) {
      role = 'aggregation';
      const a = params.aggregation;
      const key = ({ '0.weight': 'w0', '0.bias': 'b0', '2.weight': 'w2', '2.bias': 'b2' } as const)[
        name.slice('model.aggregate_layer.'.length) as '0.weight'
      ];
      data = a === null ? null : a[key];
    }
    if (data === null) throw new Error(`internal: tensor ${name} has no data`);
    const size = shape.reduce((x, y) => x * y, 1);
    if (data.length !== size) throw new Error(`tensor ${name}: expected ${size} values [${shape}], found ${data.length}`);
    const decay = shape.length >= 2 && role !== 'prefix';
    entries.push({ name, shape, data, role, decay });
  }
  return entries;
}

/** A structure like `params` with fresh arrays made by `make` (zeros, or copies via `map`). */
export function mapParams<A extends Floats, B extends Floats>(
  params: ModelParams<A>,
  map: (tensor: A) => B,
): ModelParams<B> {
  const m = (t: A | null): B | null => (t === null ? null : map(t));
  const embedTokens = map(params.embedTokens);
  const tied = params.lmHead === params.embedTokens;
  return {
    embedTokens,
    layers: params.layers.map((l) => ({
      inputNorm: map(l.inputNorm),
      qWeight: map(l.qWeight),
      qBias: map(l.qBias),
      kWeight: map(l.kWeight),
      kBias: map(l.kBias),
      vWeight: map(l.vWeight),
      vBias: map(l.vBias),
      oWeight: map(l.oWeight),
      postAttentionNorm: map(l.postAttentionNorm),
      gateWeight: map(l.gateWeight),
      upWeight: map(l.upWeight),
      downWeight: map(l.downWeight),
      prefixKeys: m(l.prefixKeys),
      prefixValues: m(l.prefixValues),
    })),
    norm: map(params.norm),
    aggregation:
      params.aggregation === null
        ? null
        : {
            w0: map(params.aggregation.w0),
            b0: map(params.aggregation.b0),
            w2: map(params.aggregation.w2),
            b2: map(params.aggregation.b2),
          },
    // tied: the copy is tied too
    lmHead: tied ? embedTokens : map(params.lmHead),
  };
}

export function zerosLike<A extends Floats>(params: ModelParams<A>): ModelParams<A> {
  return mapParams(params, (t) => new (t.constructor as new (n: number) => A)(t.length));
}

export function toFloat64(params: ModelParams<Floats>): ModelParams<Float64Array> {
  return mapParams(params, (t) => Float64Array.from(t));
}

export function cloneParams(params: ModelParams<Float32Array>): ModelParams<Float32Array> {
  return mapParams(params, (t) => t.slice());
}

/** mulberry32: a small seeded PRNG whose whole state is one 32-bit number (easy to checkpoint). */
export class Rng {
  constructor(public state: number) {
    this.state = state >>> 0;
  }
  /** uniform in [0, 1) */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** integer in [0, n) */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /** standard normal (Box–Muller; uses two uniforms) */
  normal(): number {
    const u = 1 - this.next();
    const v = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
}

export interface InitOptions {
  /** std of the normal init of matrices and embeddings (config initializer_range, Qwen2: 0.02) */
  std?: number;
}

function normalArray(rng: Rng, n: number, std: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = std * rng.normal();
  return out;
}

/** New prefixes for P streams: normal with the init std, like every other new matrix. */
export function initPrefix(config: ModelConfig, rng: Rng, std: number): Float32Array {
  return normalArray(rng, config.parscaleN * config.numKvHeads * config.parscaleNTokens * config.headDim, std);
}

/** A new aggregation layer: normal weights, zero biases, so it starts near equal weights 1/P. */
export function initAggregation(config: ModelConfig, rng: Rng, std: number): AggregationParams {
  const H = config.hiddenSize;
  const P = config.parscaleN;
  return {
    w0: normalArray(rng, H * P * H, std),
    b0: new Float32Array(H),
    w2: normalArray(rng, P * H, std),
    b2: new Float32Array(P),
  };
}

/**
 * Fresh weights, Qwen2's init (transformers' _init_weights): every linear weight and the embedding
 * normal(0, std), biases 0, norm weights 1; additionally (as GPT-2 does) the two projections
 * that write into the residual stream, o_proj and down_proj, get std / sqrt(2L) so the residual
 * does not grow with depth. ParScale prefixes and aggregation as initPrefix / initAggregation.
 */
export function initParams(config: ModelConfig, seed: number, options: InitOptions = {}): ModelParams {
  const std = options.std ?? 0.02;
  const rng = new Rng(seed);
  const { hiddenSize: H, intermediateSize: I, numHeads, numKvHeads, headDim: d, vocabSize: V } = config;
  const P = config.parscaleN;
  const residualStd = std / Math.sqrt(2 * config.numLayers);
  const embedTokens = normalArray(rng, V * H, std);
  const layers: LayerParams[] = [];
  for (let l = 0; l < config.numLayers; l++) {
    layers.push({
      inputNorm: new Float32Array(H).fill(1),
      qWeight: normalArray(rng, numHeads * d * H, std),
      qBias: new Float32Array(numHeads * d),
      kWeight: normalArray(rng, numKvHeads * d * H, std),
      kBias: new Float32Array(numKvHeads * d),
      vWeight: normalArray(rng, numKvHeads * d * H, std),
      vBias: new Float32Array(numKvHeads * d),
      oWeight: normalArray(rng, H * numHeads * d, residualStd),
      postAttentionNorm: new Float32Array(H).fill(1),
      gateWeight: normalArray(rng, I * H, std),
      upWeight: normalArray(rng, I * H, std),
      downWeight: normalArray(rng, H * I, residualStd),
      prefixKeys: null,
      prefixValues: null,
    });
  }
  const lmHead = config.tieWordEmbeddings ? embedTokens : normalArray(rng, V * H, std);
  const params: ModelParams = { embedTokens, layers, norm: new Float32Array(H).fill(1), aggregation: null, lmHead };
  if (P > 1) addStreams(params, config, rng, std);
  return params;
}

/**
 * ParScale stage 2 / recycling: give a backbone new prefixes for config.parscaleN streams and a
 * new aggregation layer (replacing any it had). The backbone arrays are kept as they are.
 */
export function addStreams(params: ModelParams, config: ModelConfig, rng: Rng, std: number): void {
  for (const layer of params.layers) {
    layer.prefixKeys = initPrefix(config, rng, std);
    layer.prefixValues = initPrefix(config, rng, std);
  }
  params.aggregation = initAggregation(config, rng, std);
}
