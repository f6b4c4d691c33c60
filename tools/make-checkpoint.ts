// Write a random-weight checkpoint in the exact Hugging Face format: config.json, safetensors
// (sharded when large, with model.safetensors.index.json), and optionally a tokenizer copied from
// another folder. Real shapes are presets, so anyone can reproduce our benchmarks without a
// download; small ones make the placeholder default model.
//
//   npx tsx tools/make-checkpoint.ts --preset parscale-1.8b --P 4 --out /tmp/p4
//   npx tsx tools/make-checkpoint.ts --preset qwen2.5-0.5b --out /tmp/qwen05 --dtype bf16
//   npx tsx tools/make-checkpoint.ts --preset parscale-1.8b --hidden 1792 --intermediate 9728 --out /tmp/eq
//   npx tsx tools/make-checkpoint.ts --preset parscale-3b --P 8 --config-only --out /tmp/p3b-p8   (config.json only, for `parscale info`)
// Shape flags (--hidden, --intermediate, --layers, --heads, --kv-heads, --vocab, --tied,
// --max-position, --rope-theta) override the preset's fields one by one.
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { type ModelConfig, expectedTensors, parseConfig } from '../src/checkpoint/config.ts';
import { type DType, float32ToBytes, writeSafetensors } from '../src/checkpoint/safetensors.ts';

export interface Shape {
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  vocab_size: number;
  tie_word_embeddings: boolean;
  max_position_embeddings: number;
  rope_theta: number;
}

export const PRESETS: Record<string, Shape> = {
  // ParScale/ParScale-1.8B-P{1,2,4,8}
  'parscale-1.8b': { hidden_size: 1536, intermediate_size: 8320, num_hidden_layers: 36, num_attention_heads: 16, num_key_value_heads: 2, vocab_size: 151936, tie_word_embeddings: true, max_position_embeddings: 2048, rope_theta: 10000 },
  // ParScale/ParScale-3B-P{1,2,4,8}-* shape (SPEC.md's example, ParScale-3B-P8-Pile)
  'parscale-3b': { hidden_size: 2048, intermediate_size: 11008, num_hidden_layers: 36, num_attention_heads: 16, num_key_value_heads: 2, vocab_size: 151936, tie_word_embeddings: true, max_position_embeddings: 2048, rope_theta: 10000 },
  // Qwen/Qwen2.5-0.5B
  'qwen2.5-0.5b': { hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14, num_key_value_heads: 2, vocab_size: 151936, tie_word_embeddings: true, max_position_embeddings: 32768, rope_theta: 1000000 },
  // the placeholder default model: real Qwen vocabulary, tiny everything else
  tiny: { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 151936, tie_word_embeddings: true, max_position_embeddings: 4096, rope_theta: 10000 },
};

const DTYPES: Record<string, { dtype: DType; torch: string }> = {
  bf16: { dtype: 'BF16', torch: 'bfloat16' },
  f16: { dtype: 'F16', torch: 'float16' },
  f32: { dtype: 'F32', torch: 'float32' },
};

/** xorshift-based uniform numbers in [-1, 1); fast enough for billions of weights. */
function uniformSource(seed: number): () => number {
  let s = (seed >>> 0) || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2147483648 - 1;
  };
}

/** Scale of the random values of a tensor, chosen so activations stay O(1) through the layers. */
function initScale(name: string, shape: number[]): { center: number; scale: number } {
  if (name.endsWith('norm.weight')) return { center: 1, scale: 0.1 };
  if (name.endsWith('.bias')) return { center: 0, scale: 0.05 };
  if (name.includes('prefix_')) return { center: 0, scale: 1 };
  if (name === 'model.embed_tokens.weight' || name === 'lm_head.weight') return { center: 0, scale: 0.5 };
  // a linear weight [out, in]: uniform in ±sqrt(3/in) has variance 1/in
  return { center: 0, scale: Math.sqrt(3 / shape[shape.length - 1]) };
}

export interface MakeCheckpointOptions {
  out: string;
  shape: Shape;
  P: number;
  prefixTokens: number;
  attnSmooth: number;
  dtype: keyof typeof DTYPES;
  seed: number;
  /** Largest shard in bytes; bigger checkpoints are sharded like Hugging Face does. */
  maxShardBytes: number;
  extraConfig?: Record<string, unknown>;
  /** Write config.json only (no weights): enough for `parscale info` on shapes too large to write. */
  configOnly?: boolean;
}

/** The config.json of a checkpoint of `shape` with P streams (Qwen's bos/eos ids; keys as Hugging Face writes them). */
export function shapeConfigJson(
  shape: Shape,
  P: number,
  options: { prefixTokens: number; attnSmooth: number; torchDtype: string; extraConfig?: Record<string, unknown> },
): Record<string, unknown> {
  return {
    architectures: [P > 1 ? 'Qwen2ParScaleForCausalLM' : 'Qwen2ForCausalLM'],
    model_type: 'qwen2_parscale',
    ...shape,
    hidden_act: 'silu',
    rms_norm_eps: 1e-6,
    rope_scaling: null,
    use_sliding_window: false,
    sliding_window: 4096,
    max_window_layers: shape.num_hidden_layers,
    attention_dropout: 0,
    initializer_range: 0.02,
    use_cache: true,
    bos_token_id: 151643,
    eos_token_id: 151643,
    torch_dtype: options.torchDtype,
    parscale_n: P,
    parscale_n_tokens: options.prefixTokens,
    parscale_attn_smooth: options.attnSmooth,
    ...options.extraConfig,
  };
}

export function makeCheckpoint(options: MakeCheckpointOptions): void {
  const { out, shape, P, dtype } = options;
  const { dtype: stored, torch } = DTYPES[dtype];
  const bytesPer = stored === 'F32' ? 4 : 2;
  const configJson = shapeConfigJson(shape, P, { ...options, torchDtype: torch });
  // read back by the loader's own parser: what we write is what a user's load will see
  const config: ModelConfig = parseConfig(configJson, join(out, 'config.json'));
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'config.json'), JSON.stringify(configJson, null, 2) + '\n');
  if (options.configOnly) return;

  // group tensors into shards of at most maxShardBytes, in the expected order
  const shards: [string, number[]][][] = [[]];
  let shardBytes = 0;
  for (const entry of expectedTensors(config)) {
    const bytes = entry[1].reduce((a, b) => a * b, 1) * bytesPer;
    if (shardBytes > 0 && shardBytes + bytes > options.maxShardBytes) {
      shards.push([]);
      shardBytes = 0;
    }
    shards[shards.length - 1].push(entry);
    shardBytes += bytes;
  }
  const random = uniformSource(options.seed);
  const weightMap: Record<string, string> = {};
  let totalSize = 0;
  shards.forEach((entries, i) => {
    const file = shards.length === 1 ? 'model.safetensors' : `model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`;
    // one shard's tensors are built in memory, then written: peak memory ≈ one shard
    const tensors = entries.map(([name, dims]) => {
      const values = new Float32Array(dims.reduce((a, b) => a * b, 1));
      const { center, scale } = initScale(name, dims);
      for (let j = 0; j < values.length; j++) values[j] = center + scale * random();
      weightMap[name] = file;
      totalSize += values.length * bytesPer;
      return { name, dtype: stored, shape: dims, data: float32ToBytes(values, stored) };
    });
    writeSafetensors(join(out, file), tensors, { format: 'pt' });
    process.stderr.write(`wrote ${join(out, file)}\n`);
  });
  if (shards.length > 1) {
    writeFileSync(join(out, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2) + '\n');
  }
}

/** The preset named `preset`, with the fields given by shape flags replaced; throws a usage message. */
export function shapeFromFlags(preset: string, flags: Record<string, string | undefined>): Shape {
  const base = PRESETS[preset];
  if (base === undefined) throw new Error(`unknown --preset "${preset}" (expected one of: ${Object.keys(PRESETS).join(', ')})`);
  const shape = { ...base };
  const integerFlags: [string, Exclude<keyof Shape, 'tie_word_embeddings' | 'rope_theta'>][] = [
    ['hidden', 'hidden_size'],
    ['intermediate', 'intermediate_size'],
    ['layers', 'num_hidden_layers'],
    ['heads', 'num_attention_heads'],
    ['kv-heads', 'num_key_value_heads'],
    ['vocab', 'vocab_size'],
    ['max-position', 'max_position_embeddings'],
  ];
  for (const [flag, key] of integerFlags) {
    const text = flags[flag];
    if (text === undefined) continue;
    const value = Number(text);
    if (!Number.isInteger(value) || value < 1) throw new Error(`--${flag} must be a positive integer, got "${text}"`);
    shape[key] = value;
  }
  if (flags['rope-theta'] !== undefined) {
    const value = Number(flags['rope-theta']);
    if (!(value > 0)) throw new Error(`--rope-theta must be a positive number, got "${flags['rope-theta']}"`);
    shape.rope_theta = value;
  }
  if (flags.tied !== undefined) {
    if (flags.tied !== 'true' && flags.tied !== 'false') throw new Error(`--tied must be true or false, got "${flags.tied}"`);
    shape.tie_word_embeddings = flags.tied === 'true';
  }
  const { hidden_size: H, num_attention_heads: nH, num_key_value_heads: nKV } = shape;
  if (H % nH !== 0) throw new Error(`hidden size ${H} is not a multiple of the ${nH} attention heads`);
  if ((H / nH) % 2 !== 0) throw new Error(`head dimension ${H} / ${nH} = ${H / nH} must be even (RoPE rotates pairs)`);
  if (nH % nKV !== 0) throw new Error(`${nH} attention heads are not a multiple of the ${nKV} key/value heads`);
  return shape;
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('make-checkpoint.ts')) {
  const usage =
    `usage: tsx tools/make-checkpoint.ts --out DIR [--preset ${Object.keys(PRESETS).join('|')}] [--P N] [--prefix-tokens T] [--dtype bf16|f16|f32] [--seed N] [--tokenizer DIR] [--config-only]\n` +
    '       shape overrides: [--hidden H] [--intermediate I] [--layers L] [--heads nH] [--kv-heads nKV] [--vocab V] [--tied true|false] [--max-position N] [--rope-theta X]';
  const { values } = parseArgs({
    options: {
      out: { type: 'string' },
      preset: { type: 'string', default: 'tiny' },
      P: { type: 'string', default: '1' },
      'prefix-tokens': { type: 'string', default: '48' },
      'attn-smooth': { type: 'string', default: '0.01' },
      dtype: { type: 'string', default: 'bf16' },
      seed: { type: 'string', default: '1' },
      'max-shard-mb': { type: 'string', default: '2000' },
      tokenizer: { type: 'string' },
      notice: { type: 'string' },
      hidden: { type: 'string' },
      intermediate: { type: 'string' },
      layers: { type: 'string' },
      heads: { type: 'string' },
      'kv-heads': { type: 'string' },
      vocab: { type: 'string' },
      tied: { type: 'string' },
      'max-position': { type: 'string' },
      'rope-theta': { type: 'string' },
      'config-only': { type: 'boolean' },
    },
  });
  let shape: Shape;
  try {
    const { 'config-only': _configOnly, ...shapeFlags } = values;
    shape = shapeFromFlags(values.preset!, shapeFlags);
  } catch (error) {
    console.error(`${(error as Error).message}\n${usage}`);
    process.exit(2);
  }
  if (values.out === undefined || !(values.dtype! in DTYPES)) {
    console.error(usage);
    process.exit(2);
  }
  const out = resolve(values.out);
  makeCheckpoint({
    out,
    shape,
    P: Number(values.P),
    prefixTokens: Number(values['prefix-tokens']),
    attnSmooth: Number(values['attn-smooth']),
    dtype: values.dtype as keyof typeof DTYPES,
    seed: Number(values.seed),
    maxShardBytes: Number(values['max-shard-mb']) * 1e6,
    extraConfig: values.notice ? { parscale_notice: values.notice } : undefined,
    configOnly: values['config-only'],
  });
  if (values.tokenizer) {
    for (const file of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(values.tokenizer, file), join(out, file));
  }
}
