// Defaults for generation from a checkpoint's generation_config.json (optional file) and
// config.json. Explicit options always win over these.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ModelConfig } from '../checkpoint/config.ts';
import { CheckpointError } from '../checkpoint/errors.ts';
import type { SamplingOptions } from './sampling.ts';

export interface GenerationDefaults extends SamplingOptions {
  maxNewTokens?: number;
  /** Every id that ends generation: generation_config.json's eos_token_id, else config.json's. */
  eosTokenIds: number[];
}

const asIdList = (value: unknown): number[] | null => {
  if (typeof value === 'number' && Number.isInteger(value)) return [value];
  if (Array.isArray(value) && value.every((v) => Number.isInteger(v))) return value as number[];
  return null;
};

export function readGenerationDefaults(dir: string, config: ModelConfig): GenerationDefaults {
  const file = join(dir, 'generation_config.json');
  const defaults: GenerationDefaults = { eosTokenIds: config.eosTokenIds };
  if (!existsSync(file)) return defaults;
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    throw new CheckpointError('CONFIG_INVALID', `${file}: not valid JSON (${(error as Error).message})`, { file });
  }
  const number = (key: string): number | undefined => (typeof json[key] === 'number' ? (json[key] as number) : undefined);
  const eos = asIdList(json.eos_token_id);
  if (eos !== null) defaults.eosTokenIds = eos;
  // transformers samples only when do_sample is true; otherwise it decodes greedily whatever
  // temperature/top_p say, so we do the same.
  if (json.do_sample === true) {
    defaults.temperature = number('temperature') ?? 1;
    defaults.topK = number('top_k');
    defaults.topP = number('top_p');
  } else {
    defaults.temperature = 0;
  }
  defaults.repetitionPenalty = number('repetition_penalty');
  defaults.maxNewTokens = number('max_new_tokens');
  return defaults;
}
