// Load a Hugging Face checkpoint folder: config.json plus model.safetensors, or shards listed in
// model.safetensors.index.json. Everything that can be checked without the tensor data (the
// config, every header, every tensor's name, dtype and shape) is checked first, so a bad folder
// fails in milliseconds, before gigabytes are read. Then the data is read file by file in
// offset order (the disk streams forward), with progress events and abort checks as it goes.
import { closeSync, existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { type ModelConfig, expectedTensors, readConfig } from './config.ts';
import { CheckpointError, abortError } from './errors.ts';
import { DTYPE_BYTES, type DType, type TensorInfo, bytesToFloat32, openForReading, readSafetensorsHeader, readTensorRange } from './safetensors.ts';
import { STREAM_SETS_KEY, type StreamSetSpec, expectedStreamTensors, isStreamTensor, readStreamSetSpecs, streamSetConfig } from './stream-sets.ts';

export interface RawTensor {
  name: string;
  dtype: DType;
  shape: number[];
  /** exactly the stored little-endian bytes, in a buffer of their own */
  data: Uint8Array;
}

export interface Checkpoint {
  /** the model folder (absolute path) */
  dir: string;
  config: ModelConfig;
  /** exactly the tensors of expectedTensors(config), in that order */
  tensors: Map<string, RawTensor>;
  /** total bytes of tensor data, as stored (the stream sets not included) */
  weightBytes: number;
  /** the stream sets stored next to the backbone (config.json "parscale_stream_sets"), by P; often none */
  streamSets: StreamSet[];
}

/** One stream set of a dynamic-P folder (src/checkpoint/stream-sets.ts): prefixes and aggregation for P streams. */
export interface StreamSet {
  P: number;
  /** its safetensors file (absolute path) */
  file: string;
  /** the backbone's config with this set's parscale_n, parscale_n_tokens and parscale_attn_smooth */
  config: ModelConfig;
  /** exactly the tensors of expectedStreamTensors(config), in that order */
  tensors: Map<string, RawTensor>;
  weightBytes: number;
}

export interface LoadProgress {
  /** the file being read (absolute path) */
  file: string;
  fileLoadedBytes: number;
  fileTotalBytes: number;
  /** over all files; rises monotonically and ends at totalBytes */
  loadedBytes: number;
  totalBytes: number;
}

export interface LoadOptions {
  /** called as data arrives: at least once per tensor, and every 16 MB within large ones */
  onProgress?: (event: LoadProgress) => void;
  /** checked before starting, between tensors and every 64 MB; an abort rejects with an 'AbortError' */
  signal?: AbortSignal;
}

const SINGLE_FILE = 'model.safetensors';
const INDEX_FILE = 'model.safetensors.index.json';

/**
 * Tensors some exporters write that carry nothing we need: rotary inverse frequencies, which
 * we recompute from rope_theta (older transformers versions saved them as buffers). Ignoring
 * them is safe. Any other unknown tensor is an error, because it means the checkpoint is not
 * the model config.json describes.
 */
const IGNORED_TENSOR = /^model\.(layers\.\d+\.self_attn\.)?rotary_emb\.inv_freq$/;

/** Read pieces of at most this size, so progress keeps moving within a 600 MB embedding. */
const CHUNK_BYTES = 16 << 20;
/** Give the event loop a turn after this many bytes, so an abort (or a progress bar) can run. */
const YIELD_EVERY_BYTES = 64 << 20;

/** A checkpoint folder whose config and headers have been read and checked, before any tensor data. */
export interface OpenedCheckpoint {
  /** the model folder (absolute path) */
  dir: string;
  config: ModelConfig;
  /** exactly the tensors of expectedTensors(config), in that order: where each is stored */
  tensors: Map<string, TensorInfo>;
  /** total bytes of tensor data, as stored (the stream sets not included) */
  weightBytes: number;
  /** the stream sets stored next to the backbone (config.json "parscale_stream_sets"), by P, headers checked */
  streamSets: OpenedStreamSet[];
}

/** A stream set of an opened checkpoint: as StreamSet, with where each tensor is stored instead of its bytes. */
export interface OpenedStreamSet extends Omit<StreamSet, 'tensors'> {
  /** exactly the tensors of expectedStreamTensors(config), in that order */
  tensors: Map<string, TensorInfo>;
}

/**
 * Where a tensor's bytes go as they are read (readTensorsInto): straight into an array of exactly
 * `byteLength` bytes, or, piece by piece, to a PieceDestination.
 */
export type TensorDestination = Uint8Array | PieceDestination;

export interface PieceDestination {
  /**
   * Receives the tensor in order, in pieces of whole rows (rows of its last dimension) of at most
   * pieceBytes(info) bytes. A piece is only valid during the call: its buffer is reused.
   */
  write(piece: Uint8Array, firstRow: number, rows: number): void;
  /** Where to read the pieces into (at least pieceBytes(info) long); default: a buffer of the loader's. */
  scratch?: Uint8Array;
}

/** The largest piece a PieceDestination of this tensor receives: whole rows, about 16 MB (at least one row). */
export function pieceBytes(info: Pick<TensorInfo, 'dtype' | 'shape' | 'byteLength'>): number {
  const rowBytes = (info.shape.at(-1) ?? 1) * DTYPE_BYTES[info.dtype];
  if (rowBytes === 0) return 0;
  return Math.min(info.byteLength, Math.max(1, Math.floor(CHUNK_BYTES / rowBytes)) * rowBytes);
}

/**
 * Check the checkpoint in folder `dir` without reading tensor data: the folder, config.json, the
 * index, every header and every tensor's name, dtype and shape — the backbone's and every stream
 * set's (locateStreamSet). Throws the CheckpointError that loadCheckpoint would.
 */
export function openCheckpoint(dir: string): OpenedCheckpoint {
  const folder = resolve(dir);
  checkIsFolder(folder);
  const config = readConfig(folder);
  const tensors = locateTensors(folder, config);
  const bytesOf = (list: Map<string, TensorInfo>) => [...list.values()].reduce((sum, info) => sum + info.byteLength, 0);
  const streamSets = readStreamSetSpecs(folder, config).map((spec) => {
    const set = locateStreamSet(spec, config);
    return { P: spec.P, file: spec.file, config: set.config, tensors: set.tensors, weightBytes: bytesOf(set.tensors) };
  });
  return { dir: folder, config, tensors, weightBytes: bytesOf(tensors), streamSets };
}

/**
 * Load the checkpoint in folder `dir`. Rejects with a CheckpointError (see its `code`) for any
 * problem with the folder, config.json, the index, a header or a tensor's name/shape — all
 * found before any tensor data is read — and with an 'AbortError' when `signal` fires.
 */
export async function loadCheckpoint(dir: string, options: LoadOptions = {}): Promise<Checkpoint> {
  throwIfAborted(options.signal);
  const opened = openCheckpoint(dir);
  throwIfAborted(options.signal);
  // keyed by TensorInfo: names repeat across stream-set files
  const data = new Map<TensorInfo, RawTensor>();
  await readTensorsInto(opened, (info) => {
    const bytes = new Uint8Array(info.byteLength);
    data.set(info, { name: info.name, dtype: info.dtype, shape: info.shape, data: bytes });
    return bytes;
  }, options);
  const byName = (tensors: Map<string, TensorInfo>) => new Map([...tensors].map(([name, info]) => [name, data.get(info)!]));
  return {
    dir: opened.dir,
    config: opened.config,
    tensors: byName(opened.tensors),
    weightBytes: opened.weightBytes,
    streamSets: opened.streamSets.map((set) => ({ ...set, tensors: byName(set.tensors) })),
  };
}

/**
 * Read every tensor of an opened checkpoint once — the backbone's, then every stream set's — in
 * file and offset order (the disk streams forward), handing its bytes to `destinationFor(info)`,
 * so a caller can place or convert each tensor as it arrives and never hold a second copy of the
 * whole checkpoint. `info` is the very TensorInfo object of `opened.tensors` or of a stream set's
 * `tensors` (names repeat across stream-set files; tell them apart by identity). Progress and
 * abort as for loadCheckpoint, over all files.
 */
export async function readTensorsInto(opened: OpenedCheckpoint, destinationFor: (info: TensorInfo) => TensorDestination, options: LoadOptions = {}): Promise<void> {
  throwIfAborted(options.signal);
  const all = [...opened.tensors.values(), ...opened.streamSets.flatMap((set) => [...set.tensors.values()])];
  await readTensorData(all, destinationFor, options.onProgress, options.signal);
}

/** Decode a tensor to float32 (exact for all three stored dtypes). */
export function tensorToFloat32(t: RawTensor): Float32Array {
  return bytesToFloat32(t.data, t.dtype);
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError();
}

function checkIsFolder(dir: string): void {
  if (!existsSync(dir)) throw new CheckpointError('FILE_NOT_FOUND', `model folder not found: ${dir}`, { file: dir });
  if (!statSync(dir).isDirectory()) throw new CheckpointError('FILE_NOT_FOUND', `${dir}: not a folder (expected a model folder with config.json)`, { file: dir });
}

// ---- finding and validating tensors (headers only) ----

interface StoredTensors {
  tensors: Map<string, TensorInfo>;
  /** for messages: the file, or the index and its shards, that were searched */
  searched: string;
  /** the file to name in a TENSOR_MISSING error */
  fileForMissing: string;
}

/**
 * Read every header of the checkpoint in `dir` and check its tensors against the config.
 * Returns the tensors of expectedTensors(config), in that order; reads no tensor data.
 */
export function locateTensors(dir: string, config: ModelConfig): Map<string, TensorInfo> {
  const stored = findStoredTensors(dir);
  const expected = expectedTensors(config);
  checkExpectedTensorsPresent(stored, expected, config);
  checkNoUnexpectedTensors(stored, expected, config);
  return new Map([...expected.keys()].map((name) => [name, stored.tensors.get(name)!]));
}

function findStoredTensors(dir: string): StoredTensors {
  // transformers prefers the single file too when both are present
  const single = join(dir, SINGLE_FILE);
  if (existsSync(single)) return { tensors: readSafetensorsHeader(single).tensors, searched: single, fileForMissing: single };
  const indexFile = join(dir, INDEX_FILE);
  if (existsSync(indexFile)) return readShardedHeaders(dir, indexFile);
  throw noWeightsError(dir);
}

function noWeightsError(dir: string): CheckpointError {
  const files = readdirSync(dir);
  let hint = '';
  if (files.some((f) => f.startsWith('pytorch_model') && f.endsWith('.bin'))) {
    hint = '; found PyTorch .bin weights, which are not supported: convert them to safetensors';
  } else if (files.some((f) => f.endsWith('.safetensors'))) {
    hint = `; found other .safetensors files (${files.filter((f) => f.endsWith('.safetensors')).join(', ')}) but no ${INDEX_FILE} naming them`;
  }
  return new CheckpointError('FILE_NOT_FOUND', `${dir}: no weights found: expected ${SINGLE_FILE} or ${INDEX_FILE}${hint}`, { file: dir });
}

/** A sharded checkpoint: the index names a shard for every tensor, and every shard must agree. */
function readShardedHeaders(dir: string, indexFile: string): StoredTensors {
  const weightMap = readIndex(indexFile);
  const shards = [...new Set(weightMap.values())].sort();
  // All shards must exist before any header is read: a missing shard is the common failure
  // of an interrupted download, and should say so rather than show up as a missing tensor.
  for (const shard of shards) {
    const file = join(dir, shard);
    if (!existsSync(file)) {
      const held = [...weightMap].filter(([, s]) => s === shard).map(([name]) => name);
      const others = held.length > 1 ? ` and ${held.length - 1} other tensor(s)` : '';
      throw new CheckpointError('SHARD_MISSING', `${file}: shard is missing; ${indexFile} says it holds "${held[0]}"${others}`, {
        file,
        tensor: held[0],
      });
    }
  }

  const tensors = new Map<string, TensorInfo>();
  for (const shard of shards) {
    for (const [name, info] of readSafetensorsHeader(join(dir, shard)).tensors) {
      const earlier = tensors.get(name);
      if (earlier !== undefined) {
        throw new CheckpointError('INDEX_INVALID', `${info.file}: tensor "${name}" is stored twice, here and in ${earlier.file}`, { file: info.file, tensor: name });
      }
      const listed = weightMap.get(name);
      if (listed !== undefined && listed !== shard) {
        throw new CheckpointError('INDEX_INVALID', `${indexFile}: tensor "${name}" is listed in ${listed} but stored in ${shard}`, {
          file: indexFile,
          tensor: name,
        });
      }
      tensors.set(name, info);
    }
  }
  for (const [name, shard] of weightMap) {
    if (!tensors.has(name)) {
      const file = join(dir, shard);
      throw new CheckpointError('TENSOR_MISSING', `${file}: tensor "${name}" is not stored there, although ${indexFile} says it is`, { file, tensor: name });
    }
  }
  const searched = `${indexFile} and its shards (${shards.join(', ')})`;
  return { tensors, searched, fileForMissing: indexFile };
}

/** model.safetensors.index.json: { "metadata": {…}, "weight_map": { tensor name: shard file name } } */
function readIndex(indexFile: string): Map<string, string> {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(indexFile, 'utf8'));
  } catch (error) {
    throw new CheckpointError('INDEX_INVALID', `${indexFile}: not valid JSON (${(error as Error).message})`, { file: indexFile, cause: error });
  }
  const weightMap = (json as { weight_map?: unknown } | null)?.weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
    throw new CheckpointError('INDEX_INVALID', `${indexFile}: expected an object with a "weight_map" object, found ${JSON.stringify(json)?.slice(0, 200)}`, {
      file: indexFile,
    });
  }
  const map = new Map<string, string>();
  for (const [name, shard] of Object.entries(weightMap)) {
    // A shard is a plain file name next to the index: never a path that leaves the folder.
    if (typeof shard !== 'string' || /[/\\]/.test(shard) || !shard.endsWith('.safetensors')) {
      throw new CheckpointError('INDEX_INVALID', `${indexFile}: weight_map["${name}"] must be a .safetensors file name in the same folder, found ${JSON.stringify(shard)}`, {
        file: indexFile,
        tensor: name,
      });
    }
    map.set(name, shard);
  }
  return map;
}

function checkExpectedTensorsPresent(stored: StoredTensors, expected: Map<string, number[]>, config: ModelConfig): void {
  for (const [name, shape] of expected) {
    const info = stored.tensors.get(name);
    if (info === undefined) {
      throw new CheckpointError(
        'TENSOR_MISSING',
        `tensor "${name}" (shape ${JSON.stringify(shape)}) is missing${configHint(name, config)}; searched ${stored.searched}`,
        { file: stored.fileForMissing, tensor: name },
      );
    }
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw new CheckpointError(
        'TENSOR_SHAPE',
        `${info.file}: tensor "${name}" has shape ${JSON.stringify(info.shape)}, but config.json implies ${JSON.stringify(shape)}`,
        { file: info.file, tensor: name },
      );
    }
  }
}

function checkNoUnexpectedTensors(stored: StoredTensors, expected: Map<string, number[]>, config: ModelConfig): void {
  for (const [name, info] of stored.tensors) {
    if (expected.has(name) || IGNORED_TENSOR.test(name)) continue;
    throw new CheckpointError('TENSOR_UNEXPECTED', `${info.file}: unexpected tensor "${name}"${configHint(name, config)}`, { file: info.file, tensor: name });
  }
}

/** The config.json setting that decides whether a tensor exists, when one does: the likely culprit. */
function configHint(name: string, config: ModelConfig): string {
  if (name === 'lm_head.weight') return ` (config.json says tie_word_embeddings: ${config.tieWordEmbeddings})`;
  if (/\.prefix_[kv]$|^model\.aggregate_layer\./.test(name)) {
    return config.modelType === 'qwen2' ? ' (config.json says model_type: "qwen2", which has no ParScale tensors)' : ` (config.json says parscale_n: ${config.parscaleN})`;
  }
  const layer = /^model\.layers\.(\d+)\./.exec(name);
  if (layer !== null && Number(layer[1]) >= config.numLayers) return ` (config.json says num_hidden_layers: ${config.numLayers})`;
  return '';
}

// ---- stream sets (headers only) ----

/**
 * Read a stream-set file's header and check it holds exactly the prefixes and aggregation layer
 * of `spec` over `backbone`. Returns that set's config and its tensors in expected order.
 */
export function locateStreamSet(spec: StreamSetSpec, backbone: ModelConfig): { config: ModelConfig; tensors: Map<string, TensorInfo> } {
  const { P, file } = spec;
  const config = streamSetConfig(backbone, P, spec.nTokens, spec.attnSmooth);
  const listed = `config.json "${STREAM_SETS_KEY}" lists it for P = ${P}`;
  if (!existsSync(file)) throw new CheckpointError('FILE_NOT_FOUND', `${file}: stream set file not found; ${listed}`, { file });
  const stored = readSafetensorsHeader(file).tensors;
  const expected = expectedStreamTensors(config);
  for (const [name, shape] of expected) {
    const info = stored.get(name);
    if (info === undefined) {
      throw new CheckpointError('TENSOR_MISSING', `${file}: tensor "${name}" (shape ${JSON.stringify(shape)}) is missing from this stream set (${listed})`, { file, tensor: name });
    }
    if (info.shape.length === shape.length && info.shape.every((d, i) => d === shape[i])) continue;
    // Say which setting disagrees: the number of streams the tensor holds, or the prefix length.
    const streams = streamsInShape(name, info.shape, backbone.hiddenSize);
    const why =
      streams !== null && streams !== P
        ? `: it holds ${streams} streams, but ${listed} (expected shape ${JSON.stringify(shape)})`
        : `, but ${listed} with parscale_n_tokens ${spec.nTokens} on the backbone of config.json, which implies ${JSON.stringify(shape)}`;
    throw new CheckpointError('TENSOR_SHAPE', `${file}: tensor "${name}" has shape ${JSON.stringify(info.shape)}${why}`, { file, tensor: name });
  }
  for (const name of stored.keys()) {
    if (expected.has(name)) continue;
    const hint = isStreamTensor(name) ? ` (config.json says num_hidden_layers: ${backbone.numLayers})` : ': a stream set holds only prefixes and the aggregation layer; backbone tensors belong in model.safetensors';
    throw new CheckpointError('TENSOR_UNEXPECTED', `${file}: unexpected tensor "${name}"${hint}`, { file, tensor: name });
  }
  return { config, tensors: new Map([...expected.keys()].map((name) => [name, stored.get(name)!])) };
}

/** The stream count P a ParScale tensor's shape implies (SPEC.md "Tensors"), or null if it has none. */
function streamsInShape(name: string, shape: number[], H: number): number | null {
  if (name.endsWith('.prefix_k') || name.endsWith('.prefix_v') || name.startsWith('model.aggregate_layer.2.')) return shape.length > 0 ? shape[0] : null;
  if (name === 'model.aggregate_layer.0.weight') return shape.length === 2 && shape[1] % H === 0 ? shape[1] / H : null;
  return null;
}

// ---- reading tensor data ----

const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Read every tensor's bytes into its destination, file by file in offset order. */
async function readTensorData(
  infos: TensorInfo[],
  destinationFor: (info: TensorInfo) => TensorDestination,
  onProgress: LoadOptions['onProgress'],
  signal: AbortSignal | undefined,
): Promise<void> {
  const totalBytes = infos.reduce((sum, info) => sum + info.byteLength, 0);
  let loadedBytes = 0;
  let sinceYield = 0;
  let scratch = new Uint8Array(0); // pieces for function destinations, reused
  for (const [file, list] of groupByFile(infos)) {
    const fileTotalBytes = list.reduce((sum, info) => sum + info.byteLength, 0);
    let fileLoadedBytes = 0;
    const fd = openForReading(file);
    try {
      for (const info of list) {
        throwIfAborted(signal);
        const destination = destinationFor(info);
        if (destination instanceof Uint8Array && destination.byteLength !== info.byteLength) {
          throw new RangeError(`destination for tensor "${info.name}" holds ${destination.byteLength} bytes, the tensor ${info.byteLength}`);
        }
        // piece destinations get whole rows: as many as fit in a chunk, at least one
        const rowBytes = (info.shape.at(-1) ?? 1) * DTYPE_BYTES[info.dtype];
        const step = destination instanceof Uint8Array || rowBytes === 0 ? CHUNK_BYTES : pieceBytes(info);
        let done = 0;
        // do…while: an empty tensor still gets its progress event
        do {
          const length = Math.min(step, info.byteLength - done);
          if (destination instanceof Uint8Array) readTensorRange(fd, info, destination, done, length);
          else if (length > 0) {
            let buffer = destination.scratch;
            if (buffer === undefined) {
              if (scratch.byteLength < length) scratch = new Uint8Array(length);
              buffer = scratch;
            }
            if (buffer.byteLength < length) throw new RangeError(`scratch for tensor "${info.name}" holds ${buffer.byteLength} bytes, a piece ${length}`);
            readTensorRange(fd, { ...info, byteOffset: info.byteOffset + done }, buffer, 0, length);
            destination.write(buffer.subarray(0, length), done / rowBytes, length / rowBytes);
          }
          done += length;
          fileLoadedBytes += length;
          loadedBytes += length;
          sinceYield += length;
          onProgress?.({ file, fileLoadedBytes, fileTotalBytes, loadedBytes, totalBytes });
          if (sinceYield >= YIELD_EVERY_BYTES) {
            sinceYield = 0;
            await yieldToEventLoop();
            throwIfAborted(signal);
          }
        } while (done < info.byteLength);
      }
    } finally {
      closeSync(fd);
    }
  }
}

/** Tensors grouped by file (files in name order, so shards go 1, 2, 3), each group in offset order. */
function groupByFile(infos: TensorInfo[]): [string, TensorInfo[]][] {
  const byFile = new Map<string, TensorInfo[]>();
  for (const info of infos) {
    const list = byFile.get(info.file) ?? [];
    list.push(info);
    byFile.set(info.file, list);
  }
  return [...byFile]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([file, list]) => [file, list.sort((a, b) => a.byteOffset - b.byteOffset)]);
}
