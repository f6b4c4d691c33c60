// Saving and loading what training produces, in the exact Hugging Face layout of SPEC.md:
// config.json (model_type qwen2_parscale, every key), model.safetensors (F32 or BF16),
// tokenizer.json + tokenizer_config.json, generation_config.json. For resuming, the same folder
// also gets trainer_state.json (step, RNG state, options) and optimizer.safetensors (AdamW
// moments, plus float32 master weights when model.safetensors is BF16, so that resuming is exact).
import { readFileSync, writeFileSync, mkdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import type { ModelConfig } from '../checkpoint/config.ts';
import { STREAM_SETS_KEY, isStreamTensor, streamSetFileName } from '../checkpoint/stream-sets.ts';
import { loadCheckpoint } from '../checkpoint/load.ts';
import { float32ToBytes, writeSafetensors } from '../checkpoint/safetensors.ts';
import { referenceWeightsFromCheckpoint } from '../reference/model.ts';
import type { AdamW } from './optimizer.ts';
import { type ModelParams, parameterEntries } from './weights.ts';

export type SaveDType = 'F32' | 'BF16';

/** config.json as Hugging Face writes it for Qwen2ParScaleForCausalLM (sorted keys). */
export function configJson(config: ModelConfig, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const json: Record<string, unknown> = {
    architectures: ['Qwen2ParScaleForCausalLM'],
    attention_dropout: 0.0,
    auto_map: {
      AutoConfig: 'configuration_qwen2_parscale.Qwen2ParScaleConfig',
      AutoModelForCausalLM: 'modeling_qwen2_parscale.Qwen2ParScaleForCausalLM',
    },
    bos_token_id: config.bosTokenId,
    eos_token_id: config.eosTokenIds.length === 1 ? config.eosTokenIds[0] : config.eosTokenIds,
    head_dim: config.headDim,
    hidden_act: 'silu',
    hidden_size: config.hiddenSize,
    initializer_range: 0.02,
    intermediate_size: config.intermediateSize,
    max_position_embeddings: config.maxPositionEmbeddings,
    max_window_layers: config.numLayers,
    model_type: 'qwen2_parscale',
    num_attention_heads: config.numHeads,
    num_hidden_layers: config.numLayers,
    num_key_value_heads: config.numKvHeads,
    parscale_attn_smooth: config.parscaleAttnSmooth,
    parscale_n: config.parscaleN,
    parscale_n_tokens: config.parscaleNTokens,
    rms_norm_eps: config.rmsNormEps,
    rope_scaling: null,
    rope_theta: config.ropeTheta,
    sliding_window: config.maxPositionEmbeddings,
    tie_word_embeddings: config.tieWordEmbeddings,
    torch_dtype: config.torchDtype ?? 'float32',
    transformers_version: '4.47.0',
    use_cache: true,
    use_sliding_window: false,
    vocab_size: config.vocabSize,
    ...extra,
  };
  return Object.fromEntries(Object.entries(json).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

export interface SaveModelOptions {
  dtype: SaveDType;
  tokenizerJson: Record<string, unknown>;
  tokenizerConfigJson: Record<string, unknown>;
  generationConfig?: Record<string, unknown>;
  /** extra config.json keys (e.g. parscale_notice) */
  extraConfig?: Record<string, unknown>;
}

/** Write a complete model folder that `parscale generate --model DIR` (and transformers) load. */
export async function saveModel(dir: string, config: ModelConfig, params: ModelParams, options: SaveModelOptions): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const torchDtype = options.dtype === 'F32' ? 'float32' : 'bfloat16';
  const stored: ModelConfig = { ...config, torchDtype };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(configJson(stored, options.extraConfig), null, 2) + '\n');
  const tensors = parameterEntries(config, params).map((e) => ({
    name: e.name,
    dtype: options.dtype,
    shape: e.shape,
    data: float32ToBytes(e.data, options.dtype),
  }));
  await writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(options.tokenizerJson) + '\n');
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(options.tokenizerConfigJson, null, 2) + '\n');
  if (options.generationConfig !== undefined) {
    writeFileSync(join(dir, 'generation_config.json'), JSON.stringify(options.generationConfig, null, 2) + '\n');
  }
}

/**
 * Dynamic P: write the stream set of `params` (its prefixes and aggregation layer, for
 * config.parscaleN streams) to DIR/streams-P{P}.safetensors; returns the file name. The backbone
 * tensors of `params` are not written.
 */
export function saveStreamSet(dir: string, config: ModelConfig, params: ModelParams, dtype: SaveDType): string {
  if (config.parscaleN < 2) throw new RangeError(`a stream set needs P ≥ 2, got ${config.parscaleN}`);
  const file = streamSetFileName(config.parscaleN);
  const tensors = parameterEntries(config, params)
    .filter((e) => isStreamTensor(e.name))
    .map((e) => ({ name: e.name, dtype, shape: e.shape, data: float32ToBytes(e.data, dtype) }));
  writeSafetensors(join(dir, file), tensors, { format: 'pt', parscale_n: String(config.parscaleN) });
  return file;
}

/** Add a stream set (or replace the one of the same P) in DIR/config.json "parscale_stream_sets"; other keys are kept as they are. */
export function addStreamSetToConfig(dir: string, config: ModelConfig, file: string): void {
  const configFile = join(dir, 'config.json');
  const json = JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, unknown>;
  const sets = { ...((json[STREAM_SETS_KEY] as Record<string, unknown> | undefined) ?? {}) };
  sets[String(config.parscaleN)] = { file, parscale_n_tokens: config.parscaleNTokens, parscale_attn_smooth: config.parscaleAttnSmooth };
  // integer-like keys keep ascending order in a JS object: "2", "4", "8"
  json[STREAM_SETS_KEY] = sets;
  writeFileSync(configFile, JSON.stringify(json, null, 2) + '\n');
}

/** Load a model folder's config and float32 weights (any dtype, via the project's loader). */
export async function loadModelParams(dir: string): Promise<{ config: ModelConfig; params: ModelParams }> {
  const checkpoint = await loadCheckpoint(dir);
  return { config: checkpoint.config, params: referenceWeightsFromCheckpoint(checkpoint) };
}

/** Read the F32 tensors of a safetensors file we wrote (optimizer state, master weights). */
export function readFloat32Safetensors(file: string): Map<string, Float32Array> {
  const bytes = readFileSync(file);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8')) as Record<
    string,
    { dtype: string; shape: number[]; data_offsets: [number, number] }
  >;
  const base = 8 + headerLength;
  const tensors = new Map<string, Float32Array>();
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    if (info.dtype !== 'F32') throw new Error(`${file}: tensor ${name} has dtype ${info.dtype}, expected F32`);
    const [from, to] = info.data_offsets;
    // copy: the slice of the file buffer may not be 4-byte aligned
    const data = new Float32Array((to - from) / 4);
    new Uint8Array(data.buffer).set(bytes.subarray(base + from, base + to));
    tensors.set(name, data);
  }
  return tensors;
}

export interface TrainerState {
  /** completed optimizer updates */
  step: number;
  /** the data sampler's RNG state after `step` updates */
  rngState: number;
  tokensSeen: number;
  /** the options of the run (what --resume continues with) */
  options: Record<string, unknown>;
}

/** Everything needed to continue training exactly where it stopped. */
export async function saveTrainerState(
  dir: string,
  config: ModelConfig,
  params: ModelParams,
  optimizer: AdamW,
  state: TrainerState,
  modelDtype: SaveDType,
): Promise<void> {
  const tensors: { name: string; dtype: 'F32'; shape: number[]; data: Uint8Array }[] = [];
  for (const e of parameterEntries(config, params)) {
    tensors.push({ name: `exp_avg.${e.name}`, dtype: 'F32', shape: e.shape, data: float32ToBytes(optimizer.expAvg.get(e.name)!, 'F32') });
    tensors.push({ name: `exp_avg_sq.${e.name}`, dtype: 'F32', shape: e.shape, data: float32ToBytes(optimizer.expAvgSq.get(e.name)!, 'F32') });
    if (modelDtype !== 'F32') tensors.push({ name: `master.${e.name}`, dtype: 'F32', shape: e.shape, data: float32ToBytes(e.data, 'F32') });
  }
  await writeSafetensors(join(dir, 'optimizer.safetensors'), tensors, { optimizer_step: String(optimizer.step) });
  writeFileSync(join(dir, 'trainer_state.json'), JSON.stringify(state, null, 2) + '\n');
}

export function readTrainerState(dir: string): TrainerState {
  const file = join(dir, 'trainer_state.json');
  if (!existsSync(file)) throw new Error(`${file}: not found (is ${dir} a folder written by parscale train?)`);
  return JSON.parse(readFileSync(file, 'utf8')) as TrainerState;
}

/** Put the saved moments (and master weights, if any) back into `optimizer` and `params`. */
export function restoreOptimizer(dir: string, config: ModelConfig, params: ModelParams, optimizer: AdamW, step: number): void {
  const saved = readFloat32Safetensors(join(dir, 'optimizer.safetensors'));
  for (const e of parameterEntries(config, params)) {
    const m = saved.get(`exp_avg.${e.name}`);
    const v = saved.get(`exp_avg_sq.${e.name}`);
    if (m === undefined || v === undefined) throw new Error(`${dir}/optimizer.safetensors: no moments for ${e.name}`);
    optimizer.expAvg.get(e.name)!.set(m);
    optimizer.expAvgSq.get(e.name)!.set(v);
    const master = saved.get(`master.${e.name}`);
    if (master !== undefined) e.data.set(master);
  }
  optimizer.step = step;
}
