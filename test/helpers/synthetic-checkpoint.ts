// Write small random checkpoints in the real Hugging Face layout (config.json, model.safetensors
// or shards + model.safetensors.index.json), for tests that load them, or damage them first.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ModelConfig, expectedTensors, parseConfig } from '../../src/checkpoint/config.ts';
import { type DType, type TensorToWrite, bytesToFloat32, float32ToBytes, writeSafetensors } from '../../src/checkpoint/safetensors.ts';
import { randomArray, rng } from './random-model.ts';

/** A small valid qwen2_parscale config.json (P = 2, T = 3, GQA 2/1, tied); override any key, or drop it with `undefined`. */
export const tinyConfigJson = (overrides: Record<string, unknown> = {}): Record<string, unknown> => {
  const json: Record<string, unknown> = {
    model_type: 'qwen2_parscale',
    hidden_size: 8,
    intermediate_size: 12,
    num_hidden_layers: 2,
    num_attention_heads: 2,
    num_key_value_heads: 1,
    vocab_size: 16,
    rms_norm_eps: 1e-6,
    rope_theta: 10000,
    max_position_embeddings: 64,
    tie_word_embeddings: true,
    torch_dtype: 'bfloat16',
    hidden_act: 'silu',
    eos_token_id: 0,
    parscale_n: 2,
    parscale_n_tokens: 3,
    parscale_attn_smooth: 0.01,
    ...overrides,
  };
  for (const key of Object.keys(json)) if (json[key] === undefined) delete json[key];
  return json;
};

export interface SyntheticOptions {
  /** stored dtype of every tensor, or per tensor name (mixed dtypes); default BF16 */
  dtype?: DType | ((name: string) => DType);
  /** split into this many shards with an index; 1 (default) writes a single model.safetensors */
  shards?: number;
  /** seed of the random values (uniform in [-1, 1)); default 1 */
  seed?: number;
}

export interface SyntheticCheckpoint {
  dir: string;
  config: ModelConfig;
  /** the float32 values of every tensor as stored (already rounded to its dtype) */
  values: Map<string, Float32Array>;
  /** what was written, in file order */
  tensors: TensorToWrite[];
  /** the safetensors files written (absolute paths), in order */
  files: string[];
}

/** Write a checkpoint of `configJson` into `dir` (which must exist) with random tensors of the expected shapes. */
export function writeSyntheticCheckpoint(dir: string, configJson: Record<string, unknown>, options?: SyntheticOptions): SyntheticCheckpoint;
/** The older form: writes into a new temporary folder (the caller removes it). */
export function writeSyntheticCheckpoint(configJson: Record<string, unknown>, options?: SyntheticOptions): SyntheticCheckpoint;
export function writeSyntheticCheckpoint(
  first: string | Record<string, unknown>,
  second?: Record<string, unknown> | SyntheticOptions,
  third?: SyntheticOptions,
): SyntheticCheckpoint {
  if (typeof first === 'string') return write(first, second as Record<string, unknown>, third ?? {});
  return write(mkdtempSync(join(tmpdir(), 'parscale-ckpt-')), first, (second as SyntheticOptions | undefined) ?? {});
}

function write(dir: string, configJson: Record<string, unknown>, options: SyntheticOptions): SyntheticCheckpoint {
  const { dtype = 'BF16', shards = 1, seed = 1 } = options;
  const dtypeOf = typeof dtype === 'function' ? dtype : () => dtype;
  const configFile = join(dir, 'config.json');
  writeFileSync(configFile, JSON.stringify(configJson, null, 2));
  const config = parseConfig(configJson, configFile);

  const random = rng(seed);
  const values = new Map<string, Float32Array>();
  const tensors = [...expectedTensors(config)].map(([name, shape]) => {
    const tensorDtype = dtypeOf(name);
    const data = float32ToBytes(randomArray(random, shape.reduce((a, b) => a * b, 1), 1), tensorDtype);
    values.set(name, bytesToFloat32(data, tensorDtype));
    return { name, dtype: tensorDtype, shape, data };
  });

  const files: string[] = [];
  if (shards === 1) {
    files.push(join(dir, 'model.safetensors'));
    writeSafetensors(files[0], tensors);
  } else {
    // consecutive runs of tensors per shard, named as transformers names them
    const weightMap: Record<string, string> = {};
    const perShard = Math.ceil(tensors.length / shards);
    for (let s = 0; s < shards; s++) {
      const shard = `model-${String(s + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
      const part = tensors.slice(s * perShard, (s + 1) * perShard);
      for (const t of part) weightMap[t.name] = shard;
      files.push(join(dir, shard));
      writeSafetensors(files[s], part);
    }
    const totalSize = tensors.reduce((sum, t) => sum + t.data.byteLength, 0);
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2));
  }
  return { dir, config, values, tensors, files };
}
