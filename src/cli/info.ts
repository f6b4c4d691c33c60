// `parscale info`: what a checkpoint is, without loading its weights.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { type ModelConfig, expectedTensors, readConfig } from '../checkpoint/config.ts';
import { locateStreamSet, locateTensors } from '../checkpoint/load.ts';
import type { DType } from '../checkpoint/safetensors.ts';
import {
  type StreamSetSpec,
  availableStreamCounts,
  backboneConfig,
  checkStreamCount,
  defaultStreamCount,
  expectedStreamTensors,
  readStreamSetSpecs,
  streamSetConfig,
} from '../checkpoint/stream-sets.ts';
import { WASM_MEMORY_LIMIT_BYTES, WEIGHT_CHOICES, type PlannedStreamSet, type WasmMemoryPlan, planWasmMemory } from '../wasm-bridge/plan.ts';
import { numberOption, parseCommandLine, UsageError } from './args.ts';
import { streamsFrom, weightsFrom } from './common.ts';

export const infoHelp = `Usage: parscale info --model DIR [--P N] [--json]

Summarise a checkpoint: its configuration, parameter counts (with and without embeddings, and
the ParScale parts), P, and the memory the weights and the KV cache take — for the wasm backend
with stored and with int8 weights, against the 4 GiB of one WebAssembly memory; for a dynamic-P
folder also every stream set it holds, with its parameters (the wasm memory counts all of them:
they are all loaded). Reads config.json, the safetensors headers (for the dtypes, if the weights
are there) and the file sizes only.

Options:
  -m, --model DIR       model folder
      --P N             summarise the model with N streams (one of its stream sets; default: the
                        P that generate would use)
      --weights W       show the wasm memory for this choice only: stored | int8 (default: both)
      --max-context N   KV cache positions to count (default: the model's, at most 4096)
      --json            print the summary as JSON
  -h, --help        show this help`;

export async function infoCommand(args: string[]): Promise<number> {
  const { values } = parseCommandLine(args, {
    model: { type: 'string', short: 'm' },
    P: { type: 'string' },
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
  const folderConfig = readConfig(dir);
  const specs = readStreamSetSpecs(dir, folderConfig);
  const available = availableStreamCounts(folderConfig, specs);
  const P = streamsFrom(values) ?? defaultStreamCount(folderConfig, specs);
  checkStreamCount(dir, P, available);
  // every choice of P: the backbone alone, the folder's own streams, each stream set
  const choice = (n: number): { config: ModelConfig; file: string | null } => {
    if (n === 1) return { config: backboneConfig(folderConfig), file: null };
    if (n === folderConfig.parscaleN) return { config: folderConfig, file: null };
    const spec = specs.find((s) => s.P === n)!;
    return { config: streamSetConfig(folderConfig, n, spec.nTokens, spec.attnSmooth), file: spec.file };
  };
  const streamSets = available.map((n) => {
    const { config: c, file } = choice(n);
    const parameters = n === 1 ? 0 : [...expectedStreamTensors(c).values()].reduce((sum, shape) => sum + shape.reduce((a, b) => a * b, 1), 0);
    return {
      P: n,
      file: file === null ? (n === 1 ? 'backbone alone' : 'own streams (parscale_n)') : basename(file),
      prefix_tokens: n > 1 ? c.parscaleNTokens : 0,
      attn_smooth: n > 1 ? c.parscaleAttnSmooth : 0,
      parameters,
      file_bytes: file !== null && existsSync(file) ? statSync(file).size : null,
    };
  });
  const config = choice(P).config;
  let total = 0;
  let embedding = 0;
  let parscale = 0;
  for (const [name, shape] of expectedTensors(config)) {
    const count = shape.reduce((a, b) => a * b, 1);
    total += count;
    if (name === 'model.embed_tokens.weight' || name === 'lm_head.weight') embedding += count;
    if (name.includes('prefix_') || name.includes('aggregate_layer')) parscale += count;
  }
  // the model's own files: model.safetensors or its shards, and the stream sets (not, say, the
  // optimizer.safetensors a training run leaves next to them)
  const weightFileBytes =
    readdirSync(dir)
      .filter((f) => /^model(-\d+-of-\d+)?\.safetensors$/.test(f))
      .reduce((sum, f) => sum + statSync(join(dir, f)).size, 0) +
    specs.reduce((sum, spec) => sum + (existsSync(spec.file) ? statSync(spec.file).size : 0), 0);
  // per real token: keys and values, every layer, stream and KV head, float32
  const kvBytesPerToken = 2 * config.numLayers * P * config.numKvHeads * config.headDim * 4;
  const maxContext = values['max-context'] === undefined ? undefined : numberOption('max-context', values['max-context'], 1, { integer: true, min: 1 });
  const chosen = weightsFrom(values, 'wasm');
  // the wasm backend loads the backbone and every stream set, whichever P runs: one plan for all of them
  const dtypeOf = storedDtypes(dir, folderConfig);
  const plannedSets = specs.map((spec) => plannedStreamSet(spec, folderConfig, dtypeOf));
  const plans = (chosen === undefined ? WEIGHT_CHOICES : [chosen]).map((weights) => planWasmMemory(folderConfig, dtypeOf, { weights, maxContext, streamSets: plannedSets }));
  const summary = {
    model: dir,
    model_type: folderConfig.modelType,
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
    stream_sets: streamSets,
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
      `type          ${folderConfig.modelType}, P = ${P}${P > 1 ? ` streams, ${config.parscaleNTokens} prefix tokens, smoothing ${config.parscaleAttnSmooth}` : ' (plain Qwen2)'}`,
      `shape         ${config.numLayers} layers, hidden ${config.hiddenSize}, intermediate ${config.intermediateSize}, ${config.numHeads} heads / ${config.numKvHeads} KV heads of ${config.headDim}, vocab ${n(config.vocabSize)}`,
      `context       ${n(config.maxPositionEmbeddings)} positions; embeddings ${config.tieWordEmbeddings ? 'tied' : 'untied'}; stored as ${config.torchDtype ?? 'unknown dtype'}`,
      `parameters    ${n(total)} in all, ${n(total - embedding)} without embeddings, ${n(parscale)} ParScale (prefixes + aggregation)`,
      `memory        weight files ${gb(weightFileBytes)}; reference backend (float32) ${gb(total * 4)}`,
      `KV cache      ${gb(kvBytesPerToken)} per token for all ${P} stream(s)${P > 1 ? ` + ${gb(summary.prefix_cache_bytes)} of prefixes` : ''}`,
      ...(specs.length > 0
        ? [
            `stream sets   P = ${available.join(', ')} on one backbone (choose with --P)`,
            ...streamSets.map(
              (set) =>
                `  P = ${String(set.P).padEnd(3)} ${set.P === 1 ? 'the backbone alone' : `${n(set.parameters)} parameters, ${set.prefix_tokens} prefix tokens, smoothing ${set.attn_smooth}`}` +
                (set.P === 1 ? '' : ` (${set.file}${set.file_bytes !== null ? `, ${gb(set.file_bytes)}` : ''})`) +
                (set.P === P ? '  ← shown above' : ''),
            ),
          ]
        : []),
      ...plans.map((plan, i) => `${i === 0 ? 'wasm memory ' : '            '}  ${wasmLine(plan)}`),
      ...(specs.length > 0 ? [`              (the backbone and every stream set, the KV cache for P = ${plans[0].streams} with ${plans[0].prefixTokens} prefix tokens: any P runs in it)`] : []),
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

/** A stream set's config and dtypes for the plan: from its header when the file is there (checked as loading would), else the backbone's. */
function plannedStreamSet(spec: StreamSetSpec, backbone: ModelConfig, backboneDtypeOf: (name: string) => DType): PlannedStreamSet {
  if (existsSync(spec.file)) {
    const { config, tensors } = locateStreamSet(spec, backbone);
    return { config, dtypeOf: (name) => tensors.get(name)!.dtype };
  }
  return { config: streamSetConfig(backbone, spec.P, spec.nTokens, spec.attnSmooth), dtypeOf: () => backboneDtypeOf('model.embed_tokens.weight') };
}

const TORCH_DTYPES: Record<string, DType> = { bfloat16: 'BF16', float16: 'F16', float32: 'F32' };

/** Each tensor's stored dtype: from the safetensors headers when the weights are there, else config.json's torch_dtype. */
function storedDtypes(dir: string, config: ModelConfig): (name: string) => DType {
  // the backbone's own files (a stream set's file alone says nothing of the backbone's dtypes)
  if (existsSync(join(dir, 'model.safetensors')) || existsSync(join(dir, 'model.safetensors.index.json'))) {
    const tensors = locateTensors(dir, config);
    return (name) => tensors.get(name)!.dtype;
  }
  const dtype = TORCH_DTYPES[config.torchDtype ?? 'bfloat16'] ?? 'BF16';
  return () => dtype;
}
