// The fast backend: the same forward pass as src/reference/model.ts, step for step, with every
// array living in the WebAssembly kernels' shared memory and the large products split over a
// pool of worker threads. Read the reference first; the comments here only explain what differs.
//
// - Matrix weights stay in their stored width (bf16, f16 or f32) and are widened in registers, so
//   a decode step reads every weight byte exactly once for all P streams. bf16 matrices are put
//   into paired order at load (each block of 8 weights reordered so one load widens in two
//   instructions; the same bits, see BF16P in assembly/kernels.ts). With `weights: 'int8'`
//   the large matrices are quantized at load instead (src/reference/q8.ts; which tensors: plan.ts).
// - Loading streams: the WebAssembly memory is sized from the headers alone (plan.ts checks the
//   budget before any weight is read), then each tensor is read straight into its place, or
//   quantized / widened piece by piece as it arrives, so no second copy of the weights exists.
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
import { type ModelConfig, expectedTensors } from '../checkpoint/config.ts';
import { type Checkpoint, type LoadOptions, type TensorDestination, openCheckpoint, pieceBytes, readTensorsInto } from '../checkpoint/load.ts';
import { type DType, DTYPE_BYTES, bytesToFloat32, f16ToFloat } from '../checkpoint/safetensors.ts';
import { availableStreamCounts, backboneConfig, expectedStreamTensors, unknownStreamCountError } from '../checkpoint/stream-sets.ts';
import { ropeFrequencies } from '../reference/kernels.ts';
import { q8Groups, quantizeRowsQ8 } from '../reference/q8.ts';
import { type KernelBuild, type Ptr, type WeightFormat, type WeightMatrix, WasmKernels } from './kernels.ts';
import { type WeightsChoice, WEIGHT_CHOICES, checkWasmMemory, placementOf, plannedStreamSets } from './plan.ts';
import { ATTENTION_JOB_INTS, KernelPool } from './pool.ts';

export interface WasmModelOptions {
  /** Threads for the matrix products (default: the available cores). */
  threads?: number;
  /** Positions the KV cache holds (default: max_position_embeddings, at most 4096). */
  maxContext?: number;
  /** Prompt tokens processed per pass (default 64): bounds the activation memory. */
  maxChunk?: number;
  /**
   * How the large matrices are kept: "stored" (default: their stored bf16/f16/f32, exact) or
   * "int8" (quantized at load with a bf16 scale per 32 inputs: about half the memory of bf16 and
   * fewer bytes to read per token, at a small accuracy cost; see docs/performance.md).
   */
  weights?: WeightsChoice;
}

type Matrix = WeightMatrix;

/** What the loader must know of a tensor before its bytes arrive. */
interface TensorLayout {
  name: string;
  dtype: DType;
  shape: number[];
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

/** What measureRooflines returns: the machine's limits, measured now with this model's kernels. */
export interface Rooflines {
  /** bytes/s of a plain v128 read loop over the weights: one thread, and all threads each reading a share */
  readBytesPerSecond: number;
  readBytesPerSecondAllThreads: number;
  /** f32 multiply-adds/s of a register-only loop of mul then add (madd_peak): one thread, all threads at once */
  maddPerSecond: number;
  maddPerSecondAllThreads: number;
  /** the same with the products' own multiply-add (fma_peak: fused in the relaxed-SIMD build, else = madd) */
  fmaPerSecond: number;
  fmaPerSecondAllThreads: number;
  /** which build of the kernels ran */
  kernelBuild: KernelBuild;
}

/** Bytes between the threads' attention scores scratches: capacity floats, 16-byte aligned. */
const scoresStrideBytes = (capacity: number) => Math.ceil((capacity * 4) / 16) * 16;

/** f32 multiply-adds per iteration of assembly's madd_peak (see its contract comment) */
const MADD_PER_ITERATION = 48; // twelve f32x4 accumulators, one mul + one add each

const FORMAT: Record<DType, WeightFormat> = { F32: 'f32', BF16: 'bf16', F16: 'f16' };

/** The aggregation layer: both matrices in one stored format (never int8), or both float32. */
type Aggregation = { w0: Matrix & { format: WeightFormat }; b0: Ptr; w2: Matrix & { format: WeightFormat }; b2: Ptr };

/** Where one part's tensors (the backbone's, or a stream set's) were placed, by name. */
interface PlacedTensors {
  matrices: Map<string, Matrix>;
  vectors: Map<string, Ptr>;
  /** the prefixes, float32 outside the WebAssembly memory */
  host: Map<string, Float32Array>;
  /** bytes of the WebAssembly memory its aggregation layer takes (0 without one) */
  aggregationBytes: number;
}

/** What all stream-count views of one loaded backbone share besides the memory. */
interface Shared {
  /** the id of the one live sequence (any view) */
  sequenceId: number;
  disposed: boolean;
  dir: string;
  /** the view of each P */
  views: Map<number, WasmModel>;
  /** bytes of weights held in the kernels' memory: the backbone and every stream set */
  weightBytes: number;
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
    private readonly buffers: Record<'x' | 'xb' | 'q' | 'k' | 'v' | 'heads' | 'delta' | 'gate' | 'up' | 'scores' | 'streams' | 'y' | 'aggWeights' | 'aggScratch' | 'logits' | 'embedRow' | 'attentionJobs', Ptr>,
    /** [layer][stream] keys and values, each (nKV, T + maxContext, d) */
    private readonly cacheKeys: Ptr[][],
    private readonly cacheValues: Ptr[][],
    /** bytes of weights a forward pass of this P reads (the backbone + this aggregation layer) */
    readonly weightBytes: number,
    /** how the large matrices are kept */
    readonly weights: WeightsChoice,
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

  /** Bytes of WebAssembly memory in use: weights (every stream set's too), activations and the KV cache. */
  get memoryBytes(): number {
    return this.kernels.bytesAllocated;
  }

  /** Bytes of weights held in the WebAssembly memory, shared by every P: the backbone and every stream set. */
  get loadedWeightBytes(): number {
    return this.shared.weightBytes;
  }

  /**
   * Load the checkpoint in folder `dir` straight into the WebAssembly memory: headers checked (the
   * backbone's and every stream set's) and the memory budget checked first, then every tensor read
   * once into its place (quantized on the way with weights 'int8'; the stream sets stay as stored).
   * Errors as loadCheckpoint's, plus a WasmMemoryError when it cannot fit. Returns the view of the
   * folder's own P; withStreams(P) gives the others.
   */
  static async load(dir: string, options: WasmModelOptions & LoadOptions = {}): Promise<WasmModel> {
    const opened = openCheckpoint(dir);
    const streamSets = opened.streamSets.map((set) => ({ config: set.config, tensors: [...set.tensors.values()] }));
    return WasmModel.build(opened.dir, opened.config, [...opened.tensors.values()], streamSets, (destinationFor) => readTensorsInto(opened, destinationFor, options), options);
  }

  /** The same model from a checkpoint already in memory (loadCheckpoint), its stream sets included. */
  static async fromCheckpoint(checkpoint: Checkpoint, options: WasmModelOptions = {}): Promise<WasmModel> {
    const tensors = [...checkpoint.tensors.values()];
    const streamSets = checkpoint.streamSets.map((set) => ({ config: set.config, tensors: [...set.tensors.values()] }));
    return WasmModel.build(checkpoint.dir, checkpoint.config, tensors, streamSets, async (destinationFor) => {
      for (const tensor of [...tensors, ...streamSets.flatMap((set) => set.tensors)]) {
        const destination = destinationFor(tensor);
        if (destination instanceof Uint8Array) {
          destination.set(tensor.data);
          continue;
        }
        // the same pieces of whole rows the file reader would hand over
        const rowBytes = (tensor.shape.at(-1) ?? 1) * DTYPE_BYTES[tensor.dtype];
        const step = pieceBytes({ ...tensor, byteLength: tensor.data.byteLength });
        for (let done = 0; done < tensor.data.byteLength; done += step) {
          const piece = tensor.data.subarray(done, Math.min(done + step, tensor.data.byteLength));
          if (destination.scratch !== undefined) destination.scratch.set(piece);
          destination.write(destination.scratch?.subarray(0, piece.byteLength) ?? piece, done / rowBytes, piece.byteLength / rowBytes);
        }
      }
    }, options);
  }

  /**
   * Reserve every tensor's place — the backbone's, then each stream set's — then let `fill` stream
   * the data in, handing each tensor (the very objects of `backbone` and of the stream sets'
   * `tensors`: names repeat across stream sets) to `destinationFor`. Then one view per P.
   */
  private static async build(
    dir: string,
    config: ModelConfig,
    backbone: readonly TensorLayout[],
    streamSets: readonly { config: ModelConfig; tensors: readonly TensorLayout[] }[],
    fill: (destinationFor: (tensor: TensorLayout) => TensorDestination) => Promise<void>,
    options: WasmModelOptions,
  ): Promise<WasmModel> {
    const H = config.hiddenSize;
    const I = config.intermediateSize;
    const d = config.headDim;
    const qDim = config.numHeads * d;
    const kvDim = config.numKvHeads * d;
    const threads = options.threads ?? availableParallelism();
    const weights = options.weights ?? 'stored';
    if (!(WEIGHT_CHOICES as readonly string[]).includes(weights)) throw new RangeError(`weights must be one of ${WEIGHT_CHOICES.join(', ')}, got "${weights}"`);
    const byName = new Map(backbone.map((t) => [t.name, t]));
    const sets = streamSets.map((set) => ({ config: set.config, byName: new Map(set.tensors.map((t) => [t.name, t])) }));

    // Check the whole budget before reading anything: wasm32 addresses at most 4 GiB. Dynamic P: the
    // plan counts every stream set, and sizes the buffers and the cache for the largest P and T.
    const plan = checkWasmMemory(config, (name) => byName.get(name)!.dtype, {
      weights,
      maxContext: options.maxContext,
      maxChunk: options.maxChunk,
      threads,
      streamSets: plannedStreamSets(sets.map((set) => ({ config: set.config, tensors: set.byName }))),
    });
    const { maxContext, maxChunk, streams: P, prefixTokens: T } = plan;
    const rows = P * maxChunk;
    const capacity = T + maxContext;

    // Reserve every tensor's place (contiguous, in config order), then stream the data into it.
    const kernels = new WasmKernels({ initialPages: Math.ceil(plan.totalBytes / 65536) + 16 });
    const memory = kernels.memory.buffer;
    // the threads quantize at load already
    const pool = await KernelPool.create(kernels, threads, weights === 'int8' ? Math.max(H, I, qDim) : 0);
    try {
      const weightsStart = kernels.mark();
      // where each tensor's bytes go, by its layout object (names repeat across stream sets)
      const destinations = new Map<TensorLayout, (scratch: Uint8Array) => TensorDestination>();
      let scratchBytes = 0; // the largest piece to quantize
      /** Reserve the places of one part's tensors: the backbone's (with the folder's own streams) or a stream set's. */
      const place = (expected: Map<string, number[]>, partConfig: ModelConfig, layouts: Map<string, TensorLayout>): PlacedTensors => {
        const placed: PlacedTensors = { matrices: new Map(), vectors: new Map(), host: new Map(), aggregationBytes: 0 };
        const dtypeOf = (name: string) => layouts.get(name)!.dtype;
        for (const [name, shape] of expected) {
          const layout = layouts.get(name)!;
          const { dtype } = layout;
          const count = shape.reduce((a, b) => a * b, 1);
          const rowLength = shape.at(-1) ?? 1;
          const toFloat32 = (into: Float32Array): TensorDestination => ({ write: (piece, firstRow) => into.set(bytesToFloat32(piece, dtype), firstRow * rowLength) });
          const placement = placementOf(name, partConfig, dtypeOf, weights);
          if (placement === 'q8') {
            const [outDim, inDim] = shape;
            const groups = q8Groups(inDim);
            const values = kernels.i8(outDim * inDim);
            const scales = kernels.u16(outDim * groups);
            placed.matrices.set(name, { ptr: values.ptr, format: 'q8', scales: scales.ptr });
            scratchBytes = Math.max(scratchBytes, pieceBytes({ dtype, shape, byteLength: count * DTYPE_BYTES[dtype] }));
            // read each piece into a scratch area of the wasm memory and quantize it there on all threads
            destinations.set(layout, (scratch) => ({
              scratch,
              write: (piece, firstRow, rows) => {
                pool.quantize_q8(values.ptr + firstRow * inDim, scales.ptr + 2 * firstRow * groups, scratch.byteOffset, FORMAT[dtype], rows, inDim);
                // a NaN or infinite weight leaves a non-finite scale (bf16 exponent all ones): say where
                for (let j = firstRow * groups; j < (firstRow + rows) * groups; j++) {
                  if ((scales.array[j] & 0x7f80) === 0x7f80) {
                    const row = Math.floor(j / groups) - firstRow;
                    const rowBytes = inDim * DTYPE_BYTES[dtype];
                    quantizeRowsQ8(new Int8Array(inDim), new Uint16Array(groups), bytesToFloat32(piece.slice(row * rowBytes, (row + 1) * rowBytes), dtype), 1, inDim, firstRow + row, name);
                  }
                }
              },
            }));
          } else if (placement === 'stored') {
            const ptr = kernels.alloc(count * DTYPE_BYTES[dtype]);
            placed.matrices.set(name, { ptr, format: FORMAT[dtype], scales: 0 });
            destinations.set(layout, () => new Uint8Array(memory, ptr, count * DTYPE_BYTES[dtype]));
          } else if (placement === 'f32') {
            const buffer = kernels.f32(count);
            placed.vectors.set(name, buffer.ptr);
            destinations.set(layout, () => toFloat32(buffer.array));
          } else {
            const array = new Float32Array(count);
            placed.host.set(name, array);
            destinations.set(layout, () => toFloat32(array));
          }
          // never int8 (placementOf): its stored bytes or float32, each buffer 16-byte aligned
          if (name.startsWith('model.aggregate_layer.')) placed.aggregationBytes += Math.ceil((count * (placement === 'stored' ? DTYPE_BYTES[dtype] : 4)) / 16) * 16;
        }
        return placed;
      };
      const own = place(expectedTensors(config), config, byName);
      // the stream sets: prefixes and aggregation layers only, never int8 (placementOf)
      const setParts = sets.map((set) => place(expectedStreamTensors(set.config), set.config, set.byName));
      const allWeightBytes = kernels.mark() - weightsStart;
      // the scratch lies where the activations will go: released (and reused) once loading is done
      const afterWeights = kernels.mark();
      const loadScratch = new Uint8Array(memory, kernels.alloc(scratchBytes), scratchBytes);
      await fill((tensor) => destinations.get(tensor)!(loadScratch));
      kernels.release(afterWeights);
      // bf16 matrices of the products go into paired order (fewer instructions per weight, same
      // bits: see BF16P in assembly/kernels.ts). Not the aggregation layer (its own kernel reads
      // it) nor an untied embedding table (only looked up).
      for (const [name, m] of own.matrices) {
        if (m.format !== 'bf16' || name.startsWith('model.aggregate_layer.') || (name === 'model.embed_tokens.weight' && !config.tieWordEmbeddings)) continue;
        const [rows, inDim] = byName.get(name)!.shape;
        kernels.pair_bf16(m.ptr, rows, inDim);
        m.format = 'bf16p';
      }

      const layers: WasmLayer[] = [];
      for (let i = 0; i < config.numLayers; i++) {
        const p = `model.layers.${i}`;
        const { matrices, vectors } = own;
        layers.push({
          inputNorm: vectors.get(`${p}.input_layernorm.weight`)!,
          q: matrices.get(`${p}.self_attn.q_proj.weight`)!,
          qBias: vectors.get(`${p}.self_attn.q_proj.bias`)!,
          k: matrices.get(`${p}.self_attn.k_proj.weight`)!,
          kBias: vectors.get(`${p}.self_attn.k_proj.bias`)!,
          v: matrices.get(`${p}.self_attn.v_proj.weight`)!,
          vBias: vectors.get(`${p}.self_attn.v_proj.bias`)!,
          o: matrices.get(`${p}.self_attn.o_proj.weight`)!,
          postAttentionNorm: vectors.get(`${p}.post_attention_layernorm.weight`)!,
          gate: matrices.get(`${p}.mlp.gate_proj.weight`)!,
          up: matrices.get(`${p}.mlp.up_proj.weight`)!,
          down: matrices.get(`${p}.mlp.down_proj.weight`)!,
          prefixKeys: null, // per stream count, below
          prefixValues: null,
        });
      }
      const embed = own.matrices.get('model.embed_tokens.weight')!;
      const lmHead = config.tieWordEmbeddings ? embed : own.matrices.get('lm_head.weight')!;
      const finalNorm = own.vectors.get('model.norm.weight')!;
      // what a forward pass reads: the backbone, plus the aggregation layer of its P
      const backboneBytes = allWeightBytes - own.aggregationBytes - setParts.reduce((sum, part) => sum + part.aggregationBytes, 0);
      const aggregationOf = ({ matrices, vectors }: PlacedTensors): Aggregation => {
        // placementOf keeps both in one stored format, or makes both float32 vectors
        const asMatrix = (name: string) => (matrices.get(name) ?? { ptr: vectors.get(name)!, format: 'f32', scales: 0 }) as Matrix & { format: WeightFormat };
        return { w0: asMatrix('model.aggregate_layer.0.weight'), b0: vectors.get('model.aggregate_layer.0.bias')!, w2: asMatrix('model.aggregate_layer.2.weight'), b2: vectors.get('model.aggregate_layer.2.bias')! };
      };
      // Dynamic P: one view per stream count — the folder's own, the backbone alone, each stream set
      const choices: { config: ModelConfig; part: PlacedTensors | null }[] = [
        { config, part: config.parscaleN > 1 ? own : null },
        ...(config.parscaleN > 1 ? [{ config: backboneConfig(config), part: null }] : []),
        ...sets.map((set, i) => ({ config: set.config, part: setParts[i] })),
      ];
      const streams = choices.map(({ config: viewConfig, part }) => {
        const prefix = (l: number, kv: 'k' | 'v') => part?.host.get(`model.layers.${l}.self_attn.prefix_${kv}`) ?? null;
        return {
          config: viewConfig,
          layers: layers.map((layer, l) => ({ ...layer, prefixKeys: prefix(l, 'k'), prefixValues: prefix(l, 'v') })),
          aggregation: part === null ? null : aggregationOf(part),
          weightBytes: backboneBytes + (part?.aggregationBytes ?? 0),
        };
      });
      const freqs = kernels.f32(ropeFrequencies(d, config.ropeTheta)).ptr;
      const scratch = (floats: number) => kernels.f32(floats).ptr;
      const scoresStride = scoresStrideBytes(capacity);
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
        scores: kernels.alloc(threads * scoresStride), // each thread's attention scores (capacity floats)
        attentionJobs: kernels.alloc(rows * ATTENTION_JOB_INTS * 4), // one row of the pool's attention table per stream and token
        streams: scratch(P * H), //         one position's P final hidden states
        y: scratch(H),
        aggWeights: scratch(P),
        aggScratch: scratch(P * H + H),
        logits: scratch(config.vocabSize),
        embedRow: scratch(H), //           one dequantized row of an int8 embedding
      };
      const cacheKeys: Ptr[][] = [];
      const cacheValues: Ptr[][] = [];
      for (let l = 0; l < config.numLayers; l++) {
        cacheKeys.push(Array.from({ length: P }, () => scratch(config.numKvHeads * capacity * d)));
        cacheValues.push(Array.from({ length: P }, () => scratch(config.numKvHeads * capacity * d)));
      }
      const shared: Shared = { sequenceId: 0, disposed: false, dir, views: new Map(), weightBytes: allWeightBytes };
      for (const view of streams) {
        const viewP = view.config.parscaleN;
        const model = new WasmModel(
          view.config, kernels, pool, view.layers, embed, lmHead, finalNorm, view.aggregation, freqs, weightsStart, maxContext, maxChunk, buffers,
          cacheKeys.map((perStream) => perStream.slice(0, viewP)),
          cacheValues.map((perStream) => perStream.slice(0, viewP)),
          view.weightBytes,
          weights,
          shared,
        );
        shared.views.set(viewP, model);
      }
      return shared.views.get(config.parscaleN)!;
    } catch (error) {
      await pool.close();
      throw error;
    }
  }

  /**
   * The rooflines the benchmark compares against, measured on this machine now: bytes/s of a
   * plain v128 read loop over the model's own weights (the same bytes a decode step must read;
   * one thread, and all the pool's threads each reading its share), and f32 multiply-adds/s of
   * register-only loops (one thread, and all threads at once), with mul then add and with the
   * products' own multiply-add (see Rooflines).
   */
  measureRooflines(): Rooflines {
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
    const readBytesPerSecondAllThreads = best(5, () => this.pool.read(this.weightsStart, this.weightBytes), this.weightBytes);
    const iterations = 2_000_000;
    const work = iterations * MADD_PER_ITERATION;
    const threads = this.pool.threads;
    return {
      readBytesPerSecond,
      readBytesPerSecondAllThreads,
      maddPerSecond: best(20, () => e.madd_peak(iterations), work),
      maddPerSecondAllThreads: best(30, () => this.pool.peak('madd', iterations), work * threads),
      fmaPerSecond: best(20, () => e.fma_peak(iterations), work),
      fmaPerSecondAllThreads: best(30, () => this.pool.peak('fma', iterations), work * threads),
      kernelBuild: this.kernels.build,
    };
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
    const jobs = new Int32Array(this.kernels.memory.buffer, b.attentionJobs, rows * ATTENTION_JOB_INTS);
    const scoresStride = scoresStrideBytes(capacity);
    const delta = this.view(b.delta, rows * H);
    for (let l = 0; l < c.numLayers; l++) {
      const layer = this.layers[l];
      k.rmsnorm(b.xb, b.x, layer.inputNorm, c.rmsNormEps, rows, H);
      pool.linear(layer.q, b.q, b.xb, layer.qBias, rows, H, qDim);
      pool.linear(layer.k, b.k, b.xb, layer.kBias, rows, H, kvDim);
      pool.linear(layer.v, b.v, b.xb, layer.vBias, rows, H, kvDim);
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
          // attention of this row, queued: all rows run on the pool's threads below
          jobs.set([b.heads + row * qDim * 4, row * qDim, keys, values, slot + 1], row * ATTENTION_JOB_INTS);
        }
      }
      pool.attention(b.attentionJobs, rows, b.q, capacity, c.numHeads, c.numKvHeads, d, b.scores, scoresStride);
      pool.linear(layer.o, b.delta, b.heads, null, rows, qDim, H);
      for (let i = 0; i < rows * H; i++) x[i] += delta[i];
      k.rmsnorm(b.xb, b.x, layer.postAttentionNorm, c.rmsNormEps, rows, H);
      pool.linear(layer.gate, b.gate, b.xb, null, rows, H, I);
      pool.linear(layer.up, b.up, b.xb, null, rows, H, I);
      k.swiglu(b.gate, b.gate, b.up, rows * I);
      pool.linear(layer.down, b.delta, b.gate, null, rows, I, H);
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
        pool.linear(this.lmHead, b.logits, output, null, 1, H, c.vocabSize);
        result.logits.push(this.view(b.logits, c.vocabSize).slice());
      }
    }
  }

  /** One embedding row as float32 (the table stays in its stored width, or int8). */
  private embeddingRow(token: number): Float32Array {
    const H = this.config.hiddenSize;
    const { ptr, format, scales } = this.embed;
    if (format === 'f32') return this.view(ptr + token * H * 4, H);
    if (format === 'q8') {
      this.kernels.dequantize_row_q8(this.buffers.embedRow, ptr, scales, H, token);
      return this.view(this.buffers.embedRow, H);
    }
    const raw = new Uint16Array(this.kernels.memory.buffer, ptr + token * H * 2, H);
    const row = new Float32Array(H);
    if (format === 'bf16') {
      const bits = new Uint32Array(row.buffer);
      for (let j = 0; j < H; j++) bits[j] = raw[j] << 16;
    } else if (format === 'bf16p') {
      // a tied embedding in paired order: block w0..w7 is stored as w0 w4 w1 w5 w2 w6 w3 w7
      const bits = new Uint32Array(row.buffer);
      const vec8 = H & ~7;
      for (let j = 0; j < vec8; j++) bits[j] = raw[(j & ~7) + ((j & 7) < 4 ? 2 * (j & 7) : 2 * (j & 7) - 7)] << 16;
      for (let j = vec8; j < H; j++) bits[j] = raw[j] << 16;
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
