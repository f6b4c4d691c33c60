// The fast backend: the same forward pass as src/reference/model.ts, step for step, with every
// array living in the WebAssembly kernels' shared memory and the large products split over a
// pool of worker threads. Read the reference first; the comments here only explain what differs.
//
// - Matrix weights stay in their stored width (bf16, f16 or f32) and are widened in registers, so
//   a decode step reads every weight byte exactly once for all P streams.
// - Everything is allocated once, at load: weights, activations for a chunk of up to `maxChunk`
//   prompt tokens (longer prompts run chunk by chunk), and the KV cache for `maxContext`
//   positions. The memory never grows during inference.
// - One sequence at a time: newSequence() starts over in the same cache, and any older sequence
//   object stops working (it says so instead of returning wrong logits).
// - Dynamic P: every stream set of the checkpoint is loaded too, and withStreams(P) returns a view
//   that shares the backbone, buffers, cache and threads and differs only in its config, prefixes
//   and aggregation layer. Buffers and the cache are sized for the largest P and prefix length.
import { availableParallelism } from 'node:os';
import type { ForwardOptions, ForwardResult, LanguageModel, SequenceState } from '../backend.ts';
import type { ModelConfig } from '../checkpoint/config.ts';
import { type Checkpoint, type RawTensor, tensorToFloat32 } from '../checkpoint/load.ts';
import { availableStreamCounts, backboneConfig, unknownStreamCountError } from '../checkpoint/stream-sets.ts';
import { f16ToFloat } from '../checkpoint/safetensors.ts';
import { ropeFrequencies } from '../reference/kernels.ts';
import { type Ptr, type WeightFormat, WasmKernels } from './kernels.ts';
import { KernelPool } from './pool.ts';

export interface WasmModelOptions {
  /** Threads for the matrix products (default: the available cores). */
  threads?: number;
  /** Positions the KV cache holds (default: max_position_embeddings, at most 4096). */
  maxContext?: number;
  /** Prompt tokens processed per pass (default 64): bounds the activation memory. */
  maxChunk?: number;
}

interface Matrix {
  ptr: Ptr;
  format: WeightFormat;
}

interface WasmLayer {
  inputNorm: Ptr;
  q: Matrix;
  qBias: Ptr;
  k: Matrix;
  kBias: Ptr;
  v: Matrix;
  vBias: Ptr;
  o: Matrix;
  postAttentionNorm: Ptr;
  gate: Matrix;
  up: Matrix;
  down: Matrix;
  /** [P, nKV, T, d] as float32, copied into each new sequence's cache */
  prefixKeys: Float32Array | null;
  prefixValues: Float32Array | null;
}

/** f32 multiply-adds per iteration of assembly's madd_peak (see its contract comment) */
const MADD_PER_ITERATION = 48; // twelve f32x4 accumulators, one mul + one add each

const FORMAT: Record<RawTensor['dtype'], WeightFormat> = { F32: 'f32', BF16: 'bf16', F16: 'f16' };

type Aggregation = { w0: Matrix; b0: Ptr; w2: Matrix; b2: Ptr };

/** What all stream-count views of one loaded backbone share besides the memory. */
interface Shared {
  /** the id of the one live sequence (any view) */
  sequenceId: number;
  disposed: boolean;
  dir: string;
  /** the view of each P */
  views: Map<number, WasmModel>;
}

class WasmSequence implements SequenceState {
  length = 0;
  constructor(
    readonly model: WasmModel,
    readonly id: number,
  ) {}
}

export class WasmModel implements LanguageModel {
  readonly backend = 'wasm';

  private constructor(
    readonly config: ModelConfig,
    private readonly kernels: WasmKernels,
    private readonly pool: KernelPool,
    private readonly layers: WasmLayer[],
    private readonly embed: Matrix,
    private readonly lmHead: Matrix,
    private readonly finalNorm: Ptr,
    private readonly aggregation: Aggregation | null,
    private readonly freqs: Ptr,
    /** where the weights start in the kernels' memory (they are contiguous) */
    private readonly weightsStart: Ptr,
    readonly maxContext: number,
    readonly maxChunk: number,
    private readonly buffers: Record<'x' | 'xb' | 'q' | 'k' | 'v' | 'heads' | 'delta' | 'gate' | 'up' | 'scores' | 'streams' | 'y' | 'aggWeights' | 'aggScratch' | 'logits', Ptr>,
    /** [layer][stream] keys and values, each (nKV, T + maxContext, d) */
    private readonly cacheKeys: Ptr[][],
    private readonly cacheValues: Ptr[][],
    /** bytes of weights a forward pass of this P reads (the backbone + this aggregation layer) */
    readonly weightBytes: number,
    private readonly shared: Shared,
  ) {}

  get streamSets(): number[] {
    return availableStreamCounts(this.config, [...this.shared.views.keys()].map((P) => ({ P })));
  }

  withStreams(P: number): WasmModel {
    const view = this.shared.views.get(P);
    if (view === undefined) throw unknownStreamCountError(this.shared.dir, P, this.streamSets);
    return view;
  }

  get threads(): number {
    return this.pool.threads;
  }

  /** Bytes of WebAssembly memory in use: weights, activations and the KV cache. */
  get memoryBytes(): number {
    return this.kernels.bytesAllocated;
  }

  static async fromCheckpoint(checkpoint: Checkpoint, options: WasmModelOptions = {}): Promise<WasmModel> {
    const { config, tensors } = checkpoint;
    const H = config.hiddenSize;
    const I = config.intermediateSize;
    const d = config.headDim;
    // Dynamic P: one view per stream count; the buffers and cache fit the largest P and T.
    const choices: { config: ModelConfig; tensors: Map<string, RawTensor> | null }[] = [
      { config, tensors: config.parscaleN > 1 ? tensors : null },
      ...(config.parscaleN > 1 ? [{ config: backboneConfig(config), tensors: null }] : []),
      ...checkpoint.streamSets.map((set) => ({ config: set.config, tensors: set.tensors })),
    ];
    const P = Math.max(...choices.map((choice) => choice.config.parscaleN));
    const T = Math.max(...choices.map((choice) => (choice.config.parscaleN > 1 ? choice.config.parscaleNTokens : 0)));
    const streamSetBytes = checkpoint.streamSets.reduce((sum, set) => sum + set.weightBytes, 0);
    const qDim = config.numHeads * d;
    const kvDim = config.numKvHeads * d;
    const maxContext = options.maxContext ?? Math.min(config.maxPositionEmbeddings, 4096);
    const maxChunk = Math.max(1, Math.min(options.maxChunk ?? 64, maxContext));
    const threads = options.threads ?? availableParallelism();
    if (!Number.isInteger(maxContext) || maxContext < 1) throw new RangeError(`maxContext must be a positive integer, got ${maxContext}`);

    // Check the whole budget before copying anything: wasm32 addresses at most 4 GiB.
    const rows = P * maxChunk;
    const capacity = T + maxContext;
    const activationFloats = rows * (3 * H + 2 * qDim + 2 * kvDim + 2 * I) + capacity + P * H + H + P + P * H + H + config.vocabSize;
    const cacheFloats = 2 * config.numLayers * P * config.numKvHeads * capacity * d;
    const budget = checkpoint.weightBytes + streamSetBytes + 4 * (activationFloats + cacheFloats) + (1 << 20);
    const limit = 4 * 2 ** 30 - (16 << 20);
    if (budget > limit) {
      const gib = (x: number) => (x / 2 ** 30).toFixed(2);
      throw new RangeError(
        `this model needs ${gib(budget)} GiB in one WebAssembly memory (weights ${gib(checkpoint.weightBytes + streamSetBytes)} GiB + KV cache for ` +
          `${maxContext} positions ${gib(4 * cacheFloats)} GiB), over the 4 GiB a wasm32 memory can address; ` +
          `use a smaller maxContext (--max-context) or the reference backend`,
      );
    }

    const kernels = new WasmKernels({ initialPages: Math.ceil(budget / 65536) + 16 });
    const bytes = kernels.memory.buffer;
    const weightsStart = kernels.mark();
    const matrix = (name: string, from = tensors): Matrix => {
      const tensor = from.get(name)!;
      const ptr = kernels.alloc(tensor.data.byteLength);
      new Uint8Array(bytes, ptr, tensor.data.byteLength).set(tensor.data);
      return { ptr, format: FORMAT[tensor.dtype] };
    };
    const vector = (name: string, from = tensors): Ptr => kernels.f32(tensorToFloat32(from.get(name)!)).ptr;
    const layers: WasmLayer[] = [];
    for (let i = 0; i < config.numLayers; i++) {
      const p = `model.layers.${i}`;
      layers.push({
        inputNorm: vector(`${p}.input_layernorm.weight`),
        q: matrix(`${p}.self_attn.q_proj.weight`),
        qBias: vector(`${p}.self_attn.q_proj.bias`),
        k: matrix(`${p}.self_attn.k_proj.weight`),
        kBias: vector(`${p}.self_attn.k_proj.bias`),
        v: matrix(`${p}.self_attn.v_proj.weight`),
        vBias: vector(`${p}.self_attn.v_proj.bias`),
        o: matrix(`${p}.self_attn.o_proj.weight`),
        postAttentionNorm: vector(`${p}.post_attention_layernorm.weight`),
        gate: matrix(`${p}.mlp.gate_proj.weight`),
        up: matrix(`${p}.mlp.up_proj.weight`),
        down: matrix(`${p}.mlp.down_proj.weight`),
        prefixKeys: null, // per stream count, below
        prefixValues: null,
      });
    }
    const embed = matrix('model.embed_tokens.weight');
    const lmHead = config.tieWordEmbeddings ? embed : matrix('lm_head.weight');
    const backboneBytes = kernels.mark() - weightsStart;
    const aggregationOf = (from: Map<string, RawTensor>): Aggregation => {
      let w0 = matrix('model.aggregate_layer.0.weight', from);
      let w2 = matrix('model.aggregate_layer.2.weight', from);
      // the kernel takes both aggregation matrices in one format; mixed files get f32 copies
      if (w0.format !== w2.format) {
        w0 = { ptr: vector('model.aggregate_layer.0.weight', from), format: 'f32' };
        w2 = { ptr: vector('model.aggregate_layer.2.weight', from), format: 'f32' };
      }
      return { w0, b0: vector('model.aggregate_layer.0.bias', from), w2, b2: vector('model.aggregate_layer.2.bias', from) };
    };
    // each stream count's prefixes (float32, copied into a new sequence's cache) and aggregation
    const streams = choices.map(({ config: viewConfig, tensors: from }) => {
      const before = kernels.mark();
      const aggregation = from === null ? null : aggregationOf(from);
      const prefix = (l: number, kv: 'k' | 'v') => (from === null ? null : tensorToFloat32(from.get(`model.layers.${l}.self_attn.prefix_${kv}`)!));
      return {
        config: viewConfig,
        layers: layers.map((layer, l) => ({ ...layer, prefixKeys: prefix(l, 'k'), prefixValues: prefix(l, 'v') })),
        aggregation,
        weightBytes: backboneBytes + (kernels.mark() - before),
      };
    });
    const finalNorm = vector('model.norm.weight');
    const freqs = kernels.f32(ropeFrequencies(d, config.ropeTheta)).ptr;
    const scratch = (floats: number) => kernels.f32(floats).ptr;
    const buffers = {
      x: scratch(rows * H), //             residual stream, (P, n, H)
      xb: scratch(rows * H),
      q: scratch(rows * qDim),
      k: scratch(rows * kvDim),
      v: scratch(rows * kvDim),
      heads: scratch(rows * qDim),
      delta: scratch(rows * H),
      gate: scratch(rows * I),
      up: scratch(rows * I),
      scores: scratch(capacity),
      streams: scratch(P * H), //         one position's P final hidden states
      y: scratch(H),
      aggWeights: scratch(P),
      aggScratch: scratch(P * H + H),
      logits: scratch(config.vocabSize),
    };
    const cacheKeys: Ptr[][] = [];
    const cacheValues: Ptr[][] = [];
    for (let l = 0; l < config.numLayers; l++) {
      cacheKeys.push(Array.from({ length: P }, () => scratch(config.numKvHeads * capacity * d)));
      cacheValues.push(Array.from({ length: P }, () => scratch(config.numKvHeads * capacity * d)));
    }
    const pool = await KernelPool.create(kernels, threads);
    const shared: Shared = { sequenceId: 0, disposed: false, dir: checkpoint.dir, views: new Map() };
    for (const view of streams) {
      const viewP = view.config.parscaleN;
      const model = new WasmModel(
        view.config, kernels, pool, view.layers, embed, lmHead, finalNorm, view.aggregation, freqs, weightsStart, maxContext, maxChunk, buffers,
        cacheKeys.map((perStream) => perStream.slice(0, viewP)),
        cacheValues.map((perStream) => perStream.slice(0, viewP)),
        view.weightBytes,
        shared,
      );
      shared.views.set(viewP, model);
    }
    return shared.views.get(config.parscaleN)!;
  }

  /**
   * The rooflines the benchmark compares against, measured on this machine now: bytes/s of a
   * plain v128 read loop over the model's own weights (the same bytes a decode step must read;
   * one thread), and f32 multiply-adds/s of a register-only loop (one thread).
   */
  measureRooflines(): { readBytesPerSecond: number; maddPerSecond: number } {
    // Best of several calls: V8 first runs wasm in its baseline compiler and swaps in optimised
    // code only for later calls, so a single long call would measure the baseline code.
    const e = this.kernels.exports;
    const best = (calls: number, run: () => void, work: number) => {
      let rate = 0;
      for (let i = 0; i < calls; i++) {
        const started = performance.now();
        run();
        rate = Math.max(rate, work / ((performance.now() - started) / 1000));
      }
      return rate;
    };
    const readBytesPerSecond = best(5, () => e.read_bandwidth(this.weightsStart, this.weightBytes), this.weightBytes);
    const iterations = 2_000_000;
    const maddPerSecond = best(20, () => e.madd_peak(iterations), iterations * MADD_PER_ITERATION);
    return { readBytesPerSecond, maddPerSecond };
  }

  newSequence(): SequenceState {
    this.assertUsable();
    const P = this.config.parscaleN;
    const T = P > 1 ? this.config.parscaleNTokens : 0;
    const { numKvHeads, headDim: d } = this.config;
    const capacity = T + this.maxContext;
    // ParScale: every stream's cache starts as its own prefix (never rotated, not a position)
    this.layers.forEach((layer, l) => {
      if (layer.prefixKeys === null || layer.prefixValues === null) return;
      for (let p = 0; p < P; p++) {
        for (let kv = 0; kv < numKvHeads; kv++) {
          const from = (p * numKvHeads + kv) * T * d;
          this.view(this.cacheKeys[l][p] + kv * capacity * d * 4, T * d).set(layer.prefixKeys.subarray(from, from + T * d));
          this.view(this.cacheValues[l][p] + kv * capacity * d * 4, T * d).set(layer.prefixValues.subarray(from, from + T * d));
        }
      }
    });
    return new WasmSequence(this, ++this.shared.sequenceId);
  }

  /** Frees the memory and threads of every stream-count view of this backbone. */
  dispose(): void {
    if (this.shared.disposed) return;
    this.shared.disposed = true;
    void this.pool.close();
  }

  forward(state: SequenceState, tokens: readonly number[], options: ForwardOptions = {}): ForwardResult {
    this.assertUsable();
    const sequence = state as WasmSequence;
    if (sequence instanceof WasmSequence && sequence.model !== this && sequence.model.shared === this.shared) {
      throw new Error(`this sequence was made with P = ${sequence.model.config.parscaleN} streams; run it with that model (withStreams(${sequence.model.config.parscaleN})), not P = ${this.config.parscaleN}`);
    }
    if (!(sequence instanceof WasmSequence) || sequence.model !== this || sequence.id !== this.shared.sequenceId) {
      throw new Error('this sequence is no longer valid: the wasm backend holds one sequence at a time, and newSequence() was called since');
    }
    const c = this.config;
    for (const token of tokens) {
      if (!Number.isInteger(token) || token < 0 || token >= c.vocabSize) throw new RangeError(`token id ${token} is outside the vocabulary [0, ${c.vocabSize})`);
    }
    if (sequence.length + tokens.length > this.maxContext) {
      throw new RangeError(`the sequence would reach ${sequence.length + tokens.length} tokens, more than this model's KV cache holds (${this.maxContext}; see maxContext)`);
    }
    const result: ForwardResult = { logits: [] };
    if (options.hidden) {
      result.streamHidden = [];
      if (c.parscaleN > 1) result.aggregationWeights = [];
    }
    for (let start = 0; start < tokens.length; start += this.maxChunk) {
      const chunk = tokens.slice(start, start + this.maxChunk);
      const last = start + chunk.length === tokens.length;
      this.forwardChunk(sequence, chunk, options, last, result);
    }
    return result;
  }

  /** The reference forward for one chunk (see src/reference/model.ts for each step). */
  private forwardChunk(sequence: WasmSequence, tokens: readonly number[], options: ForwardOptions, lastChunk: boolean, result: ForwardResult): void {
    const c = this.config;
    const b = this.buffers;
    const k = this.kernels;
    const pool = this.pool;
    const H = c.hiddenSize;
    const I = c.intermediateSize;
    const d = c.headDim;
    const qDim = c.numHeads * d;
    const kvDim = c.numKvHeads * d;
    const P = c.parscaleN;
    const T = P > 1 ? c.parscaleNTokens : 0;
    const capacity = T + this.maxContext;
    const n = tokens.length;
    const rows = P * n;
    const start = sequence.length;

    // 1. embedding, copied to every stream
    const x = this.view(b.x, rows * H);
    for (let t = 0; t < n; t++) {
      const row = this.embeddingRow(tokens[t]);
      for (let p = 0; p < P; p++) x.set(row, (p * n + t) * H);
    }

    // 2. the layers
    const keysView = this.view(b.k, rows * kvDim);
    const valuesView = this.view(b.v, rows * kvDim);
    const delta = this.view(b.delta, rows * H);
    for (let l = 0; l < c.numLayers; l++) {
      const layer = this.layers[l];
      k.rmsnorm(b.xb, b.x, layer.inputNorm, c.rmsNormEps, rows, H);
      pool.matmul(layer.q.format, b.q, b.xb, layer.q.ptr, layer.qBias, rows, H, qDim);
      pool.matmul(layer.k.format, b.k, b.xb, layer.k.ptr, layer.kBias, rows, H, kvDim);
      pool.matmul(layer.v.format, b.v, b.xb, layer.v.ptr, layer.vBias, rows, H, kvDim);
      for (let p = 0; p < P; p++) {
        const keys = this.cacheKeys[l][p];
        const values = this.cacheValues[l][p];
        for (let t = 0; t < n; t++) {
          const row = p * n + t;
          const position = start + t;
          k.rope(b.q, row * qDim, c.numHeads, d, position, this.freqs);
          k.rope(b.k, row * kvDim, c.numKvHeads, d, position, this.freqs);
          const slot = T + position;
          for (let kv = 0; kv < c.numKvHeads; kv++) {
            const to = (kv * capacity + slot) * d * 4;
            this.view(keys + to, d).set(keysView.subarray(row * kvDim + kv * d, row * kvDim + (kv + 1) * d));
            this.view(values + to, d).set(valuesView.subarray(row * kvDim + kv * d, row * kvDim + (kv + 1) * d));
          }
          k.attention(b.heads + row * qDim * 4, b.q, row * qDim, keys, values, slot + 1, capacity, c.numHeads, c.numKvHeads, d, b.scores);
        }
      }
      pool.matmul(layer.o.format, b.delta, b.heads, layer.o.ptr, null, rows, qDim, H);
      for (let i = 0; i < rows * H; i++) x[i] += delta[i];
      k.rmsnorm(b.xb, b.x, layer.postAttentionNorm, c.rmsNormEps, rows, H);
      pool.matmul(layer.gate.format, b.gate, b.xb, layer.gate.ptr, null, rows, H, I);
      pool.matmul(layer.up.format, b.up, b.xb, layer.up.ptr, null, rows, H, I);
      k.swiglu(b.gate, b.gate, b.up, rows * I);
      pool.matmul(layer.down.format, b.delta, b.gate, layer.down.ptr, null, rows, I, H);
      for (let i = 0; i < rows * H; i++) x[i] += delta[i];
    }
    sequence.length = start + n;

    // 3. final norm per stream; 4. aggregation; 5. LM head, once per position asked for
    k.rmsnorm(b.x, b.x, this.finalNorm, c.rmsNormEps, rows, H);
    const streams = this.view(b.streams, P * H);
    const first = options.allLogits || options.hidden ? 0 : n - 1;
    for (let t = first; t < n; t++) {
      for (let p = 0; p < P; p++) streams.set(x.subarray((p * n + t) * H, (p * n + t + 1) * H), p * H);
      let output = b.streams; // with P = 1 the only stream is the output
      if (this.aggregation !== null) {
        const a = this.aggregation;
        k.aggregate(a.w0.format, b.y, b.aggWeights, b.streams, a.w0.ptr, a.b0, a.w2.ptr, a.b2, c.parscaleAttnSmooth, P, H, b.aggScratch);
        output = b.y;
      }
      if (options.hidden) {
        result.streamHidden!.push(streams.slice());
        if (this.aggregation !== null) result.aggregationWeights!.push(this.view(b.aggWeights, P).slice());
      }
      if (options.allLogits || (lastChunk && t === n - 1)) {
        pool.matmul(this.lmHead.format, b.logits, output, this.lmHead.ptr, null, 1, H, c.vocabSize);
        result.logits.push(this.view(b.logits, c.vocabSize).slice());
      }
    }
  }

  /** One embedding row as float32 (the table stays in its stored width). */
  private embeddingRow(token: number): Float32Array {
    const H = this.config.hiddenSize;
    const { ptr, format } = this.embed;
    if (format === 'f32') return this.view(ptr + token * H * 4, H);
    const raw = new Uint16Array(this.kernels.memory.buffer, ptr + token * H * 2, H);
    const row = new Float32Array(H);
    if (format === 'bf16') {
      const bits = new Uint32Array(row.buffer);
      for (let j = 0; j < H; j++) bits[j] = raw[j] << 16;
    } else {
      for (let j = 0; j < H; j++) row[j] = f16ToFloat(raw[j]);
    }
    return row;
  }

  private view(ptr: Ptr, length: number): Float32Array {
    return new Float32Array(this.kernels.memory.buffer, ptr, length);
  }

  private assertUsable(): void {
    if (this.shared.disposed) throw new Error('this model was disposed');
  }
}
