// `parscale info`: what a checkpoint is, without loading its weights.
import { readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { type ModelConfig, expectedTensors, readConfig } from '../checkpoint/config.ts';
import { locateTensors } from '../checkpoint/load.ts';
import type { DType } from '../checkpoint/safetensors.ts';
import { WASM_MEMORY_LIMIT_BYTES, WEIGHT_CHOICES, type WasmMemoryPlan, planWasmMemory } from '../wasm-bridge/plan.ts';
import { numberOption, parseCommandLine, UsageError } from './args.ts';
import { weightsFrom } from './common.ts';

export const infoHelp = `Usage: parscale info --model DIR [--json]

Summarise a checkpoint: its configuration, parameter counts (with and without embeddings, and
the ParScale parts), P, and the memory the weights and the KV cache take — for the wasm backend
with stored and with int8 weights, against the 4 GiB of one WebAssembly memory. Reads config.json,
the safetensors headers (for the dtypes, if the weights are there) and the file sizes only.

Options:
  -m, --model DIR       model folder
      --weights W       show the wasm memory for this choice only: stored | int8 (default: both)
      --max-context N   KV cache positions to count (default: the model's, at most 4096)
      --json            print the summary as JSON
  -h, --help        show this help`;

export async function infoCommand(args: string[]): Promise<number> {
  const { values } = parseCommandLine(args, {
    model: { type: 'string', short: 'm' },
    weights: { type: 'string' },
    'max-context': { type: 'string' },
    json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    console.log(infoHelp);
    return 0;
  }
  if (values.model === undefined) throw new UsageError('--model DIR is required');
  const dir = resolve(values.model);
  const config = readConfig(dir);
  const P = config.parscaleN;
  let total = 0;
  let embedding = 0;
  let parscale = 0;
  for (const [name, shape] of expectedTensors(config)) {
    const count = shape.reduce((a, b) => a * b, 1);
    total += count;
    if (name === 'model.embed_tokens.weight' || name === 'lm_head.weight') embedding += count;
    if (name.includes('prefix_') || name.includes('aggregate_layer')) parscale += count;
  }
  const weightFileBytes = readdirSync(dir)
    .filter((f) => f.endsWith('.safetensors'))
    .reduce((sum, f) => sum + statSync(join(dir, f)).size, 0);
  // per real token: keys and values, every layer, stream and KV head, float32
  const kvBytesPerToken = 2 * config.numLayers * P * config.numKvHeads * config.headDim * 4;
  const maxContext = values['max-context'] === undefined ? undefined : numberOption('max-context', values['max-context'], 1, { integer: true, min: 1 });
  const chosen = weightsFrom(values, 'wasm');
  const dtypeOf = storedDtypes(dir, config);
  const plans = (chosen === undefined ? WEIGHT_CHOICES : [chosen]).map((weights) => planWasmMemory(config, dtypeOf, { weights, maxContext }));
  const summary = {
    model: dir,
    model_type: config.modelType,
    P,
    prefix_tokens: P > 1 ? config.parscaleNTokens : 0,
    attn_smooth: P > 1 ? config.parscaleAttnSmooth : 0,
    layers: config.numLayers,
    hidden_size: config.hiddenSize,
    intermediate_size: config.intermediateSize,
    heads: config.numHeads,
    kv_heads: config.numKvHeads,
    head_dim: config.headDim,
    vocab_size: config.vocabSize,
    max_position_embeddings: config.maxPositionEmbeddings,
    tied_embeddings: config.tieWordEmbeddings,
    torch_dtype: config.torchDtype,
    parameters: total,
    parameters_without_embeddings: total - embedding,
    parscale_parameters: parscale,
    weight_file_bytes: weightFileBytes,
    reference_weight_bytes: total * 4,
    kv_cache_bytes_per_token: kvBytesPerToken,
    prefix_cache_bytes: P > 1 ? (kvBytesPerToken * config.parscaleNTokens) : 0,
    wasm_memory: Object.fromEntries(
      plans.map((plan) => [
        plan.weights,
        {
          max_context: plan.maxContext,
          weight_bytes: plan.weightBytes,
          kv_cache_bytes: plan.cacheBytes,
          activation_bytes: plan.activationBytes,
          total_bytes: plan.totalBytes,
          fits_4_gib: plan.totalBytes <= WASM_MEMORY_LIMIT_BYTES,
          max_context_that_fits: plan.maxContextThatFits,
          prefix_bytes_outside: plan.hostBytes,
        },
      ]),
    ),
  };
  if (values.json) {
    console.log(JSON.stringify(summary, null, 2));
    return 0;
  }
  const n = (x: number) => x.toLocaleString('en-US');
  const gb = (x: number) => (x >= 1e9 ? `${(x / 1e9).toFixed(2)} GB` : x >= 1e6 ? `${(x / 1e6).toFixed(2)} MB` : `${(x / 1e3).toFixed(1)} kB`);
  console.log(
    [
      `model         ${dir}`,
      `type          ${config.modelType}, P = ${P}${P > 1 ? ` streams, ${config.parscaleNTokens} prefix tokens, smoothing ${config.parscaleAttnSmooth}` : ' (plain Qwen2)'}`,
      `shape         ${config.numLayers} layers, hidden ${config.hiddenSize}, intermediate ${config.intermediateSize}, ${config.numHeads} heads / ${config.numKvHeads} KV heads of ${config.headDim}, vocab ${n(config.vocabSize)}`,
      `context       ${n(config.maxPositionEmbeddings)} positions; embeddings ${config.tieWordEmbeddings ? 'tied' : 'untied'}; stored as ${config.torchDtype ?? 'unknown dtype'}`,
      `parameters    ${n(total)} in all, ${n(total - embedding)} without embeddings, ${n(parscale)} ParScale (prefixes + aggregation)`,
      `memory        weight files ${gb(weightFileBytes)}; reference backend (float32) ${gb(total * 4)}`,
      `KV cache      ${gb(kvBytesPerToken)} per token for all ${P} stream(s)${P > 1 ? ` + ${gb(summary.prefix_cache_bytes)} of prefixes` : ''}`,
      ...plans.map((plan, i) => `${i === 0 ? 'wasm memory ' : '            '}  ${wasmLine(plan)}`),
    ].join('\n'),
  );
  return 0;
}

const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(2)} GiB`;

/** "int8 weights: 3.05 GiB + KV cache (1024 positions) 0.56 GiB + activations 0.07 GiB = 3.68 GiB of 4 GiB: fits" */
function wasmLine(plan: WasmMemoryPlan): string {
  const fits = plan.totalBytes <= WASM_MEMORY_LIMIT_BYTES;
  const name = plan.weights === 'int8' ? 'int8 weights  ' : 'stored weights';
  return (
    `${name} ${gib(plan.weightBytes)} + KV cache (${plan.maxContext} positions) ${gib(plan.cacheBytes)} + activations ${gib(plan.activationBytes)} = ${gib(plan.totalBytes)}: ` +
    (fits ? 'fits in 4 GiB' : `does not fit in 4 GiB${plan.maxContextThatFits > 0 ? ` (at most ${plan.maxContextThatFits} positions would)` : ''}`)
  );
}

const TORCH_DTYPES: Record<string, DType> = { bfloat16: 'BF16', float16: 'F16', float32: 'F32' };

/** Each tensor's stored dtype: from the safetensors headers when the weights are there, else config.json's torch_dtype. */
function storedDtypes(dir: string, config: ModelConfig): (name: string) => DType {
  if (readdirSync(dir).some((f) => f.endsWith('.safetensors'))) {
    const tensors = locateTensors(dir, config);
    return (name) => tensors.get(name)!.dtype;
  }
  const dtype = TORCH_DTYPES[config.torchDtype ?? 'bfloat16'] ?? 'BF16';
  return () => dtype;
}
