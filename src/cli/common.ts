// Pieces shared by the commands that load a model and generate: the model/sampling flags and a
// load progress bar on stderr.
import { existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { GenerateOptions, GenerationResult } from '../generation/generate.ts';
import type { LoadProgress } from '../checkpoint/load.ts';
import { BACKENDS, type BackendName, DEFAULT_BACKEND } from '../load-model.ts';
import { TextModel } from '../text-model.ts';
import { WEIGHT_CHOICES, type WeightsChoice } from '../wasm-bridge/plan.ts';
import { type OptionSpec, UsageError, numberOption } from './args.ts';

export const modelFlags = {
  model: { type: 'string', short: 'm' },
  backend: { type: 'string' },
  threads: { type: 'string' },
  P: { type: 'string' },
  weights: { type: 'string' },
  'max-context': { type: 'string' },
  'no-progress': { type: 'boolean' },
} satisfies OptionSpec;

export const samplingFlags = {
  'max-new-tokens': { type: 'string', short: 'n' },
  temperature: { type: 'string', short: 't' },
  'top-k': { type: 'string' },
  'top-p': { type: 'string' },
  'repetition-penalty': { type: 'string' },
  seed: { type: 'string' },
  stop: { type: 'string', multiple: true },
} satisfies OptionSpec;

/** --weights (the same choice for bench, dump and info). */
export const weightsFlagHelp = `      --weights stored|int8  wasm backend: keep the matrices as stored (default, exact) or quantize them
                             to int8 at load (half the memory of bf16, faster decode, small error)`;

export const modelFlagsHelp = `  -m, --model DIR            model folder (config.json, *.safetensors, tokenizer.json)
      --backend NAME         ${BACKENDS.join(' | ')} (default ${DEFAULT_BACKEND})
      --threads N            threads for the wasm backend (default: all cores)
      --P N                  streams to run: 1 (the backbone alone), the model's own P or one of
                             its stream sets (see parscale info; default: its own P, else the
                             largest stream set)
${weightsFlagHelp}
      --max-context N        positions the wasm backend's KV cache holds (default: the model's, at most 4096)
      --no-progress          no load progress bar`;

export function weightsFrom(values: Values, backend: BackendName): WeightsChoice | undefined {
  const weights = values.weights as string | undefined;
  if (weights === undefined) return undefined;
  if (!(WEIGHT_CHOICES as readonly string[]).includes(weights)) throw new UsageError(`--weights must be one of ${WEIGHT_CHOICES.join(', ')}, got "${weights}"`);
  if (weights !== 'stored' && backend === 'reference') throw new UsageError(`--weights ${weights} is an option of the wasm backend; the reference backend computes with the stored weights`);
  return weights as WeightsChoice;
}

export const samplingFlagsHelp = `  -n, --max-new-tokens N     most tokens to generate (default: generation_config.json, else 256)
  -t, --temperature X        0 = greedy (default: generation_config.json, else greedy)
      --top-k K              sample among the K most likely tokens
      --top-p P              sample from the smallest set with probability mass ≥ P, in (0, 1]
      --repetition-penalty R  > 1 discourages tokens already seen
      --seed N               makes sampling reproducible
      --stop TEXT            stop when the text contains TEXT (repeatable)`;

type Values = Record<string, string | boolean | (string | boolean)[] | undefined>;

export function generateOptionsFrom(values: Values): GenerateOptions {
  const get = (name: string) => values[name] as string | undefined;
  const options: GenerateOptions = {
    maxNewTokens: get('max-new-tokens') === undefined ? undefined : numberOption('max-new-tokens', get('max-new-tokens'), 0, { integer: true, min: 0 }),
    temperature: get('temperature') === undefined ? undefined : numberOption('temperature', get('temperature'), 0, { min: 0 }),
    topK: get('top-k') === undefined ? undefined : numberOption('top-k', get('top-k'), 0, { integer: true, min: 1 }),
    topP: get('top-p') === undefined ? undefined : numberOption('top-p', get('top-p'), 1, { min: 0, minExclusive: true, max: 1 }),
    repetitionPenalty:
      get('repetition-penalty') === undefined ? undefined : numberOption('repetition-penalty', get('repetition-penalty'), 1, { min: 0, minExclusive: true }),
    seed: get('seed') === undefined ? undefined : numberOption('seed', get('seed'), 0, { integer: true, min: 0 }),
    stopStrings: (values.stop as string[] | undefined) ?? undefined,
  };
  if (options.stopStrings?.some((s) => s === '')) throw new UsageError('--stop must not be empty');
  return options;
}

/** Check the model folder and files before anything slow happens. */
export function modelDirFrom(values: Values): string {
  const given = values.model as string | undefined;
  if (given === undefined) throw new UsageError('--model DIR is required');
  const dir = resolve(given);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UsageError(`model folder not found: ${dir}`);
  for (const file of ['config.json', 'tokenizer.json']) {
    if (!existsSync(join(dir, file))) throw new UsageError(`${file} not found in the model folder ${dir}`);
  }
  return dir;
}

export function backendFrom(values: Values): BackendName {
  const backend = (values.backend as string | undefined) ?? DEFAULT_BACKEND;
  if (!(BACKENDS as readonly string[]).includes(backend)) {
    throw new UsageError(`--backend must be one of ${BACKENDS.join(', ')}, got "${backend}"`);
  }
  return backend as BackendName;
}

/** A one-line progress bar on stderr (redrawn in place on a terminal, a summary line otherwise). */
export function progressBar(enabled: boolean): { onProgress?: (e: LoadProgress) => void; done: () => void } {
  if (!enabled) return { done: () => {} };
  const started = performance.now();
  const tty = process.stderr.isTTY === true;
  let total = 0;
  let lastDraw = 0;
  const mb = (bytes: number) => (bytes / 1e6).toFixed(1);
  return {
    onProgress: (e) => {
      total = e.totalBytes;
      const now = performance.now();
      if (!tty || (now - lastDraw < 50 && e.loadedBytes < e.totalBytes)) return;
      lastDraw = now;
      const width = 30;
      const filled = Math.round((e.loadedBytes / Math.max(e.totalBytes, 1)) * width);
      process.stderr.write(`\rloading [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${mb(e.loadedBytes)}/${mb(e.totalBytes)} MB`);
    },
    done: () => {
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      process.stderr.write(`${tty ? '\r\x1b[K' : ''}loaded ${mb(total)} MB of weights in ${seconds} s\n`);
    },
  };
}

/** --P N: a stream count (which ones exist is checked against the model when it loads). */
export function streamsFrom(values: Values): number | undefined {
  return values.P === undefined ? undefined : numberOption('P', values.P as string, 1, { integer: true, min: 1 });
}

export async function loadTextModel(values: Values, signal?: AbortSignal): Promise<TextModel> {
  const dir = modelDirFrom(values);
  const backend = backendFrom(values);
  const progress = progressBar(values['no-progress'] !== true);
  const threads = values.threads === undefined ? undefined : numberOption('threads', values.threads as string, 1, { integer: true, min: 1 });
  const P = streamsFrom(values);
  const maxContext = values['max-context'] === undefined ? undefined : numberOption('max-context', values['max-context'] as string, 1, { integer: true, min: 1 });
  const weights = weightsFrom(values, backend);
  const model = await TextModel.load(dir, { backend, threads, P, weights, maxContext, onProgress: progress.onProgress, signal });
  progress.done();
  if (model.notice !== null) process.stderr.write(`note: ${model.notice}\n`);
  return model;
}

export function statsLine(result: GenerationResult): string {
  const rate = result.generatedTokens > 1 ? `${result.decodeTokensPerSecond.toFixed(2)} tokens/s` : 'n/a tokens/s';
  return (
    `prompt ${result.promptTokens} tokens (${result.prefillTokensPerSecond.toFixed(1)} tokens/s), ` +
    `generated ${result.generatedTokens} tokens, ${rate}, finished: ${result.finishReason}`
  );
}

/** An AbortController that Ctrl-C (SIGINT) triggers while `run` is going. */
export async function withInterrupt<T>(run: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  const onSignal = () => controller.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    return await run(controller.signal);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
