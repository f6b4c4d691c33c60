// The reference Qwen2-ParScale model: the whole forward pass of SPEC.md in one file, in plain
// TypeScript over Float32Array. It is the correctness oracle for every other backend, so it is
// written to be read top to bottom next to SPEC.md, not to be fast.
//
// ParScale in three places, all marked "ParScale": (1) every stream's cache starts with its own
// learned prefix, (2) the input is copied to P streams, (3) after the final norm an aggregation
// network mixes the P streams into one hidden state. With P = 1 all three vanish and this is a
// plain Qwen2 model.
import type { ForwardOptions, ForwardResult, LanguageModel, SequenceState } from '../backend.ts';
import type { ModelConfig } from '../checkpoint/config.ts';
import { type Checkpoint, type RawTensor, type StreamSet, tensorToFloat32 } from '../checkpoint/load.ts';
import { availableStreamCounts, backboneConfig, unknownStreamCountError } from '../checkpoint/stream-sets.ts';
import { aggregate, attention, matmul, rmsnorm, rope, ropeFrequencies, swiglu } from './kernels.ts';

// Shapes: H hidden, I intermediate, nH query heads, nKV key/value heads, d head dim,
// V vocab, P streams, T prefix entries per stream. Linear weights are [out, in].
export interface LayerWeights {
  inputNorm: Float32Array; //         [H]            input_layernorm.weight
  qWeight: Float32Array; //           [nH·d, H]      self_attn.q_proj.weight
  qBias: Float32Array; //             [nH·d]
  kWeight: Float32Array; //           [nKV·d, H]     self_attn.k_proj.weight
  kBias: Float32Array; //             [nKV·d]
  vWeight: Float32Array; //           [nKV·d, H]     self_attn.v_proj.weight
  vBias: Float32Array; //             [nKV·d]
  oWeight: Float32Array; //           [H, nH·d]      self_attn.o_proj.weight (no bias)
  postAttentionNorm: Float32Array; // [H]            post_attention_layernorm.weight
  gateWeight: Float32Array; //        [I, H]         mlp.gate_proj.weight
  upWeight: Float32Array; //          [I, H]         mlp.up_proj.weight
  downWeight: Float32Array; //        [H, I]         mlp.down_proj.weight
  prefixKeys: Float32Array | null; // [P, nKV, T, d] self_attn.prefix_k (ParScale, P > 1)
  prefixValues: Float32Array | null; // [P, nKV, T, d] self_attn.prefix_v (ParScale, P > 1)
}

export interface AggregationWeights {
  w0: Float32Array; // [H, P·H]  model.aggregate_layer.0.weight (reads streams interleaved)
  b0: Float32Array; // [H]       model.aggregate_layer.0.bias
  w2: Float32Array; // [P, H]    model.aggregate_layer.2.weight
  b2: Float32Array; // [P]       model.aggregate_layer.2.bias
}

export interface ReferenceWeights {
  embedTokens: Float32Array; // [V, H]  model.embed_tokens.weight
  layers: LayerWeights[];
  norm: Float32Array; //        [H]     model.norm.weight
  aggregation: AggregationWeights | null; // ParScale, P > 1
  lmHead: Float32Array; //      [V, H]  lm_head.weight, or the embedding when tied
}

/** The one place that maps checkpoint tensor names to our fields. */
export function referenceWeightsFromCheckpoint(checkpoint: Checkpoint): ReferenceWeights {
  const { config, tensors } = checkpoint;
  const get = (name: string): Float32Array => {
    const tensor = tensors.get(name);
    // loadCheckpoint has already checked every name and shape against the config.
    if (tensor === undefined) throw new Error(`internal: tensor ${name} was not loaded`);
    return tensorToFloat32(tensor);
  };
  const parscale = config.parscaleN > 1;
  const layers: LayerWeights[] = [];
  for (let i = 0; i < config.numLayers; i++) {
    const prefix = `model.layers.${i}`;
    layers.push({
      inputNorm: get(`${prefix}.input_layernorm.weight`),
      qWeight: get(`${prefix}.self_attn.q_proj.weight`),
      qBias: get(`${prefix}.self_attn.q_proj.bias`),
      kWeight: get(`${prefix}.self_attn.k_proj.weight`),
      kBias: get(`${prefix}.self_attn.k_proj.bias`),
      vWeight: get(`${prefix}.self_attn.v_proj.weight`),
      vBias: get(`${prefix}.self_attn.v_proj.bias`),
      oWeight: get(`${prefix}.self_attn.o_proj.weight`),
      postAttentionNorm: get(`${prefix}.post_attention_layernorm.weight`),
      gateWeight: get(`${prefix}.mlp.gate_proj.weight`),
      upWeight: get(`${prefix}.mlp.up_proj.weight`),
      downWeight: get(`${prefix}.mlp.down_proj.weight`),
      prefixKeys: parscale ? get(`${prefix}.self_attn.prefix_k`) : null,
      prefixValues: parscale ? get(`${prefix}.self_attn.prefix_v`) : null,
    });
  }
  const embedTokens = get('model.embed_tokens.weight');
  return {
    embedTokens,
    layers,
    norm: get('model.norm.weight'),
    aggregation: parscale
      ? {
          w0: get('model.aggregate_layer.0.weight'),
          b0: get('model.aggregate_layer.0.bias'),
          w2: get('model.aggregate_layer.2.weight'),
          b2: get('model.aggregate_layer.2.bias'),
        }
      : null,
    lmHead: config.tieWordEmbeddings ? embedTokens : get('lm_head.weight'),
  };
}

/**
 * Dynamic P: the weights of another stream set over the same backbone. Every backbone array is
 * shared (not copied); only the prefixes and the aggregation layer are this set's, or none for
 * the backbone alone (set = null, P = 1).
 */
export function streamSetWeights(backbone: ReferenceWeights, set: StreamSet | null): ReferenceWeights {
  const get = (name: string): Float32Array => {
    const tensor: RawTensor | undefined = set?.tensors.get(name);
    // loadCheckpoint has already checked every name and shape of the set against its config.
    if (tensor === undefined) throw new Error(`internal: tensor ${name} of the stream set was not loaded`);
    return tensorToFloat32(tensor);
  };
  return {
    ...backbone,
    layers: backbone.layers.map((layer, i) => ({
      ...layer,
      prefixKeys: set === null ? null : get(`model.layers.${i}.self_attn.prefix_k`),
      prefixValues: set === null ? null : get(`model.layers.${i}.self_attn.prefix_v`),
    })),
    aggregation:
      set === null
        ? null
        : {
            w0: get('model.aggregate_layer.0.weight'),
            b0: get('model.aggregate_layer.0.bias'),
            w2: get('model.aggregate_layer.2.weight'),
            b2: get('model.aggregate_layer.2.bias'),
          },
  };
}

/**
 * The KV cache of one sequence. For each layer and stream p: keys and values laid out
 * (nKV, capacity, d). Entries 0..T−1 are stream p's prefix (ParScale; never rotated, never a
 * position), entries T..T+length−1 the real tokens. It grows by doubling when full.
 */
export class ReferenceCache implements SequenceState {
  length = 0;
  /** Prefix entries at the start of every stream's cache: T when P > 1, else 0. */
  readonly prefixLength: number;
  capacity: number;
  keys: Float32Array[][]; //   [layer][stream] → (nKV, capacity, d)
  values: Float32Array[][]; // [layer][stream] → (nKV, capacity, d)

  constructor(
    private readonly config: ModelConfig,
    weights: ReferenceWeights,
  ) {
    const P = config.parscaleN;
    this.prefixLength = P > 1 ? config.parscaleNTokens : 0;
    this.capacity = this.prefixLength + 16;
    this.keys = [];
    this.values = [];
    for (const layer of weights.layers) {
      const layerKeys: Float32Array[] = [];
      const layerValues: Float32Array[] = [];
      for (let p = 0; p < P; p++) {
        const k = new Float32Array(config.numKvHeads * this.capacity * config.headDim);
        const v = new Float32Array(config.numKvHeads * this.capacity * config.headDim);
        // ParScale: the cache of stream p starts as prefix_k[p], prefix_v[p] (each [nKV, T, d]).
        if (layer.prefixKeys !== null && layer.prefixValues !== null) {
          this.writePrefix(k, layer.prefixKeys, p);
          this.writePrefix(v, layer.prefixValues, p);
        }
        layerKeys.push(k);
        layerValues.push(v);
      }
      this.keys.push(layerKeys);
      this.values.push(layerValues);
    }
  }

  private writePrefix(cache: Float32Array, prefix: Float32Array, stream: number): void {
    const { numKvHeads, headDim: d } = this.config;
    const T = this.prefixLength;
    for (let kv = 0; kv < numKvHeads; kv++) {
      const from = ((stream * numKvHeads + kv) * T) * d;
      cache.set(prefix.subarray(from, from + T * d), kv * this.capacity * d);
    }
  }

  /** Make room for `extra` more real tokens. */
  reserve(extra: number): void {
    const needed = this.prefixLength + this.length + extra;
    if (needed <= this.capacity) return;
    let capacity = this.capacity;
    while (capacity < needed) capacity *= 2;
    const { numKvHeads, headDim: d } = this.config;
    const used = this.prefixLength + this.length;
    const grow = (old: Float32Array): Float32Array => {
      const next = new Float32Array(numKvHeads * capacity * d);
      for (let kv = 0; kv < numKvHeads; kv++) {
        next.set(old.subarray(kv * this.capacity * d, (kv * this.capacity + used) * d), kv * capacity * d);
      }
      return next;
    };
    this.keys = this.keys.map((streams) => streams.map(grow));
    this.values = this.values.map((streams) => streams.map(grow));
    this.capacity = capacity;
  }
}

export class ReferenceModel implements LanguageModel {
  readonly backend = 'reference';
  /** RoPE frequencies f_j = theta^(-2j/d), j < d/2 */
  private readonly freqs: Float32Array;
  /** Dynamic P: the models of every stream count over these same backbone arrays, by P. */
  private family: { dir: string | null; models: Map<number, ReferenceModel> } | null = null;

  constructor(
    readonly config: ModelConfig,
    readonly weights: ReferenceWeights,
  ) {
    this.freqs = ropeFrequencies(config.headDim, config.ropeTheta);
  }

  /** The model of the folder's own P; withStreams(P) gives its other stream sets (and P = 1). */
  static fromCheckpoint(checkpoint: Checkpoint): ReferenceModel {
    const own = new ReferenceModel(checkpoint.config, referenceWeightsFromCheckpoint(checkpoint));
    const family = own.streamFamily(checkpoint.dir);
    for (const set of checkpoint.streamSets) {
      const model = new ReferenceModel(set.config, streamSetWeights(own.weights, set));
      model.family = family;
      family.models.set(set.P, model);
    }
    return own;
  }

  /** The stream counts P this loaded backbone can run (1, its own, its stream sets), ascending. */
  get streamSets(): number[] {
    return availableStreamCounts(this.config, [...this.streamFamily(null).models.keys()].map((P) => ({ P })));
  }

  /** The same backbone with the stream set of P streams; nothing is copied. */
  withStreams(P: number): ReferenceModel {
    const model = this.streamFamily(null).models.get(P);
    if (model === undefined) throw unknownStreamCountError(this.family!.dir, P, this.streamSets);
    return model;
  }

  private streamFamily(dir: string | null): { dir: string | null; models: Map<number, ReferenceModel> } {
    if (this.family === null) {
      const family = { dir, models: new Map<number, ReferenceModel>([[this.config.parscaleN, this as ReferenceModel]]) };
      // the backbone alone is always there: the same arrays without prefixes and aggregation
      if (this.config.parscaleN > 1) family.models.set(1, new ReferenceModel(backboneConfig(this.config), streamSetWeights(this.weights, null)));
      for (const model of family.models.values()) model.family = family;
    }
    return this.family!;
  }

  newSequence(): ReferenceCache {
    return new ReferenceCache(this.config, this.weights);
  }

  dispose(): void {}

  /**
   * Run `tokens` through the model at positions cache.length .. cache.length + n − 1.
   * A prompt (prefill) and a single decode step are the same code: n rows per stream.
   */
  forward(state: SequenceState, tokens: readonly number[], options: ForwardOptions = {}): ForwardResult {
    const cache = state as ReferenceCache;
    const c = this.config;
    const w = this.weights;
    const H = c.hiddenSize;
    const I = c.intermediateSize;
    const d = c.headDim;
    const qDim = c.numHeads * d; //   all query heads of one row
    const kvDim = c.numKvHeads * d; // all key/value heads of one row
    const P = c.parscaleN;
    const n = tokens.length;
    const rows = P * n; // activations are (P, n, ·): row p·n + t is stream p at chunk position t
    const start = cache.length; // position of tokens[0]
    for (const token of tokens) {
      if (!Number.isInteger(token) || token < 0 || token >= c.vocabSize) {
        throw new RangeError(`token id ${token} is outside the vocabulary [0, ${c.vocabSize})`);
      }
    }
    cache.reserve(n);

    const x = new Float32Array(rows * H); //      residual stream
    const xb = new Float32Array(rows * H); //     normed input of a sub-block
    const q = new Float32Array(rows * qDim);
    const k = new Float32Array(rows * kvDim);
    const v = new Float32Array(rows * kvDim);
    const heads = new Float32Array(rows * qDim); // attention output, all heads concatenated
    const delta = new Float32Array(rows * H); //  what a sub-block adds to the residual
    const gate = new Float32Array(rows * I);
    const up = new Float32Array(rows * I);
    const scores = new Float32Array(cache.prefixLength + start + n);

    // 1. Embedding, copied to every stream (ParScale: the streams differ only by their prefixes).
    for (let p = 0; p < P; p++) {
      for (let t = 0; t < n; t++) {
        x.set(w.embedTokens.subarray(tokens[t] * H, (tokens[t] + 1) * H), (p * n + t) * H);
      }
    }

    // 2. The decoder layers; each stream runs independently of the others.
    for (let l = 0; l < c.numLayers; l++) {
      const layer = w.layers[l];

      // attention rmsnorm, then the q/k/v projections (with bias) for all rows at once
      rmsnorm(xb, x, layer.inputNorm, c.rmsNormEps, rows, H);
      matmul(q, xb, layer.qWeight, layer.qBias, rows, H, qDim);
      matmul(k, xb, layer.kWeight, layer.kBias, rows, H, kvDim);
      matmul(v, xb, layer.vWeight, layer.vBias, rows, H, kvDim);

      for (let p = 0; p < P; p++) {
        const keys = cache.keys[l][p]; //     (nKV, capacity, d)
        const values = cache.values[l][p]; // (nKV, capacity, d)
        for (let t = 0; t < n; t++) {
          const row = p * n + t;
          const position = start + t; // the first real token has position 0, whatever the prefix
          // RoPE on the real token's query and key; prefix entries are never rotated.
          rope(q, row * qDim, c.numHeads, d, position, this.freqs);
          rope(k, row * kvDim, c.numKvHeads, d, position, this.freqs);
          // append this token's key/value after the prefix and the earlier tokens
          const slot = cache.prefixLength + position;
          for (let kv = 0; kv < c.numKvHeads; kv++) {
            const to = (kv * cache.capacity + slot) * d;
            keys.set(k.subarray(row * kvDim + kv * d, row * kvDim + (kv + 1) * d), to);
            values.set(v.subarray(row * kvDim + kv * d, row * kvDim + (kv + 1) * d), to);
          }
          // causal: this query sees the T prefix entries and real tokens 0..position
          const visible = slot + 1;
          const out = heads.subarray(row * qDim, (row + 1) * qDim);
          attention(out, q, row * qDim, keys, values, visible, cache.capacity, c.numHeads, c.numKvHeads, d, scores);
        }
      }

      // output projection and residual
      matmul(delta, heads, layer.oWeight, null, rows, qDim, H);
      for (let i = 0; i < rows * H; i++) x[i] += delta[i];

      // ffn rmsnorm, SwiGLU MLP and residual: x += down(silu(gate(b)) · up(b))
      rmsnorm(xb, x, layer.postAttentionNorm, c.rmsNormEps, rows, H);
      matmul(gate, xb, layer.gateWeight, null, rows, H, I);
      matmul(up, xb, layer.upWeight, null, rows, H, I);
      swiglu(gate, gate, up, rows * I);
      matmul(delta, gate, layer.downWeight, null, rows, I, H);
      for (let i = 0; i < rows * H; i++) x[i] += delta[i];
    }
    cache.length = start + n;

    // 3. Final norm, per stream (before aggregation).
    rmsnorm(x, x, w.norm, c.rmsNormEps, rows, H);

    // 4. ParScale output aggregation, 5. LM head: only for the positions asked for.
    const result: ForwardResult = { logits: [] };
    if (options.hidden) {
      result.streamHidden = [];
      if (P > 1) result.aggregationWeights = [];
    }
    const first = options.allLogits || options.hidden ? 0 : n - 1;
    const streams = new Float32Array(P * H); // (P, H): one position's final hidden states
    const y = new Float32Array(H);
    const aggregationScratch = new Float32Array(P * H + H);
    for (let t = first; t < n; t++) {
      for (let p = 0; p < P; p++) streams.set(x.subarray((p * n + t) * H, (p * n + t + 1) * H), p * H);
      let weights: Float32Array | null = null;
      if (w.aggregation !== null) {
        const a = w.aggregation;
        weights = new Float32Array(P);
        aggregate(y, weights, streams, a.w0, a.b0, a.w2, a.b2, c.parscaleAttnSmooth, P, H, aggregationScratch);
      } else {
        y.set(streams);
      }
      if (options.hidden) {
        result.streamHidden!.push(streams.slice());
        if (weights !== null) result.aggregationWeights!.push(weights);
      }
      if (options.allLogits || t === n - 1) {
        const logits = new Float32Array(c.vocabSize);
        matmul(logits, y, w.lmHead, null, 1, H, c.vocabSize);
        result.logits.push(logits);
      }
    }
    return result;
  }
}
