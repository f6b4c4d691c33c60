// The model configuration, read from a checkpoint's config.json (SPEC.md "Configuration").
// Field names are camelCase here; each comment names the config.json key it comes from.
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CheckpointError } from './errors.ts';

export interface ModelConfig {
  /** model_type: "qwen2_parscale", or "qwen2" for plain Qwen2 checkpoints (then P = 1) */
  modelType: 'qwen2' | 'qwen2_parscale';
  /** hidden_size, H */
  hiddenSize: number;
  /** intermediate_size, I */
  intermediateSize: number;
  /** num_hidden_layers, L */
  numLayers: number;
  /** num_attention_heads, nH */
  numHeads: number;
  /** num_key_value_heads, nKV (grouped-query attention; nH % nKV == 0) */
  numKvHeads: number;
  /** head_dim, d (default H / nH) */
  headDim: number;
  /** vocab_size, V */
  vocabSize: number;
  /** rms_norm_eps */
  rmsNormEps: number;
  /** rope_theta */
  ropeTheta: number;
  /** max_position_embeddings */
  maxPositionEmbeddings: number;
  /** tie_word_embeddings: when true there is no lm_head.weight and the embedding is the head */
  tieWordEmbeddings: boolean;
  /** torch_dtype, as written ("bfloat16", "float16", "float32"), or null when absent */
  torchDtype: string | null;
  /** bos_token_id, or null */
  bosTokenId: number | null;
  /** eos_token_id, always as a list (config.json may hold a number or a list) */
  eosTokenIds: number[];
  /** parscale_n, P (1 for plain Qwen2) */
  parscaleN: number;
  /** parscale_n_tokens, T: prefix entries per stream, layer and KV head (default 48) */
  parscaleNTokens: number;
  /** parscale_attn_smooth, s (default 0.01) */
  parscaleAttnSmooth: number;
}

/** The tensors a checkpoint of this configuration must hold, with their shapes (SPEC.md "Tensors"). */
export function expectedTensors(config: ModelConfig): Map<string, number[]> {
  const { hiddenSize: H, intermediateSize: I, numHeads, numKvHeads, headDim: d, vocabSize: V } = config;
  const P = config.parscaleN;
  const T = config.parscaleNTokens;
  const shapes = new Map<string, number[]>();
  shapes.set('model.embed_tokens.weight', [V, H]);
  for (let i = 0; i < config.numLayers; i++) {
    const layer = `model.layers.${i}`;
    shapes.set(`${layer}.input_layernorm.weight`, [H]);
    shapes.set(`${layer}.self_attn.q_proj.weight`, [numHeads * d, H]);
    shapes.set(`${layer}.self_attn.q_proj.bias`, [numHeads * d]);
    shapes.set(`${layer}.self_attn.k_proj.weight`, [numKvHeads * d, H]);
    shapes.set(`${layer}.self_attn.k_proj.bias`, [numKvHeads * d]);
    shapes.set(`${layer}.self_attn.v_proj.weight`, [numKvHeads * d, H]);
    shapes.set(`${layer}.self_attn.v_proj.bias`, [numKvHeads * d]);
    shapes.set(`${layer}.self_attn.o_proj.weight`, [H, numHeads * d]);
    shapes.set(`${layer}.post_attention_layernorm.weight`, [H]);
    shapes.set(`${layer}.mlp.gate_proj.weight`, [I, H]);
    shapes.set(`${layer}.mlp.up_proj.weight`, [I, H]);
    shapes.set(`${layer}.mlp.down_proj.weight`, [H, I]);
    if (P > 1) {
      shapes.set(`${layer}.self_attn.prefix_k`, [P, numKvHeads, T, d]);
      shapes.set(`${layer}.self_attn.prefix_v`, [P, numKvHeads, T, d]);
    }
  }
  shapes.set('model.norm.weight', [H]);
  if (P > 1) {
    shapes.set('model.aggregate_layer.0.weight', [H, P * H]);
    shapes.set('model.aggregate_layer.0.bias', [H]);
    shapes.set('model.aggregate_layer.2.weight', [P, H]);
    shapes.set('model.aggregate_layer.2.bias', [P]);
  }
  if (!config.tieWordEmbeddings) shapes.set('lm_head.weight', [V, H]);
  return shapes;
}

// ---- reading and validating config.json ----

/** Read and validate DIR/config.json. */
export function readConfig(dir: string): ModelConfig {
  const file = join(resolve(dir), 'config.json');
  if (!existsSync(file)) throw new CheckpointError('FILE_NOT_FOUND', `${file}: config.json not found`, { file });
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
    throw new CheckpointError('FILE_UNREADABLE', `${file}: cannot read config.json (${code})`, { file, cause: error });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new CheckpointError('CONFIG_INVALID', `${file}: not valid JSON (${(error as Error).message})`, { file, cause: error });
  }
  return parseConfig(json, file);
}

/**
 * Validate a parsed config.json and fill in the defaults of Hugging Face's Qwen2 and
 * Qwen2-ParScale configs; `file` is only used in error messages. An optional key that is
 * null counts as absent (transformers writes null for "not set").
 */
export function parseConfig(json: unknown, file: string): ModelConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new CheckpointError('CONFIG_INVALID', `${file}: expected a JSON object, found ${JSON.stringify(json)}`, { file });
  }
  const raw = json as Record<string, unknown>;
  const isAbsent = (key: string) => raw[key] === undefined || raw[key] === null;
  const missing = (key: string): never => {
    throw new CheckpointError('CONFIG_MISSING_KEY', `${file}: required key "${key}" is missing`, { file, key });
  };
  const invalid = (key: string, expected: string): never => {
    throw new CheckpointError('CONFIG_INVALID', `${file}: "${key}" must be ${expected}, found ${JSON.stringify(raw[key])}`, { file, key });
  };
  const unsupported = (key: string, why: string): never => {
    throw new CheckpointError('CONFIG_UNSUPPORTED', `${file}: "${key}" = ${JSON.stringify(raw[key])} is not supported (${why})`, { file, key });
  };
  /** A positive integer; `fallback` when absent, or a CONFIG_MISSING_KEY error when there is none. */
  const positiveInt = (key: string, fallback?: number): number => {
    if (raw[key] === undefined && fallback === undefined) missing(key);
    const value = isAbsent(key) && fallback !== undefined ? fallback : raw[key];
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) invalid(key, 'a positive integer');
    return value as number;
  };
  const finiteNumber = (key: string, fallback: number, isValid: (v: number) => boolean, expected: string): number => {
    const value = isAbsent(key) ? fallback : raw[key];
    if (typeof value !== 'number' || !Number.isFinite(value) || !isValid(value)) invalid(key, expected);
    return value as number;
  };
  const boolean = (key: string, fallback: boolean): boolean => {
    const value = isAbsent(key) ? fallback : raw[key];
    if (typeof value !== 'boolean') invalid(key, 'true or false');
    return value as boolean;
  };
  const isTokenId = (id: unknown) => typeof id === 'number' && Number.isInteger(id) && id >= 0;
  const tokenId = (key: string): number | null => {
    if (isAbsent(key)) return null;
    if (!isTokenId(raw[key])) invalid(key, 'a token id (non-negative integer) or null');
    return raw[key] as number;
  };

  const modelType = raw.model_type;
  if (modelType === undefined) missing('model_type');
  if (modelType !== 'qwen2_parscale' && modelType !== 'qwen2') unsupported('model_type', 'expected "qwen2_parscale" or "qwen2"');

  // Attention geometry (SPEC.md "Configuration").
  const hiddenSize = positiveInt('hidden_size');
  const numHeads = positiveInt('num_attention_heads');
  const numKvHeads = positiveInt('num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) {
    invalid('num_key_value_heads', `a divisor of num_attention_heads (${numHeads}) for grouped-query attention`);
  }
  if (isAbsent('head_dim') && hiddenSize % numHeads !== 0) {
    invalid('hidden_size', `divisible by num_attention_heads (${numHeads}) when head_dim is not given`);
  }
  const headDim = positiveInt('head_dim', hiddenSize / numHeads);
  if (headDim % 2 !== 0) invalid('head_dim', 'even (RoPE rotates the two halves of each head)');

  // Settings no released checkpoint uses: refuse rather than silently compute something else.
  if (!isAbsent('rope_scaling')) unsupported('rope_scaling', 'only null is implemented');
  if (boolean('use_sliding_window', false)) unsupported('use_sliding_window', 'sliding-window attention is not implemented');
  if (!isAbsent('hidden_act') && raw.hidden_act !== 'silu') unsupported('hidden_act', 'only "silu" is implemented');
  if (!isAbsent('torch_dtype') && typeof raw.torch_dtype !== 'string') invalid('torch_dtype', 'a string such as "bfloat16"');

  const eos = raw.eos_token_id;
  let eosTokenIds: number[] = [];
  if (isTokenId(eos)) eosTokenIds = [eos as number];
  else if (Array.isArray(eos) && eos.every(isTokenId)) eosTokenIds = eos as number[];
  else if (!isAbsent('eos_token_id')) invalid('eos_token_id', 'a token id or a list of token ids');

  // ParScale. Plain Qwen2 checkpoints have no ParScale keys: they are P = 1. With P = 1 the
  // prefix length is unused, so it is only validated when there are prefixes.
  const parscaleN = modelType === 'qwen2' ? 1 : positiveInt('parscale_n', 1);
  const storedNTokens = raw.parscale_n_tokens;
  const parscaleNTokens =
    parscaleN > 1 ? positiveInt('parscale_n_tokens', 48) : Number.isInteger(storedNTokens) && (storedNTokens as number) >= 1 ? (storedNTokens as number) : 48;
  const parscaleAttnSmooth = modelType === 'qwen2' ? 0.01 : finiteNumber('parscale_attn_smooth', 0.01, (v) => v >= 0 && v < 1, 'a number in [0, 1)');

  return {
    modelType: modelType as ModelConfig['modelType'],
    hiddenSize,
    intermediateSize: positiveInt('intermediate_size'),
    numLayers: positiveInt('num_hidden_layers'),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: positiveInt('vocab_size'),
    rmsNormEps: finiteNumber('rms_norm_eps', 1e-6, (v) => v > 0, 'a positive number'),
    ropeTheta: finiteNumber('rope_theta', 10000, (v) => v > 0, 'a positive number'),
    maxPositionEmbeddings: positiveInt('max_position_embeddings', 32768),
    tieWordEmbeddings: boolean('tie_word_embeddings', false),
    torchDtype: isAbsent('torch_dtype') ? null : (raw.torch_dtype as string),
    bosTokenId: tokenId('bos_token_id'),
    eosTokenIds,
    parscaleN,
    parscaleNTokens,
    parscaleAttnSmooth,
  };
}
