// Write small checkpoints in the real Hugging Face format into a temporary folder, for loader
// tests that need to damage them in specific ways.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expectedTensors, parseConfig } from '../../src/checkpoint/config.ts';
import { type DType, float32ToBytes, writeSafetensors } from '../../src/checkpoint/safetensors.ts';
import { randomArray, rng } from './random-model.ts';

export const tinyConfigJson = (overrides: Record<string, unknown> = {}): Record<string, unknown> => ({
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
});

export interface SyntheticOptions {
  dtype?: DType;
  /** split into this many shards with an index (1: a single model.safetensors) */
  shards?: number;
  seed?: number;
}

/** Returns the folder and the float32 values written (after rounding to the stored dtype). */
export function writeSyntheticCheckpoint(configJson: Record<string, unknown>, options: SyntheticOptions = {}) {
  const { dtype = 'BF16', shards = 1, seed = 1 } = options;
  const dir = mkdtempSync(join(tmpdir(), 'parscale-ckpt-'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify(configJson));
  const config = parseConfig(configJson, join(dir, 'config.json'));
  const random = rng(seed);
  const tensors = [...expectedTensors(config)].map(([name, shape]) => {
    const data = float32ToBytes(randomArray(random, shape.reduce((a, b) => a * b, 1), 1), dtype);
    return { name, dtype, shape, data };
  });
  if (shards === 1) {
    writeSafetensors(join(dir, 'model.safetensors'), tensors);
  } else {
    const weightMap: Record<string, string> = {};
    const per = Math.ceil(tensors.length / shards);
    for (let s = 0; s < shards; s++) {
      const file = `model-${String(s + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
      const part = tensors.slice(s * per, (s + 1) * per);
      for (const t of part) weightMap[t.name] = file;
      writeSafetensors(join(dir, file), part);
    }
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  }
  return { dir, tensors };
}
