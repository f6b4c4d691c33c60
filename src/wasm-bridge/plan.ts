// What the wasm backend puts in its one WebAssembly memory, and how many bytes that takes — worked
// out from config.json and the tensors' dtypes alone, so the budget is checked (and `parscale info`
// can show it) before a single weight is read. src/wasm-bridge/model.ts allocates exactly this.
//
// Where each tensor goes:
//   'q8'      int8 values + bf16 scales per group of 32 inputs (src/reference/q8.ts): with
//             weights 'int8', every matrix of a matmul over the streams — q/k/v/o, gate/up/down and
//             the LM head (lm_head, or the embedding when tied, whose lookup then dequantizes a row)
//   'stored'  the stored bytes (bf16/f16/f32), widened in registers: every matrix with weights
//             'stored'; the aggregation matrices and an untied embedding (a lookup table, read one
//             row per token: int8 would save memory but no time and cost accuracy) always
//   'f32'     norms and biases: a few kB per layer, added or multiplied element-wise, where int8
//             would save nothing and its error would not average out over a dot product
//   'host'    the ParScale prefixes, kept as float32 outside the WebAssembly memory and copied into
//             each new sequence's cache (they are cache entries, used as stored)
// The aggregation layer stays unquantized: it runs once per position (not per stream), so it is a
// small share of the time, and its output — the softmax weights mixing the streams — is what
// ParScale adds; quantization error there would be spent where the method is most sensitive.
//
// Dynamic P (src/checkpoint/stream-sets.ts): every stream set of the folder is loaded with the
// backbone, its prefixes 'host' and its aggregation layer 'stored' / 'f32' as above (never int8),
// and the activations and the KV cache are sized for the largest P and prefix length of all of
// them (the folder's own streams included), which every P then shares.
import { availableParallelism } from 'node:os';
import { type ModelConfig, expectedTensors } from '../checkpoint/config.ts';
import { pieceBytes } from '../checkpoint/load.ts';
import { expectedStreamTensors } from '../checkpoint/stream-sets.ts';
import { DTYPE_BYTES, type DType } from '../checkpoint/safetensors.ts';
import { q8Bytes, q8Groups, q8ScratchBytes } from '../reference/q8.ts';

/** How the wasm backend keeps the large matrices: as stored (the default), or int8 with per-group scales. */
export const WEIGHT_CHOICES = ['stored', 'int8'] as const;
export type WeightsChoice = (typeof WEIGHT_CHOICES)[number];

export type Placement = 'q8' | 'stored' | 'f32' | 'host';

/** wasm32 addresses 4 GiB; keep 16 MiB for the module's static data, the pool's control block and alignment. */
export const WASM_MEMORY_LIMIT_BYTES = 4 * 2 ** 30 - (16 << 20);

/** The positions the KV cache holds unless asked otherwise. */
export const DEFAULT_MAX_CONTEXT = 4096;
/** Prompt tokens per pass unless asked otherwise. */
export const DEFAULT_MAX_CHUNK = 64;

const QUANTIZABLE = /\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)\.weight$|^lm_head\.weight$/;

/** Where tensor `name` lives (see the header). `dtypeOf` gives each tensor's stored dtype. */
export function placementOf(name: string, config: ModelConfig, dtypeOf: (name: string) => DType, weights: WeightsChoice): Placement {
  if (name.endsWith('.prefix_k') || name.endsWith('.prefix_v')) return 'host';
  if (name.endsWith('norm.weight') || name.endsWith('.bias')) return 'f32';
  if (name === 'model.aggregate_layer.0.weight' || name === 'model.aggregate_layer.2.weight') {
    // the aggregation kernel takes both matrices in one format; mixed files get float32 copies
    return dtypeOf('model.aggregate_layer.0.weight') === dtypeOf('model.aggregate_layer.2.weight') ? 'stored' : 'f32';
  }
  if (weights === 'int8' && (QUANTIZABLE.test(name) || (name === 'model.embed_tokens.weight' && config.tieWordEmbeddings))) return 'q8';
  return 'stored';
}

/** Bytes tensor `name` of `shape` takes where placementOf puts it. */
export function placedBytes(placement: Placement, shape: number[], dtype: DType): number {
  const count = shape.reduce((a, b) => a * b, 1);
  if (placement === 'q8') return q8Bytes(shape[0], shape[1]);
  if (placement === 'stored') return count * DTYPE_BYTES[dtype];
  return count * 4;
}

export interface WasmMemoryPlanOptions {
  weights?: WeightsChoice;
  /** Positions the KV cache holds (default: max_position_embeddings, at most 4096). */
  maxContext?: number;
  /** Prompt tokens processed per pass (default 64). */
  maxChunk?: number;
  /** Threads of the kernel pool (default: the available cores): each gets a small scratch with int8. */
  threads?: number;
  /** The folder's stream sets (dynamic P), all loaded with the backbone (default: none). */
  streamSets?: readonly PlannedStreamSet[];
}

/** A stream set as the plan needs it: its config (its P and prefix length) and its tensors' stored dtypes. */
export interface PlannedStreamSet {
  config: ModelConfig;
  dtypeOf: (name: string) => DType;
}

/** The PlannedStreamSets of stream sets whose tensors (headers or data) are known: openCheckpoint's or loadCheckpoint's. */
export function plannedStreamSets(sets: readonly { config: ModelConfig; tensors: ReadonlyMap<string, { dtype: DType }> }[]): PlannedStreamSet[] {
  return sets.map((set) => ({ config: set.config, dtypeOf: (name) => set.tensors.get(name)!.dtype }));
}

/** The largest stream count and prefix length over the backbone's own streams and every stream set. */
export function largestStreams(config: ModelConfig, streamSets: readonly { config: ModelConfig }[] = []): { P: number; T: number } {
  const configs = [config, ...streamSets.map((set) => set.config)];
  return {
    P: Math.max(...configs.map((c) => c.parscaleN)),
    T: Math.max(...configs.map((c) => (c.parscaleN > 1 ? c.parscaleNTokens : 0))),
  };
}

export interface WasmMemoryPlan {
  weights: WeightsChoice;
  maxContext: number;
  maxChunk: number;
  /** matrices, norms and biases in the WebAssembly memory */
  weightBytes: number;
  /** the KV cache for maxContext positions plus the prefixes, all streams (of the largest P) and layers, float32 */
  cacheBytes: number;
  /** activations for maxChunk tokens × P streams, logits, scratch */
  activationBytes: number;
  /** the whole WebAssembly memory this needs (with 16-byte alignment of every buffer) */
  totalBytes: number;
  /** the prefixes kept outside the WebAssembly memory (float32), of every stream set */
  hostBytes: number;
  /** the largest stream count the buffers and the cache are sized for (dynamic P: over all stream sets) */
  streams: number;
  /** the largest prefix length the cache holds (0 without streams) */
  prefixTokens: number;
  /** the most cache positions that fit with these weights (0 if not even one does) */
  maxContextThatFits: number;
}

/** The WebAssembly memory a model needs with `weights`, from its config and the tensors' stored dtypes. */
export function planWasmMemory(config: ModelConfig, dtypeOf: (name: string) => DType, options: WasmMemoryPlanOptions = {}): WasmMemoryPlan {
  const weights = options.weights ?? 'stored';
  const maxContext = options.maxContext ?? Math.min(config.maxPositionEmbeddings, DEFAULT_MAX_CONTEXT);
  if (!Number.isInteger(maxContext) || maxContext < 1) throw new RangeError(`maxContext must be a positive integer, got ${maxContext}`);
  const maxChunk = Math.max(1, Math.min(options.maxChunk ?? DEFAULT_MAX_CHUNK, maxContext));
  let weightBytes = 0;
  let hostBytes = 0;
  let buffers = 0;
  let loadScratchBytes = 0;
  const streamSets = options.streamSets ?? [];
  // the backbone (with the folder's own streams, if any), then each stream set's prefixes and aggregation
  const parts = [
    { tensors: expectedTensors(config), config, dtypeOf },
    ...streamSets.map((set) => ({ tensors: expectedStreamTensors(set.config), config: set.config, dtypeOf: set.dtypeOf })),
  ];
  for (const part of parts) {
    for (const [name, shape] of part.tensors) {
      const placement = placementOf(name, part.config, part.dtypeOf, weights);
      const dtype = part.dtypeOf(name);
      const bytes = placedBytes(placement, shape, dtype);
      // a matrix to quantize is read piece by piece (about 16 MB of whole rows) into a scratch area
      if (placement === 'q8') loadScratchBytes = Math.max(loadScratchBytes, pieceBytes({ dtype, shape, byteLength: placedBytes('stored', shape, dtype) }));
      if (placement === 'host') hostBytes += bytes;
      else {
        // every buffer starts 16-byte aligned (a q8 matrix is two: values and scales)
        weightBytes += placement === 'q8' ? align16(shape[0] * shape[1]) + align16(2 * shape[0] * q8Groups(shape[1])) : align16(bytes);
        buffers += placement === 'q8' ? 2 : 1;
      }
    }
  }
  const { P, T } = largestStreams(config, streamSets);
  const threads = options.threads ?? availableParallelism();
  const { fixedFloats, floatsPerPosition } = runtimeFloats(config, maxChunk, P, T, threads);
  const perPositionBytes = 4 * floatsPerPosition;
  // 16-byte alignment of every buffer, the rope table, the pool's control block; with int8, each
  // thread's scratch for matmul_q8's int16 activations (pool.ts)
  const q8Scratch = weights === 'int8' ? threads * q8ScratchBytes(Math.max(config.hiddenSize, config.intermediateSize, config.numHeads * config.headDim)) + 64 : 0;
  const overhead = 16 * (buffers + 32 + 2 * config.numLayers * P) + 4 * config.headDim + 1024 + q8Scratch;
  const fixedBytes = weightBytes + 4 * fixedFloats + overhead;
  const cacheBytes = cacheFloatsPerPosition(config, P) * 4 * (T + maxContext);
  // the activations and the cache are allocated over the load scratch once loading is done
  const totalBytes = weightBytes + Math.max(fixedBytes - weightBytes + perPositionBytes * maxContext, loadScratchBytes);
  const activationBytes = totalBytes - weightBytes - cacheBytes;
  const fitting = weightBytes + loadScratchBytes > WASM_MEMORY_LIMIT_BYTES ? 0 : Math.floor((WASM_MEMORY_LIMIT_BYTES - fixedBytes) / perPositionBytes);
  const maxContextThatFits = Math.max(0, Math.min(config.maxPositionEmbeddings, fitting));
  return { weights, maxContext, maxChunk, weightBytes, cacheBytes, activationBytes, totalBytes, hostBytes, streams: P, prefixTokens: T, maxContextThatFits };
}

const align16 = (bytes: number) => Math.ceil(bytes / 16) * 16;

/** Keys and values of one position in every layer, each of P streams and KV head (float32 numbers). */
function cacheFloatsPerPosition(config: ModelConfig, P: number): number {
  return 2 * config.numLayers * P * config.numKvHeads * config.headDim;
}

/** The activation and cache floats model.ts allocates for P streams and T prefix tokens: a fixed part and a part per cache position. */
function runtimeFloats(config: ModelConfig, maxChunk: number, P: number, T: number, threads: number): { fixedFloats: number; floatsPerPosition: number } {
  const H = config.hiddenSize;
  const qDim = config.numHeads * config.headDim;
  const kvDim = config.numKvHeads * config.headDim;
  const rows = P * maxChunk;
  // x, xb, delta (H); q, heads (qDim); k, v (kvDim); gate, up (I) per row; then one position's
  // streams, y, aggregation weights and scratch, the logits, an embedding row; the attention job
  // table (5 numbers per row); each thread's scores and the cache grow with capacity
  const activations = rows * (3 * H + 2 * qDim + 2 * kvDim + 2 * config.intermediateSize + 5) + P * H + H + P + (P * H + H) + config.vocabSize + H;
  const perPosition = threads + cacheFloatsPerPosition(config, P);
  return { fixedFloats: activations + perPosition * T, floatsPerPosition: perPosition };
}

const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(2)} GiB`;

function describe(plan: WasmMemoryPlan, dtypeName: string): string {
  const what = plan.weights === 'int8' ? 'int8 weights' : `its stored ${dtypeName} weights`;
  return `${gib(plan.totalBytes)} with ${what} (weights ${gib(plan.weightBytes)} + KV cache for ${plan.maxContext} positions ${gib(plan.cacheBytes)} + activations ${gib(plan.activationBytes)})`;
}

/**
 * The plan for `weights`, or a WasmMemoryError that says what does not fit and what would: int8 weights
 * (with their numbers) when they fit and stored weights do not, else the largest maxContext.
 */
export function checkWasmMemory(config: ModelConfig, dtypeOf: (name: string) => DType, options: WasmMemoryPlanOptions = {}): WasmMemoryPlan {
  const plan = planWasmMemory(config, dtypeOf, options);
  if (plan.totalBytes <= WASM_MEMORY_LIMIT_BYTES) return plan;
  const dtypes = [...new Set([...expectedTensors(config).keys()].map(dtypeOf))].map((d) => d.toLowerCase()).join('/');
  const sets = options.streamSets ?? [];
  // dynamic P: every stream set is loaded with the backbone, and the cache is sized for the largest P
  const withSets = sets.length === 0 ? '' : ` (with its stream sets P = ${sets.map((set) => set.config.parscaleN).join(', ')}, the cache for P = ${plan.streams})`;
  const message = `this model${withSets} needs ${describe(plan, dtypes)} in one WebAssembly memory, over the 4 GiB a wasm32 memory can address`;
  if (plan.weights === 'stored') {
    const int8 = planWasmMemory(config, dtypeOf, { ...options, weights: 'int8' });
    if (int8.totalBytes <= WASM_MEMORY_LIMIT_BYTES) {
      fail(`${message}; with int8 weights (--weights int8, or the option weights: 'int8') it needs ${describe(int8, dtypes)}, which fits`);
    }
    if (int8.maxContextThatFits > plan.maxContextThatFits) {
      fail(
        `${message}; use a smaller maxContext (--max-context) and int8 weights: at most ${plan.maxContextThatFits} positions fit with stored weights, ` +
          `${int8.maxContextThatFits} with int8 weights (--weights int8, or the option weights: 'int8')`,
      );
    }
  }
  if (plan.maxContextThatFits > 0) fail(`${message}; use a smaller maxContext (--max-context): at most ${plan.maxContextThatFits} positions fit`);
  fail(`${message}, even with a cache of one position; use the reference backend (--backend reference)`);
}

/** The model (with these weights and this cache) does not fit in one WebAssembly memory. */
export class WasmMemoryError extends RangeError {
  override name = 'WasmMemoryError';
  readonly code = 'WASM_MEMORY_TOO_SMALL';
}

function fail(message: string): never {
  throw new WasmMemoryError(message);
}
