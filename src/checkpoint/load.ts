// Load a Hugging Face checkpoint folder: config.json plus model.safetensors, or shards listed in
// model.safetensors.index.json. Everything that can be checked without the tensor data (the
// config, every header, every tensor's name, dtype and shape) is checked first, so a bad folder
// fails in milliseconds, before gigabytes are read.
import { closeSync, existsSync, openSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { type ModelConfig, expectedTensors, readConfig } from './config.ts';
import { CheckpointError, abortError } from './errors.ts';
import { type DType, type TensorInfo, bytesToFloat32, readSafetensorsHeader, readTensorBytes } from './safetensors.ts';

export interface RawTensor {
  name: string;
  dtype: DType;
  shape: number[];
  /** exactly the stored little-endian bytes */
  data: Uint8Array;
}

export interface Checkpoint {
  dir: string;
  config: ModelConfig;
  tensors: Map<string, RawTensor>;
  /** total bytes of tensor data, as stored */
  weightBytes: number;
}

export interface LoadProgress {
  /** the file being read (absolute path) */
  file: string;
  fileLoadedBytes: number;
  fileTotalBytes: number;
  loadedBytes: number;
  totalBytes: number;
}

export interface LoadOptions {
  onProgress?: (event: LoadProgress) => void;
  signal?: AbortSignal;
}

/**
 * Tensors some exporters write that carry nothing we need: rotary inverse frequencies are
 * recomputed from rope_theta. Ignoring them is safe; any other unknown tensor is an error,
 * because it means the checkpoint is not the model we think it is.
 */
const IGNORED_TENSOR = /^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$|^model\.rotary_emb\.inv_freq$/;

/** Find and validate every tensor's header entry, without reading any tensor data. */
export function locateTensors(dir: string, config: ModelConfig): Map<string, TensorInfo> {
  const single = join(dir, 'model.safetensors');
  const indexFile = join(dir, 'model.safetensors.index.json');
  const found = new Map<string, TensorInfo>();
  let searched: string[];
  if (existsSync(single)) {
    searched = [single];
    for (const [name, info] of readSafetensorsHeader(single).tensors) found.set(name, info);
  } else if (existsSync(indexFile)) {
    const weightMap = readIndex(indexFile);
    const shards = [...new Set(weightMap.values())];
    searched = shards.map((shard) => join(dir, shard));
    for (const shard of shards) {
      const file = join(dir, shard);
      if (!existsSync(file)) {
        const example = [...weightMap].find(([, s]) => s === shard)![0];
        throw new CheckpointError('SHARD_MISSING', `${file}: shard named in ${indexFile} is missing (it should hold "${example}" among others)`, {
          file,
          tensor: example,
        });
      }
      for (const [name, info] of readSafetensorsHeader(file).tensors) {
        const listed = weightMap.get(name);
        if (listed !== undefined && listed !== shard) {
          throw new CheckpointError('INDEX_INVALID', `${indexFile}: "${name}" is listed in ${listed} but stored in ${shard}`, { file: indexFile, tensor: name });
        }
        found.set(name, info);
      }
    }
    for (const [name, shard] of weightMap) {
      if (!found.has(name)) {
        throw new CheckpointError('TENSOR_MISSING', `${join(dir, shard)}: tensor "${name}" is listed in the index but not stored there`, {
          file: join(dir, shard),
          tensor: name,
        });
      }
    }
  } else {
    throw new CheckpointError('FILE_NOT_FOUND', `no weights in ${dir}: expected model.safetensors or model.safetensors.index.json`, { file: dir });
  }

  const expected = expectedTensors(config);
  const where = searched.length === 1 ? searched[0] : `the shards of ${indexFile}`;
  for (const [name, shape] of expected) {
    const info = found.get(name);
    if (info === undefined) {
      throw new CheckpointError('TENSOR_MISSING', `${where}: tensor "${name}" (shape [${shape}]) is missing`, { file: searched[0], tensor: name });
    }
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw new CheckpointError(
        'TENSOR_SHAPE',
        `${info.file}: tensor "${name}" has shape [${info.shape}], but config.json implies [${shape}]`,
        { file: info.file, tensor: name },
      );
    }
  }
  for (const [name, info] of found) {
    if (expected.has(name) || IGNORED_TENSOR.test(name)) continue;
    const hint = name === 'lm_head.weight' ? ' (config.json says tie_word_embeddings: true)' : name.includes('prefix_') || name.includes('aggregate_layer') ? ` (config.json says parscale_n: ${config.parscaleN})` : '';
    throw new CheckpointError('TENSOR_UNEXPECTED', `${info.file}: unexpected tensor "${name}"${hint}`, { file: info.file, tensor: name });
  }
  for (const name of [...found.keys()]) if (!expected.has(name)) found.delete(name);
  return found;
}

function readIndex(indexFile: string): Map<string, string> {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(indexFile, 'utf8'));
  } catch (error) {
    throw new CheckpointError('INDEX_INVALID', `${indexFile}: not valid JSON (${(error as Error).message})`, { file: indexFile });
  }
  const weightMap = (json as { weight_map?: unknown })?.weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
    throw new CheckpointError('INDEX_INVALID', `${indexFile}: expected an object with a "weight_map" object`, { file: indexFile });
  }
  const map = new Map<string, string>();
  for (const [name, shard] of Object.entries(weightMap)) {
    // a shard name must be a plain file name in the same folder
    if (typeof shard !== 'string' || shard.includes('/') || shard.includes('\\') || !shard.endsWith('.safetensors')) {
      throw new CheckpointError('INDEX_INVALID', `${indexFile}: weight_map["${name}"] = ${JSON.stringify(shard)} is not a .safetensors file name`, {
        file: indexFile,
        tensor: name,
      });
    }
    map.set(name, shard);
  }
  return map;
}

const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

export async function loadCheckpoint(dirPath: string, options: LoadOptions = {}): Promise<Checkpoint> {
  const { onProgress, signal } = options;
  if (signal?.aborted) throw abortError();
  const dir = resolve(dirPath);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new CheckpointError('FILE_NOT_FOUND', `model folder not found: ${dir}`, { file: dir });
  }
  const config = readConfig(dir);
  const infos = locateTensors(dir, config);

  // read file by file, in file order, so the disk streams forward
  const byFile = new Map<string, TensorInfo[]>();
  for (const info of infos.values()) {
    const list = byFile.get(info.file) ?? [];
    list.push(info);
    byFile.set(info.file, list);
  }
  const totalBytes = [...infos.values()].reduce((sum, t) => sum + t.byteLength, 0);
  const tensors = new Map<string, RawTensor>();
  let loadedBytes = 0;
  let sinceYield = 0;
  for (const [file, list] of byFile) {
    list.sort((a, b) => a.byteOffset - b.byteOffset);
    const fileTotalBytes = list.reduce((sum, t) => sum + t.byteLength, 0);
    let fileLoadedBytes = 0;
    const fd = openSync(file, 'r');
    try {
      for (const info of list) {
        if (signal?.aborted) throw abortError();
        tensors.set(info.name, { name: info.name, dtype: info.dtype, shape: info.shape, data: readTensorBytes(info, fd) });
        fileLoadedBytes += info.byteLength;
        loadedBytes += info.byteLength;
        sinceYield += info.byteLength;
        onProgress?.({ file, fileLoadedBytes, fileTotalBytes, loadedBytes, totalBytes });
        if (sinceYield > 64e6) {
          // let an abort signal (or a progress bar) run between large reads
          sinceYield = 0;
          await yieldToEventLoop();
        }
      }
    } finally {
      closeSync(fd);
    }
  }
  if (signal?.aborted) throw abortError();
  return { dir, config, tensors, weightBytes: totalBytes };
}

export function tensorToFloat32(tensor: RawTensor): Float32Array {
  return bytesToFloat32(tensor.data, tensor.dtype);
}
