// Dynamic P: several stream sets (prefixes + aggregation layer) trained on one frozen backbone,
// stored next to it so that one loaded backbone serves any of them (SPEC.md "Training": the
// ParScale-Qwen-3B-P{2,4,8}-Python checkpoints share one backbone).
//
// The folder is an ordinary model folder (config.json, model.safetensors or shards, tokenizer
// files) plus one safetensors file per stream set, named in config.json:
//
//   "parscale_stream_sets": {
//     "2": { "file": "streams-P2.safetensors", "parscale_n_tokens": 16, "parscale_attn_smooth": 0.01 },
//     "4": { "file": "streams-P4.safetensors", "parscale_n_tokens": 16, "parscale_attn_smooth": 0.01 }
//   }
//
// A stream-set file holds exactly the ParScale tensors of SPEC.md for that P, under their usual
// names: model.layers.{i}.self_attn.prefix_k / prefix_v [P, nKV, T, d] and
// model.aggregate_layer.{0,2}.{weight,bias}. When the folder itself is P > 1 (its own
// parscale_n), its own streams are one more choice; P = 1 (the backbone alone) always is.
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { type ModelConfig, expectedTensors } from './config.ts';
import { CheckpointError } from './errors.ts';

/** The config.json key that lists the stream sets. */
export const STREAM_SETS_KEY = 'parscale_stream_sets';

/** The file name training writes for a stream set (any plain .safetensors name loads). */
export const streamSetFileName = (P: number): string => `streams-P${P}.safetensors`;

/** One entry of config.json "parscale_stream_sets", validated. */
export interface StreamSetSpec {
  /** streams of this set (the entry's key), ≥ 2 */
  P: number;
  /** its safetensors file (absolute path) */
  file: string;
  /** parscale_n_tokens T of this set (default 48, as for parscale_n_tokens itself) */
  nTokens: number;
  /** parscale_attn_smooth s of this set (default 0.01) */
  attnSmooth: number;
}

/** The backbone's config with P streams of this set: what the forward pass of that choice sees. */
export function streamSetConfig(backbone: ModelConfig, P: number, nTokens: number, attnSmooth: number): ModelConfig {
  return { ...backbone, modelType: 'qwen2_parscale', parscaleN: P, parscaleNTokens: nTokens, parscaleAttnSmooth: attnSmooth };
}

/** The backbone alone (P = 1) of a config: a plain Qwen2 forward over the same weights. */
export function backboneConfig(config: ModelConfig): ModelConfig {
  return { ...config, parscaleN: 1 };
}

/** Is this tensor one of the ParScale parts (a prefix or the aggregation layer), not the backbone? */
export function isStreamTensor(name: string): boolean {
  return /\.self_attn\.prefix_[kv]$|^model\.aggregate_layer\./.test(name);
}

/** The tensors a stream-set file of `config` (its P, T) must hold, with their shapes. */
export function expectedStreamTensors(config: ModelConfig): Map<string, number[]> {
  return new Map([...expectedTensors(config)].filter(([name]) => isStreamTensor(name)));
}

/** Read DIR/config.json's stream sets (none when the key is absent). `config` is DIR's parsed config. */
export function readStreamSetSpecs(dir: string, config: ModelConfig): StreamSetSpec[] {
  const file = join(resolve(dir), 'config.json');
  // readConfig has already read and validated this file; here only our key is looked at
  const raw = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  return parseStreamSetSpecs(raw[STREAM_SETS_KEY], file, config);
}

/** Validate the value of "parscale_stream_sets"; `file` is the config.json (for messages), sorted by P. */
export function parseStreamSetSpecs(value: unknown, file: string, config: ModelConfig): StreamSetSpec[] {
  if (value === undefined || value === null) return [];
  const key = STREAM_SETS_KEY;
  const invalid = (message: string): never => {
    throw new CheckpointError('CONFIG_INVALID', `${file}: "${key}" ${message}`, { file, key });
  };
  if (typeof value !== 'object' || Array.isArray(value)) {
    invalid(`must map a stream count P to { "file", "parscale_n_tokens", "parscale_attn_smooth" }, found ${JSON.stringify(value)}`);
  }
  const dir = resolve(file, '..');
  const specs: StreamSetSpec[] = [];
  for (const [name, entry] of Object.entries(value as Record<string, unknown>)) {
    const P = Number(name);
    if (!/^[1-9]\d*$/.test(name) || P < 2) invalid(`has the entry "${name}": each key must be a stream count P ≥ 2 (P = 1 is the backbone alone)`);
    if (P === config.parscaleN) {
      invalid(`has an entry for P = ${P}, but the folder's own streams are P = ${P} (parscale_n): each P may be stored only once`);
    }
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) invalid(`["${name}"] must be an object with a "file", found ${JSON.stringify(entry)}`);
    const e = entry as Record<string, unknown>;
    const shard = e.file;
    // a plain file name next to config.json: never a path that leaves the folder
    if (typeof shard !== 'string' || /[/\\]/.test(shard) || !shard.endsWith('.safetensors')) {
      invalid(`["${name}"].file must be a .safetensors file name in the same folder, found ${JSON.stringify(shard)}`);
    }
    // a file named for another P is a mix-up of files (streams-P2.safetensors listed under "4")
    const named = /(?:^|[^A-Za-z])P(\d+)\.safetensors$/.exec(shard as string);
    if (named !== null && Number(named[1]) !== P) {
      invalid(`["${name}"].file is ${JSON.stringify(shard)}, whose name says P = ${named[1]}, but it is listed as the stream set P = ${P}`);
    }
    const nTokens = e.parscale_n_tokens ?? 48;
    if (typeof nTokens !== 'number' || !Number.isInteger(nTokens) || nTokens < 1) {
      invalid(`["${name}"].parscale_n_tokens must be a positive integer, found ${JSON.stringify(e.parscale_n_tokens)}`);
    }
    const attnSmooth = e.parscale_attn_smooth ?? 0.01;
    if (typeof attnSmooth !== 'number' || !Number.isFinite(attnSmooth) || attnSmooth < 0 || attnSmooth >= 1) {
      invalid(`["${name}"].parscale_attn_smooth must be a number in [0, 1), found ${JSON.stringify(e.parscale_attn_smooth)}`);
    }
    specs.push({ P, file: join(dir, shard as string), nTokens: nTokens as number, attnSmooth: attnSmooth as number });
  }
  return specs.sort((a, b) => a.P - b.P);
}

/** Every P a folder can run: 1 (the backbone alone), its own parscale_n, and its stream sets; ascending. */
export function availableStreamCounts(config: ModelConfig, specs: readonly { P: number }[]): number[] {
  return [...new Set([1, config.parscaleN, ...specs.map((s) => s.P)])].sort((a, b) => a - b);
}

/**
 * The P used when none is asked for: the folder's own parscale_n when it has streams of its own,
 * else the largest stream set, else 1.
 */
export function defaultStreamCount(config: ModelConfig, specs: readonly { P: number }[]): number {
  if (config.parscaleN > 1) return config.parscaleN;
  return Math.max(1, ...specs.map((s) => s.P));
}

/** The error for a P the folder has no streams for: it lists the ones it has. */
export function unknownStreamCountError(dir: string | null, P: unknown, available: readonly number[]): CheckpointError {
  const file = dir === null ? undefined : join(resolve(dir), 'config.json');
  const list = available.map((n) => (n === 1 ? '1 (the backbone alone)' : String(n))).join(', ');
  return new CheckpointError('STREAM_SET_UNKNOWN', `${file ?? 'this model'}: no streams for P = ${String(P)} (see "${STREAM_SETS_KEY}"); this model has stream sets P = ${list}`, {
    file,
    key: STREAM_SETS_KEY,
  });
}

/** Throws unknownStreamCountError unless P is one of `available`. */
export function checkStreamCount(dir: string | null, P: number, available: readonly number[]): void {
  if (!available.includes(P)) throw unknownStreamCountError(dir, P, available);
}
