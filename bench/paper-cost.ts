// The paper's cost claim measured on this CPU: the ParScale-1.8B shape at P = 1, 2, 4, 8 next
// to P = 1 models grown in parameters to the same predicted loss by the paper's fitted law,
// each run through `parscale bench --json` in its own process (so peak RSS is per model).
// Writes OUT/paper-cost.md (tables), OUT/paper-cost.svg (loss vs memory and vs latency, like
// the paper's Figure 4 (a) and (e)) and OUT/paper-cost.json (everything, with the raw reports).
//
//   npx tsx bench/paper-cost.ts [--runs 3] [--prompt-tokens 64] [--new-tokens 64] [--threads 2]
//       [--ckpt-dir /tmp/ckpt] [--out docs] [--shapes paper|small] [--base 1.8b] [--fit stack-v2-python|pile]
//       [--backend wasm|reference] [--weights int8|stored|both] [--plan | --prepare]
//
// Weight formats (--weights, default both): the matched P = 1 models hold 4.6-6.4 GB of bf16
// weights, over the 4 GiB one wasm32 memory addresses, so the one format in which every model of
// the comparison runs is int8 (`parscale bench --weights int8`: bf16-scaled int8 groups of 32,
// about 1.06 bytes per weight). "both" measures every row in int8 first — the comparison of
// ParScale against the matched models is made in int8 only, like with like — and then every row
// again with its stored bf16 weights where that fits, so the page also shows what ParScale costs
// in the checkpoints' own format. Whether a row fits is decided beforehand from the wasm memory
// plan (src/wasm-bridge/plan.ts, the cache sized for prompt + new tokens as bench sizes it); a
// row that does not fit is listed as "does not fit (needs X GiB)", never dropped. Every figure on
// the page, in the SVG and in the JSON names the format it was measured in.
//
// Checkpoints (random bf16 weights, tools/make-checkpoint.ts) are written under --ckpt-dir only
// when absent, through a temporary folder renamed at the end, and are never deleted. --plan
// writes only the page with the law, the shapes and the command: no checkpoint, no measurement.
// --prepare writes only the missing checkpoints (and checks the present ones), then stops, so the
// slow writing can happen before the measuring run.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { parseConfig } from '../src/checkpoint/config.ts';
import { WASM_MEMORY_LIMIT_BYTES, type WasmMemoryPlan, type WeightsChoice, planWasmMemory } from '../src/wasm-bridge/plan.ts';
import { PRESETS, type Shape, makeCheckpoint } from '../tools/make-checkpoint.ts';
import { FAMILY, type FitName, LAW_FITS, type LawFit, chooseEquivalentShape, equivalentN, nonEmbeddingParameters, predictedLoss, shapeConfig } from './paper-cost-law.ts';

const repo = fileURLToPath(new URL('../', import.meta.url));
const STREAMS = [1, 2, 4, 8];

/**
 * --shapes small: the same comparison scaled down until it runs in seconds, to check the script
 * end to end; its figures say nothing about the paper's claim. Family-like ratios: intermediate
 * 5.5 × hidden, 8 query heads per KV head.
 */
const SMALL_BASE: Shape = {
  hidden_size: 512,
  intermediate_size: 2816,
  num_hidden_layers: 12,
  num_attention_heads: 8,
  num_key_value_heads: 1,
  vocab_size: 32768,
  tie_word_embeddings: true,
  max_position_embeddings: 2048,
  rope_theta: 10000,
};

/**
 * The paper's GPU figures at batch size 1 for its 1.6B (non-embedding; the 1.8B shape) model,
 * read by eye off Figure 4 (a) and (e) (QwenLM/ParScale figures/cost.png; ±0.02 s, ±0.1 GB;
 * llm-analysis estimates for an A100, averaged over 64-512 prompt/output tokens).
 */
const PAPER_BATCH1 = { latencyP1: 0.48, latencyP8: 0.56, memoryP1: 3.4, memoryP8: 3.6, latency28B: 0.82, memory28B: 5.8 };

/** The fields of `parscale bench --json` this script reads (src/cli/bench.ts). */
interface BenchReport {
  backend: string;
  P: number;
  threads: number;
  prompt_tokens: number;
  new_tokens: number;
  runs: number;
  prefill_tokens_per_s: number;
  decode_tokens_per_s: number;
  decode_ms_per_token: number;
  peak_rss_bytes: number;
  weight_bytes: number | null;
  weights?: string;
  [key: string]: unknown;
}

/** What --weights asks for; "both" runs int8 first (the format every row fits in), then stored. */
export const WEIGHT_OPTIONS = ['both', 'int8', 'stored'] as const;
export type WeightsOption = (typeof WEIGHT_OPTIONS)[number];

/** One row in one weight format: measured, or why not. */
export interface Measurement {
  weights: WeightsChoice;
  /** the wasm backend's memory plan for this row and format (null with the reference backend) */
  memory: WasmMemoryPlan | null;
  bench?: BenchReport;
  /** why there is no measurement (e.g. it does not fit one wasm32 memory in this format) */
  notMeasured?: string;
}

interface Row {
  /** checkpoint folder name */
  id: string;
  /** "parscale": the base shape with P streams; "scaled": a P = 1 model matched to the base at `matchesP` */
  series: 'parscale' | 'scaled';
  label: string;
  P: number;
  matchesP: number;
  shape: Shape;
  /** non-embedding parameters */
  N: number;
  /** the P = 1 N with this row's predicted loss (= N for P = 1 rows) */
  Neq: number;
  /** for scaled rows: the N_eq of the ParScale row it stands in for, and how far N misses it */
  targetN?: number;
  mismatch?: number;
  loss: number;
  dir: string;
  /** one per weight format asked for (planMeasurements), in the order of formatsOf */
  measurements: Measurement[];
}

interface Options {
  runs: number;
  promptTokens: number;
  newTokens: number;
  threads: number;
  ckptDir: string;
  out: string;
  shapes: 'paper' | 'small';
  base: string;
  fit: FitName;
  backend: string;
  weights: WeightsOption;
  plan: boolean;
  prepare: boolean;
}

class ScriptError extends Error {}

export function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      runs: { type: 'string', default: '3' },
      'prompt-tokens': { type: 'string', default: '64' },
      'new-tokens': { type: 'string', default: '64' },
      threads: { type: 'string', default: '2' },
      'ckpt-dir': { type: 'string', default: '/tmp/ckpt' },
      out: { type: 'string', default: 'docs' },
      shapes: { type: 'string', default: 'paper' },
      base: { type: 'string', default: '1.8b' },
      fit: { type: 'string', default: 'stack-v2-python' },
      backend: { type: 'string', default: 'wasm' },
      weights: { type: 'string' },
      plan: { type: 'boolean', default: false },
      prepare: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\nimport ')[0].replace(/^\/\/ ?/gm, ''));
    process.exit(0);
  }
  const positive = (flag: string, text: string) => {
    const value = Number(text);
    if (!Number.isInteger(value) || value < 1) throw new ScriptError(`--${flag} must be a positive integer, got "${text}"`);
    return value;
  };
  if (values.shapes !== 'paper' && values.shapes !== 'small') throw new ScriptError(`--shapes must be paper or small, got "${values.shapes}"`);
  if (!(values.fit! in LAW_FITS)) throw new ScriptError(`--fit must be one of ${Object.keys(LAW_FITS).join(', ')}, got "${values.fit}"`);
  const bases = FAMILY.map((member) => member.name.replace('ParScale-', '').toLowerCase());
  if (!bases.includes(values.base!)) throw new ScriptError(`--base must be one of ${bases.join(', ')} (the ParScale family), got "${values.base}"`);
  if (values.plan && values.prepare) throw new ScriptError('--plan writes no checkpoint and --prepare writes only checkpoints: give one of them');
  if (values.backend !== 'wasm' && values.backend !== 'reference') throw new ScriptError(`--backend must be wasm or reference, got "${values.backend}"`);
  const weights = values.weights ?? (values.backend === 'wasm' ? 'both' : 'stored');
  if (!(WEIGHT_OPTIONS as readonly string[]).includes(weights)) throw new ScriptError(`--weights must be one of ${WEIGHT_OPTIONS.join(', ')}, got "${weights}"`);
  if (values.backend === 'reference' && weights !== 'stored') throw new ScriptError(`--weights ${weights} needs the wasm backend; the reference backend computes with the stored weights (--weights stored)`);
  return {
    runs: positive('runs', values.runs!),
    promptTokens: positive('prompt-tokens', values['prompt-tokens']!),
    newTokens: positive('new-tokens', values['new-tokens']!),
    threads: positive('threads', values.threads!),
    ckptDir: resolve(values['ckpt-dir']!),
    out: resolve(values.out!),
    shapes: values.shapes,
    base: values.base!,
    fit: values.fit as FitName,
    backend: values.backend,
    weights: weights as WeightsOption,
    plan: values.plan!,
    prepare: values.prepare!,
  };
}

/** The rows to measure: the base at every P, then one scaled P = 1 model per P > 1. */
export function planRows(options: Pick<Options, 'shapes' | 'base' | 'fit' | 'ckptDir'>): Row[] {
  const fit: LawFit = LAW_FITS[options.fit];
  let base: Shape;
  let baseLabel: string;
  let hiddenStep: number | undefined;
  let intermediateStep: number | undefined;
  if (options.shapes === 'small') {
    base = SMALL_BASE;
    baseLabel = 'small';
    hiddenStep = 64;
    intermediateStep = 32;
  } else {
    const member = FAMILY.find((m) => m.name.replace('ParScale-', '').toLowerCase() === options.base)!;
    base = { ...PRESETS['parscale-1.8b'], hidden_size: member.hidden, intermediate_size: member.intermediate };
    baseLabel = `${member.name} shape`;
  }
  const prefix = options.shapes === 'small' ? 'small' : options.base;
  const rows: Row[] = [];
  for (const P of STREAMS) {
    const N = nonEmbeddingParameters(shapeConfig(base, P));
    const id = `paper-cost-${prefix}-P${P}`;
    rows.push({ id, series: 'parscale', label: baseLabel, P, matchesP: P, shape: base, N, Neq: equivalentN(fit, N, P), loss: predictedLoss(fit, N, P), dir: join(options.ckptDir, id), measurements: [] });
  }
  for (const row of rows.slice(1)) {
    const choice = chooseEquivalentShape(base, row.Neq, { hiddenStep, intermediateStep });
    const { hidden_size: H, intermediate_size: I, num_hidden_layers: L } = choice.shape;
    const id = `paper-cost-${prefix}-P1-H${H}-I${I}-L${L}`;
    rows.push({
      id,
      series: 'scaled',
      label: `P = 1, N ≈ N_eq(P = ${row.P})`,
      P: 1,
      matchesP: row.P,
      shape: choice.shape,
      N: choice.N,
      Neq: choice.N,
      targetN: row.Neq,
      mismatch: choice.mismatch,
      loss: predictedLoss(fit, choice.N, 1),
      dir: join(options.ckptDir, id),
      measurements: [],
    });
  }
  return rows;
}

// ---- weight formats ----

/** The formats --weights asks for, in the order they run. */
export function formatsOf(weights: WeightsOption): WeightsChoice[] {
  return weights === 'both' ? ['int8', 'stored'] : [weights];
}

/** How the page names a format (the checkpoints store bf16). */
export function formatLabel(weights: WeightsChoice): string {
  return weights === 'int8' ? 'int8 weights (bf16-scaled int8, groups of 32)' : 'stored bf16 weights';
}
const formatShort = (weights: WeightsChoice) => (weights === 'int8' ? 'int8' : 'bf16');

/** The wasm memory the row's checkpoint needs in `weights`, with the KV cache `parscale bench` asks for (prompt + new tokens). */
export function memoryPlanOf(row: Row, weights: WeightsChoice, options: Pick<Options, 'promptTokens' | 'newTokens' | 'threads'>): WasmMemoryPlan {
  return planWasmMemory(shapeConfig(row.shape, row.P), () => 'BF16', { weights, maxContext: options.promptTokens + options.newTokens, threads: options.threads });
}

const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(2)} GiB`;

/**
 * Every row in every format asked for, in the order they run: format by format (int8 first),
 * rows in table order. With the wasm backend a row whose memory plan is over what one wasm32
 * memory holds is marked "does not fit" and not run; it keeps its place in the tables.
 */
export function planMeasurements(rows: Row[], options: Pick<Options, 'weights' | 'backend' | 'promptTokens' | 'newTokens' | 'threads'>): { row: Row; measurement: Measurement }[] {
  const order: { row: Row; measurement: Measurement }[] = [];
  for (const row of rows) row.measurements = [];
  for (const weights of formatsOf(options.weights)) {
    for (const row of rows) {
      const memory = options.backend === 'wasm' ? memoryPlanOf(row, weights, options) : null;
      const measurement: Measurement = { weights, memory };
      if (memory !== null && memory.totalBytes > WASM_MEMORY_LIMIT_BYTES) {
        measurement.notMeasured = `does not fit one wasm32 memory with ${formatShort(weights)} weights (needs ${gib(memory.totalBytes)}, ${gib(WASM_MEMORY_LIMIT_BYTES)} usable)`;
      }
      row.measurements.push(measurement);
      order.push({ row, measurement });
    }
  }
  return order;
}

/** The row's measurement in `weights`, if it was asked for. */
export const measurementOf = (row: Row, weights: WeightsChoice) => row.measurements.find((m) => m.weights === weights);
const benchOf = (row: Row, weights: WeightsChoice) => measurementOf(row, weights)?.bench;

// ---- checkpoints ----

const SHAPE_KEYS: (keyof Shape)[] = ['hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'num_key_value_heads', 'vocab_size', 'tie_word_embeddings'];

/** Write the row's checkpoint unless a matching one is there; refuse a folder that holds something else. */
function ensureCheckpoint(row: Row): void {
  const configFile = join(row.dir, 'config.json');
  if (existsSync(row.dir)) {
    if (!statSync(row.dir).isDirectory()) throw new ScriptError(`${row.dir} exists and is not a folder; move it away or choose another --ckpt-dir`);
    if (!existsSync(configFile)) throw new ScriptError(`${row.dir} exists but holds no config.json, so it is not a checkpoint; move it away or choose another --ckpt-dir`);
    const config = JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, unknown>;
    const differences = SHAPE_KEYS.filter((key) => config[key] !== row.shape[key]).map((key) => `${key} ${JSON.stringify(config[key])}, expected ${row.shape[key]}`);
    if ((config.parscale_n ?? 1) !== row.P) differences.push(`parscale_n ${JSON.stringify(config.parscale_n)}, expected ${row.P}`);
    if (differences.length > 0) throw new ScriptError(`${configFile} is a different model (${differences.join('; ')}); move it away or choose another --ckpt-dir`);
    if (!readdirSync(row.dir).some((file) => file.endsWith('.safetensors'))) throw new ScriptError(`${row.dir} has a config.json but no .safetensors file; move it away or choose another --ckpt-dir`);
    return;
  }
  const partial = `${row.dir}.partial-${process.pid}`;
  process.stderr.write(`writing ${row.dir} (random bf16 weights, N = ${formatCount(row.N)})\n`);
  try {
    makeCheckpoint({ out: partial, shape: row.shape, P: row.P, prefixTokens: 48, attnSmooth: 0.01, dtype: 'bf16', seed: 1, maxShardBytes: 2e9, extraConfig: { parscale_notice: 'random weights written by bench/paper-cost.ts' } });
    renameSync(partial, row.dir);
  } catch (error) {
    rmSync(partial, { recursive: true, force: true }); // only the folder this call created
    throw error;
  }
}

/** The checkpoint's own config.json is what gets counted, so the page reports the file that ran. */
function checkParameterCount(row: Row): void {
  const config = parseConfig(JSON.parse(readFileSync(join(row.dir, 'config.json'), 'utf8')), join(row.dir, 'config.json'));
  if (nonEmbeddingParameters(config) !== row.N) throw new ScriptError(`${row.dir}: config.json counts ${nonEmbeddingParameters(config)} parameters, the plan ${row.N}`);
}

// ---- measuring ----

/** The wasm backend's refusal of a model that cannot fit one wasm32 memory (src/wasm-bridge/model.ts). */
const DOES_NOT_FIT = /over the 4 GiB a wasm32 memory can address/;

function runBench(row: Row, weights: WeightsChoice, options: Options): Promise<{ report: BenchReport } | { notMeasured: string }> {
  const args = [
    join(repo, 'bin/parscale.js'), 'bench', '--model', row.dir, '--backend', options.backend, '--threads', String(options.threads),
    ...(options.backend === 'wasm' ? ['--weights', weights] : []),
    '--prompt-tokens', String(options.promptTokens), '--new-tokens', String(options.newTokens), '--runs', String(options.runs), '--json',
  ];
  process.stderr.write(`bench ${row.id}, ${formatShort(weights)} weights ...\n`);
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code === 0) {
        let report: BenchReport;
        try {
          report = JSON.parse(stdout.trim().split('\n').pop()!) as BenchReport;
        } catch {
          reject(new ScriptError(`bench of ${row.dir} printed no JSON report; its stdout was:\n${stdout}\nstderr:\n${stderr}`));
          return;
        }
        // the page labels every figure with its format: make sure it is the one that ran
        if (report.weights !== weights) reject(new ScriptError(`bench of ${row.dir} ran with weights ${JSON.stringify(report.weights)}, asked for ${weights}`));
        else resolvePromise({ report });
      } else if (DOES_NOT_FIT.test(stderr)) {
        resolvePromise({ notMeasured: stderr.split('\n').find((line) => DOES_NOT_FIT.test(line))!.replace(/^(parscale[^:]*|RangeError): /, '') });
      } else {
        reject(new ScriptError(`bench of ${row.dir} failed (${signal ?? `exit code ${code}`}); its stderr:\n${stderr.trim()}\ncommand: node ${args.join(' ')}`));
      }
    });
  });
}

// ---- derived figures ----

const prefillSeconds = (b: BenchReport) => b.prompt_tokens / b.prefill_tokens_per_s;
const decodeSeconds = (b: BenchReport) => b.new_tokens / b.decode_tokens_per_s;
/** one whole request: the prompt's prefill, then every decode step */
const requestSeconds = (b: BenchReport) => prefillSeconds(b) + decodeSeconds(b);

interface Comparison {
  /** the format all three measurements used */
  weights: WeightsChoice;
  P: number;
  parscale: Row;
  scaled: Row;
  /** seconds / bytes added to the P = 1 base's request latency and peak RSS */
  parscaleLatencyIncrease: number;
  scaledLatencyIncrease: number;
  parscaleMemoryIncrease: number;
  scaledMemoryIncrease: number;
  parscaleWeightIncrease: number;
  scaledWeightIncrease: number;
}

/** b / a when both increases are positive, else NaN (a ratio of noise means nothing) */
const ratioOfIncreases = (a: number, b: number) => (a > 0 && b > 0 ? b / a : NaN);

/**
 * ParScale against the matched P = 1 models, from measurements in `weights` only: a P is compared
 * when the base, the ParScale row and its matched model were all measured in that one format.
 */
export function compare(rows: Row[], weights: WeightsChoice): Comparison[] {
  const base = benchOf(rows.find((r) => r.series === 'parscale' && r.P === 1)!, weights);
  const out: Comparison[] = [];
  for (const parscale of rows.filter((r) => r.series === 'parscale' && r.P > 1)) {
    const scaled = rows.find((r) => r.series === 'scaled' && r.matchesP === parscale.P)!;
    const [p, s] = [benchOf(parscale, weights), benchOf(scaled, weights)];
    if (!base || !p || !s) continue;
    const w = (b: BenchReport) => b.weight_bytes ?? NaN;
    out.push({
      weights,
      P: parscale.P,
      parscale,
      scaled,
      parscaleLatencyIncrease: requestSeconds(p) - requestSeconds(base),
      scaledLatencyIncrease: requestSeconds(s) - requestSeconds(base),
      parscaleMemoryIncrease: p.peak_rss_bytes - base.peak_rss_bytes,
      scaledMemoryIncrease: s.peak_rss_bytes - base.peak_rss_bytes,
      parscaleWeightIncrease: w(p) - w(base),
      scaledWeightIncrease: w(s) - w(base),
    });
  }
  return out;
}

// ---- formatting ----

/** bf16 bytes of all the row's tensors, embedding included */
function weightBytes(r: Row): number {
  const s = r.shape;
  return 2 * (r.N + s.vocab_size * s.hidden_size * (s.tie_word_embeddings ? 1 : 2));
}

function formatCount(n: number): string {
  return n >= 1e9 ? `${(n / 1e9).toFixed(3)} B` : `${(n / 1e6).toFixed(1)} M`;
}
const gb = (bytes: number) => `${(bytes / 1e9).toFixed(2)} GB`;
const gb3 = (bytes: number) => `${(bytes / 1e9).toFixed(3)} GB`;
const times = (x: number) => (Number.isFinite(x) ? `${x.toFixed(2)}×` : '—');
const signedPercent = (x: number) => `${x >= 0 ? '+' : ''}${(100 * x).toFixed(2)} %`;

function commandLine(options: Options, withPlan = false): string {
  const parts = ['npx tsx bench/paper-cost.ts', `--shapes ${options.shapes}`];
  if (options.shapes === 'paper') parts.push(`--base ${options.base}`);
  parts.push(`--fit ${options.fit}`, `--runs ${options.runs}`, `--prompt-tokens ${options.promptTokens}`, `--new-tokens ${options.newTokens}`, `--threads ${options.threads}`);
  if (options.backend !== 'wasm') parts.push(`--backend ${options.backend}`);
  parts.push(`--weights ${options.weights}`);
  const out = relative(repo, options.out);
  parts.push(`--ckpt-dir ${options.ckptDir}`, `--out ${out.startsWith('..') ? options.out : out || '.'}`);
  if (withPlan) parts.push('--plan');
  return parts.join(' ');
}

function shapeTable(rows: Row[], options: Options): string[] {
  const wasm = options.backend === 'wasm';
  const lines = [
    '| model | P | hidden | intermediate | layers | heads / KV heads | N (non-embedding) | N_eq = N·(k·ln P + 1) | N vs target N_eq | predicted loss | bf16 weights incl. embedding |' +
      (wasm ? ` wasm memory, bf16 / int8 weights (cache for ${options.promptTokens + options.newTokens} positions; ✗ over ${gib(WASM_MEMORY_LIMIT_BYTES)}) |` : ''),
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |' + (wasm ? ' --- |' : ''),
  ];
  for (const r of rows) {
    const s = r.shape;
    const weights = weightBytes(r);
    const memory = (['stored', 'int8'] as const).map((w) => {
      const total = memoryPlanOf(r, w, options).totalBytes;
      return `${gib(total)}${total > WASM_MEMORY_LIMIT_BYTES ? ' ✗' : ''}`;
    });
    lines.push(
      `| ${r.label} | ${r.P} | ${s.hidden_size} | ${s.intermediate_size} (${(s.intermediate_size / s.hidden_size).toFixed(2)}×) | ${s.num_hidden_layers} | ${s.num_attention_heads} / ${s.num_key_value_heads} | ${r.N.toLocaleString('en-US')} | ` +
        `${r.series === 'scaled' ? `target ${Math.round(r.targetN!).toLocaleString('en-US')}` : Math.round(r.Neq).toLocaleString('en-US')} | ${r.mismatch === undefined ? '—' : signedPercent(r.mismatch)} | ${r.loss.toFixed(4)} | ${gb(weights)} |` +
        (wasm ? ` ${memory.join(' / ')} |` : ''),
    );
  }
  return lines;
}

/** The measurements in one format; the ratios are against the P = 1 base in the same format. */
function resultTable(rows: Row[], weights: WeightsChoice, options: Options): string[] {
  const base = benchOf(rows.find((r) => r.series === 'parscale' && r.P === 1)!, weights);
  const lines = [
    `| model | P | N | N_eq | predicted loss | weights | weight bytes | decode ms/token | prefill s (${options.promptTokens} tokens) | request s (${options.promptTokens} + ${options.newTokens}) | peak RSS | decode ×, request ×, RSS × vs P = 1 (${formatShort(weights)}) |`,
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of rows) {
    const head = `| ${r.label} | ${r.P} | ${formatCount(r.N)} | ${formatCount(r.Neq)} | ${r.loss.toFixed(4)} | ${formatShort(weights)} |`;
    const measurement = measurementOf(r, weights);
    const b = measurement?.bench;
    if (!b) {
      lines.push(`${head} not measured: ${measurement?.notMeasured ?? 'not run'} ||||||`);
      continue;
    }
    const ratios = base
      ? `${times(b.decode_ms_per_token / base.decode_ms_per_token)}, ${times(requestSeconds(b) / requestSeconds(base))}, ${times(b.peak_rss_bytes / base.peak_rss_bytes)}`
      : '—';
    lines.push(
      `${head} ${b.weight_bytes === null ? '—' : gb(b.weight_bytes)} | ${b.decode_ms_per_token.toFixed(1)} | ${prefillSeconds(b).toFixed(2)} | ${requestSeconds(b).toFixed(2)} | ${gb(b.peak_rss_bytes)} | ${ratios} |`,
    );
  }
  return lines;
}

function fitTable(): string[] {
  const lines = ['| corpus | E | A (parameters) | α | k | R² | source |', '| --- | --- | --- | --- | --- | --- | --- |'];
  for (const fit of Object.values(LAW_FITS) as LawFit[]) {
    lines.push(`| ${fit.corpus} | ${fit.E} | ${fit.A.toExponential(3)} | ${fit.alpha} | ${fit.k} | ${fit.r2} | ${fit.source} |`);
  }
  return lines;
}

export function page(rows: Row[], options: Options, measuredAt: Date | null): string {
  const fit: LawFit = LAW_FITS[options.fit];
  const otherFitName = (Object.keys(LAW_FITS) as FitName[]).find((name) => name !== options.fit)!;
  const otherRows = planRows({ ...options, fit: otherFitName });
  const cpu = cpus();
  const lines: string[] = ['# The paper\'s cost claim, measured on this CPU', ''];
  if (measuredAt === null) {
    lines.push(
      '**Status: the full table has NOT been run yet.** This page holds the plan only: the fitted law, the',
      'shapes it picks and the command that measures them. Nothing below is a measurement.',
      '',
    );
  } else if (options.shapes === 'small') {
    lines.push(
      '**Status: a small-shape check of the script, NOT the paper\'s comparison.** The shapes are scaled',
      'far down so the whole pipeline runs in seconds; the figures say nothing about the 1.8B claim.',
      '',
    );
  }
  lines.push(
    'The paper (Chen et al. 2025, "Parallel Scaling Law for Language Models", arXiv 2505.10475,',
    'Figure 4 and Section 4) compares, at batch size 1, the extra memory and latency of running',
    'P streams with the extra memory and latency of a P = 1 model with more parameters that reaches',
    'the same loss, on an A100 (llm-analysis estimates, QwenLM/ParScale `cost_analysis.py`, 64 prompt',
    'and 64 new tokens by default; Figure 4 averages prompt/output lengths 64-512). Its headline at',
    'batch size 1: "up to 22× less memory increase and 6× less latency increase". Read off Figure 4 (a)',
    `and (e), its 1.6B model (the 1.8B shape) goes from about ${PAPER_BATCH1.latencyP1} s and ${PAPER_BATCH1.memoryP1} GB at P = 1 to ${PAPER_BATCH1.latencyP8} s and ${PAPER_BATCH1.memoryP8} GB at`,
    `P = 8 (≈ ${(PAPER_BATCH1.latencyP8 / PAPER_BATCH1.latencyP1).toFixed(2)}× the latency), while the 2.8B P = 1 model, still short of P = 8's loss, needs ${PAPER_BATCH1.latency28B} s and ${PAPER_BATCH1.memory28B} GB.`,
    'Here both kinds of model are random-weight checkpoints of the exact shapes, measured with `parscale bench`.',
    '',
    '## The law and its constants',
    '',
    'loss = E + (A / (N · (k·ln P + 1)))^α, with N the non-embedding parameters. The fitting code',
    '(QwenLM/ParScale `parametric_fit.py`, lines 22-24) optimises A in units of 1e9 parameters; the',
    'paper\'s Figure 2 annotates A in parameters, as below (1.131 × 10^7 is 0.01131 in the code\'s',
    'units). With these constants the law reproduces the 24 losses per corpus listed in',
    '`parametric_fit.py` (lines 71-83) within 0.012, with the annotated R² (`test/paper-cost.test.ts`).',
    '',
    ...fitTable(),
    '',
    `This page uses the **${fit.corpus}** fit (\`--fit ${options.fit}\`): the paper's cost figure (Figure 4) plots`,
    'Stack-V2-Python losses. A P-stream model then stands for a P = 1 model with',
    `N_eq = N · (${fit.k}·ln P + 1) parameters, where N is its own non-embedding count including the`,
    'prefixes and the aggregation layer, as the fitting code counts it (its P > 1 rows, lines 66-68).',
    '',
    '## Shapes',
    '',
  );
  if (options.shapes === 'paper') {
    lines.push(
      'The ParScale family (the law\'s 24 models per corpus) has 36 layers, 16 query / 2 KV heads, a',
      '151936-token tied vocabulary and intermediate ≈ 5.4 × hidden: `parametric_fit.py` lists only',
      'their N, and (hidden, intermediate) = (896, 4864), (1024, 5504), (1280, 6912), (1536, 8320),',
      '(2048, 11008), (2560, 13824) are the only widths that give exactly those N with that layout',
      '(`cost_analysis.py` defaults; its README example is the 4.4B one, 2560 / 13824). The P = 1',
      'models matched to N_eq grow the same way: layers, heads and vocabulary kept, hidden the multiple',
      'of 128 nearest the solution at the base\'s intermediate/hidden ratio, then intermediate the',
      'multiple of 128 nearest N_eq (`chooseEquivalentShape` in `bench/paper-cost-law.ts`; from the',
      '1.8B base it returns the published 2.8B and 4.4B shapes for their N).',
      '',
    );
  } else {
    lines.push('Small mode: a 12-layer, 8/1-head base of hidden 512, grown like the paper family (hidden in steps of 64, intermediate in steps of 32).', '');
  }
  lines.push(...shapeTable(rows, options), '');
  lines.push(
    `With the ${LAW_FITS[otherFitName].corpus} fit (\`--fit ${otherFitName}\`, k = ${LAW_FITS[otherFitName].k}) the matched P = 1 models would be:`,
    '',
    ...shapeTable(otherRows.filter((r) => r.series === 'scaled'), options),
    '',
  );
  lines.push(...formatSection(rows, options));

  if (measuredAt !== null) {
    const b = rows.flatMap((r) => r.measurements).find((m) => m.bench)?.bench;
    lines.push(
      '## Measurements',
      '',
      `Measured ${measuredAt.toISOString().slice(0, 16).replace('T', ' ')} UTC on ${cpu.length} × ${cpu[0]?.model ?? 'unknown CPU'}, Node ${process.version}, ` +
        `backend ${options.backend}, ${b?.threads ?? options.threads} thread${(b?.threads ?? options.threads) === 1 ? '' : 's'}, medians of ${options.runs} run${options.runs === 1 ? '' : 's'}, greedy decoding from a fixed ${options.promptTokens}-token prompt. ` +
        'Peak RSS is the whole bench process (checkpoint loader buffers included), so it is above the weight bytes. ' +
        'Each table holds one weight format; its ratios are against the P = 1 base in that format.',
      '',
    );
    for (const weights of formatsOf(options.weights)) lines.push(`### ${capitalize(formatLabel(weights))}`, '', ...resultTable(rows, weights, options), '');
    lines.push(...formatAgainstFormat(rows, options));
    const comparisons = formatsOf(options.weights).flatMap((weights) => compare(rows, weights));
    lines.push('## ParScale against parameter scaling at the same predicted loss', '');
    if (comparisons.length === 0) {
      lines.push('No format has the P = 1 base, a ParScale row and its matched P = 1 model all measured, so there is no comparison.', '');
    } else {
      lines.push(
        'Increases over the P = 1 base, all three models measured in the same weight format (column "weights"). "× less" is the matched P = 1 model\'s increase divided by ParScale\'s (the paper\'s measure; — when an increase is not positive).',
        '',
        '| weights | P | request latency increase: ParScale / matched P = 1 | × less | peak RSS increase: ParScale / matched P = 1 | × less | weight bytes increase: ParScale / matched P = 1 |',
        '| --- | --- | --- | --- | --- | --- | --- |',
      );
      for (const c of comparisons) {
        lines.push(
          `| ${formatShort(c.weights)} | ${c.P} | ${c.parscaleLatencyIncrease.toFixed(2)} s / ${c.scaledLatencyIncrease.toFixed(2)} s | ${times(ratioOfIncreases(c.parscaleLatencyIncrease, c.scaledLatencyIncrease))} | ` +
            `${gb3(c.parscaleMemoryIncrease)} / ${gb3(c.scaledMemoryIncrease)} | ${times(ratioOfIncreases(c.parscaleMemoryIncrease, c.scaledMemoryIncrease))} | ${gb3(c.parscaleWeightIncrease)} / ${gb3(c.scaledWeightIncrease)} |`,
        );
      }
      lines.push('');
    }
    for (const weights of formatsOf(options.weights).filter((w) => !comparisons.some((c) => c.weights === w))) {
      lines.push(`No comparison with ${formatLabel(weights)}: in that format the P = 1 base, the ParScale rows or their matched models were not measured (see its table).`, '');
    }
    lines.push('## Where this CPU differs from the GPU claim', '');
    for (const weights of formatsOf(options.weights)) {
      const sentences = differences(rows, weights);
      if (sentences.length > 0) lines.push(`With ${formatLabel(weights)}:`, '', ...sentences, '');
    }
    lines.push(`![loss against peak memory and against request latency (${formatsOf(options.weights).map(formatShort).join(' and ')} weights)](paper-cost.svg)`, '');
  }
  const sizes = rows.map(weightBytes);
  lines.push(
    '## Regenerate',
    '',
    '```sh',
    commandLine(options),
    '```',
    '',
    `It writes the checkpoints it lacks under \`--ckpt-dir\` (random bf16 weights, about 2 bytes per parameter:`,
    `${gb(Math.min(...sizes))}-${gb(Math.max(...sizes))} each, ${gb(sizes.reduce((a, b) => a + b, 0))} for these ${rows.length}) and this page, \`paper-cost.svg\` and`,
    '`paper-cost.json` in `--out`. `--prepare` only writes the missing checkpoints, so the slow writing can',
    'come before the measuring run. On the 2-core project VM each paper-shape bench takes minutes; run',
    'it on an idle machine. `--shapes small --runs 1 --prompt-tokens 8 --new-tokens 8 --out /tmp/paper-cost`',
    'checks the pipeline in a few minutes.',
    '',
  );
  if (measuredAt === null) lines.push(`This plan page: \`${commandLine(options, true)}\`.`);
  return lines.join('\n') + '\n';
}

const capitalize = (text: string) => text[0].toUpperCase() + text.slice(1);

/** Which rows run in which format, from the memory plans planMeasurements made. */
function formatSection(rows: Row[], options: Options): string[] {
  const lines = ['## Weight formats', ''];
  if (options.backend !== 'wasm') {
    lines.push(`The ${options.backend} backend computes with the stored bf16 weights and has no 4 GiB limit: every row runs in that one format.`, '');
    return lines;
  }
  lines.push(
    'The wasm backend keeps the whole model in one WebAssembly memory, which a wasm32 module addresses up',
    `to 4 GiB (${gib(WASM_MEMORY_LIMIT_BYTES)} usable, \`src/wasm-bridge/plan.ts\`). With \`--weights int8\` the matrices are quantized at`,
    'load to int8 in groups of 32 with a bf16 scale each (about 1.06 bytes per weight; norms, biases, the',
    'aggregation layer and the prefixes stay as they are). The comparison of ParScale with the matched P = 1',
    'models is made between measurements in one format only, like with like: int8 is the format in which all',
    'of them fit; the rows that also fit with their stored bf16 weights are measured that way too, to show',
    'what int8 changes. The memory each needs is in the table above.',
    '',
  );
  for (const weights of formatsOf(options.weights)) {
    const [fits, not] = [rows.filter((r) => !measurementOf(r, weights)?.notMeasured), rows.filter((r) => measurementOf(r, weights)?.notMeasured)];
    const name = (r: Row) => (r.series === 'scaled' ? `matched P = 1 for P = ${r.matchesP} (${gib(measurementOf(r, weights)!.memory!.totalBytes)})` : `P = ${r.P} (${gib(measurementOf(r, weights)!.memory!.totalBytes)})`);
    lines.push(
      `- ${capitalize(formatLabel(weights))}: ${fits.length === 0 ? 'no row fits' : `runs ${fits.map(name).join(', ')}`}` +
        `${not.length === 0 ? '' : `; does not fit: ${not.map(name).join(', ')}, listed as not measured`}.`,
    );
  }
  lines.push('');
  return lines;
}

/** The same checkpoint in two formats: what int8 changes, for the rows measured in both. */
function formatAgainstFormat(rows: Row[], options: Options): string[] {
  const pairs = rows.filter((r) => benchOf(r, 'int8') && benchOf(r, 'stored'));
  if (pairs.length === 0) return [];
  const lines = [
    '### int8 against stored bf16, the same checkpoint',
    '',
    `| model | P | decode ms/token bf16 / int8 (bf16 ÷ int8) | request s (${options.promptTokens} + ${options.newTokens}) bf16 / int8 (bf16 ÷ int8) | peak RSS bf16 / int8 |`,
    '| --- | --- | --- | --- | --- |',
  ];
  for (const r of pairs) {
    const [s, q] = [benchOf(r, 'stored')!, benchOf(r, 'int8')!];
    lines.push(
      `| ${r.label} | ${r.P} | ${s.decode_ms_per_token.toFixed(1)} / ${q.decode_ms_per_token.toFixed(1)} (${times(s.decode_ms_per_token / q.decode_ms_per_token)}) | ` +
        `${requestSeconds(s).toFixed(2)} / ${requestSeconds(q).toFixed(2)} (${times(requestSeconds(s) / requestSeconds(q))}) | ${gb(s.peak_rss_bytes)} / ${gb(q.peak_rss_bytes)} |`,
    );
  }
  lines.push('');
  return lines;
}

/** Plain sentences on how the ratios measured in `weights` compare with the paper's GPU analysis. */
function differences(rows: Row[], weights: WeightsChoice): string[] {
  const out: string[] = [];
  const base = benchOf(rows.find((r) => r.series === 'parscale' && r.P === 1)!, weights);
  const p8 = benchOf(rows.find((r) => r.series === 'parscale' && r.P === 8)!, weights);
  if (base && p8) {
    const decode = p8.decode_ms_per_token / base.decode_ms_per_token;
    const prefill = prefillSeconds(p8) / prefillSeconds(base);
    const request = requestSeconds(p8) / requestSeconds(base);
    out.push(
      `- Whole request (${base.prompt_tokens} + ${base.new_tokens} tokens): P = 8 takes ${times(request)} the time of P = 1 here; the paper's GPU estimate is about ` +
        `${times(PAPER_BATCH1.latencyP8 / PAPER_BATCH1.latencyP1)} (Figure 4 (e)). ${request > 1.5 * (PAPER_BATCH1.latencyP8 / PAPER_BATCH1.latencyP1) ? 'This is where this CPU differs most from the claim.' : 'This CPU is close to the claim here.'}`,
      `- Decode: P = 8 takes ${times(decode)} the time per token of P = 1. The paper's argument is that at batch size 1 a GPU ` +
        'is limited by reading the weights, so P streams that share each weight read cost little extra time; ' +
        (decode > 2 ? 'this CPU is not in that regime at P = 8: the P-fold arithmetic shows up in the time.' : 'this CPU comes close to that regime.'),
      `- Prefill: P = 8 takes ${times(prefill)} the time of P = 1 for the ${base.prompt_tokens}-token prompt. Prefill does P times the arithmetic, and where arithmetic is the limit (this CPU, at any P) it pays close to P×.`,
      `- Memory: P = 8 peaks at ${times(p8.peak_rss_bytes / base.peak_rss_bytes)} the RSS of P = 1 (weights ${times((p8.weight_bytes ?? NaN) / (base.weight_bytes ?? NaN))}; paper ≈ ${times(PAPER_BATCH1.memoryP8 / PAPER_BATCH1.memoryP1)}); ` +
        'ParScale adds only prefixes, the aggregation layer and P KV caches, as in the paper.',
    );
  }
  const increase = (value: number, unit: string) => `${value >= 0 ? '+' : ''}${value.toFixed(unit === 'MB' ? 0 : 2)} ${unit}`;
  for (const c of compare(rows, weights)) {
    const pieces = [
      { what: 'request latency', parscale: c.parscaleLatencyIncrease, scaled: c.scaledLatencyIncrease, unit: 's', paper: '6×' },
      { what: 'peak memory', parscale: c.parscaleMemoryIncrease / 1e6, scaled: c.scaledMemoryIncrease / 1e6, unit: 'MB', paper: '22×' },
    ].map(({ what, parscale, scaled, unit, paper }) => {
      const head = `${what} ${increase(parscale, unit)} for ParScale against ${increase(scaled, unit)} for the matched P = 1 model`;
      if (parscale <= 0 || scaled <= 0) return `${head}: no ratio (one increase is not positive: the two are within this run's noise)`;
      return `${head}: parameter scaling's increase is ${times(scaled / parscale)} ParScale's (paper, GPU: up to ${paper})`;
    });
    out.push(`- P = ${c.P}: ${pieces.join('; ')}.`);
  }
  const missing = rows.filter((r) => !benchOf(r, weights));
  if (missing.length > 0) out.push(`- Not measured with ${formatShort(weights)} weights: ${missing.map((r) => `${r.id} (${measurementOf(r, weights)?.notMeasured ?? 'not run'})`).join('; ')}.`);
  return out;
}

// ---- the plot ----

/** About `count` round tick values covering [low, high]. */
export function niceTicks(low: number, high: number, count = 5): number[] {
  const span = high - low || Math.abs(high) || 1;
  const raw = span / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw)!;
  const ticks: number[] = [];
  for (let t = Math.floor(low / step) * step; t <= high + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  if (ticks[ticks.length - 1] < high) ticks.push(Number((ticks[ticks.length - 1] + step).toPrecision(12)));
  return ticks;
}

const escapeXml = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/**
 * Two panels like the paper's Figure 4 (a) and (e): predicted loss against peak RSS and against
 * request latency. One line per series and weight format, each starting at the P = 1 base in the
 * same format: int8 solid, stored bf16 dashed (the title and the legend say which is which).
 */
export function plotSvg(rows: Row[], options: Pick<Options, 'promptTokens' | 'newTokens' | 'fit' | 'shapes' | 'weights'>): string {
  const width = 960;
  const height = 460;
  const panel = { top: 66, bottom: 90, left: 70, width: 380, gap: 90 };
  const plotHeight = height - panel.top - panel.bottom;
  const formats = formatsOf(options.weights);
  const measured = rows.flatMap((r) => r.measurements.filter((m) => m.bench).map((m) => m.bench!));
  const lossValues = rows.map((r) => r.loss);
  const yTicks = niceTicks(Math.min(...lossValues), Math.max(...lossValues), 5);
  const [yMin, yMax] = [yTicks[0], yTicks[yTicks.length - 1]];
  const colors = { parscale: '#c0392b', scaled: '#2e86c1' };
  const dash = (weights: WeightsChoice) => (weights === 'stored' ? ' stroke-dasharray="6 4"' : '');
  const formatTitle = formats.length === 1 ? `${formatShort(formats[0])} weights` : 'int8 weights solid, stored bf16 dashed';
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="15">${escapeXml(`Predicted loss (${LAW_FITS[options.fit].corpus} fit) against cost, batch size 1, ${options.promptTokens} + ${options.newTokens} tokens`)}</text>`,
    `<text x="${width / 2}" y="42" text-anchor="middle" font-size="13">${escapeXml(`${formatTitle}${options.shapes === 'small' ? ' — SMALL SHAPES, pipeline check only' : ''}`)}</text>`,
  ];
  const panels: { title: string; unit: string; value: (b: BenchReport) => number }[] = [
    { title: 'peak memory (RSS)', unit: 'GB', value: (b) => b.peak_rss_bytes / 1e9 },
    { title: 'request latency (prefill + decode)', unit: 's', value: (b) => requestSeconds(b) },
  ];
  const base = rows.find((r) => r.series === 'parscale' && r.P === 1)!;
  panels.forEach((spec, index) => {
    const x0 = panel.left + index * (panel.width + panel.gap);
    const xValues = measured.map(spec.value);
    // room on the right for the last point's label
    const xTicks = xValues.length > 0 ? niceTicks(Math.min(...xValues), Math.max(...xValues) + 0.1 * (Math.max(...xValues) - Math.min(...xValues)), 5) : [0, 1];
    const [xMin, xMax] = [xTicks[0], xTicks[xTicks.length - 1]];
    const px = (v: number) => x0 + ((v - xMin) / (xMax - xMin || 1)) * panel.width;
    const py = (v: number) => panel.top + plotHeight - ((v - yMin) / (yMax - yMin || 1)) * plotHeight;
    parts.push(`<rect x="${x0}" y="${panel.top}" width="${panel.width}" height="${plotHeight}" fill="none" stroke="#333"/>`);
    for (const t of xTicks) {
      parts.push(`<line x1="${px(t)}" y1="${panel.top}" x2="${px(t)}" y2="${panel.top + plotHeight}" stroke="#eee"/>`);
      parts.push(`<text x="${px(t)}" y="${panel.top + plotHeight + 16}" text-anchor="middle">${t}</text>`);
    }
    for (const t of yTicks) {
      parts.push(`<line x1="${x0}" y1="${py(t)}" x2="${x0 + panel.width}" y2="${py(t)}" stroke="#eee"/>`);
      parts.push(`<text x="${x0 - 6}" y="${py(t) + 4}" text-anchor="end">${t}</text>`);
    }
    parts.push(`<text x="${x0 + panel.width / 2}" y="${panel.top + plotHeight + 36}" text-anchor="middle">${escapeXml(`${spec.title} (${spec.unit})`)}</text>`);
    parts.push(`<text transform="translate(${x0 - 48} ${panel.top + plotHeight / 2}) rotate(-90)" text-anchor="middle">predicted loss</text>`);
    for (const weights of formats) {
      for (const series of ['scaled', 'parscale'] as const) {
        // both series start at the P = 1 base, like the paper's arrows
        const points = [base, ...rows.filter((r) => r.series === series && r !== base)].filter((r) => benchOf(r, weights));
        const color = colors[series];
        const x = (r: Row) => px(spec.value(benchOf(r, weights)!));
        if (points.length > 1) {
          parts.push(`<polyline fill="none" stroke="${color}" stroke-width="2"${dash(weights)} points="${points.map((r) => `${x(r).toFixed(1)},${py(r.loss).toFixed(1)}`).join(' ')}"/>`);
        }
        for (const r of points) {
          const [cx, cy] = [x(r), py(r.loss)];
          if (series === 'parscale') parts.push(`<path d="M${cx - 5},${cy - 5}L${cx + 5},${cy + 5}M${cx - 5},${cy + 5}L${cx + 5},${cy - 5}" stroke="${color}" stroke-width="2.5"/>`);
          else parts.push(`<circle cx="${cx}" cy="${cy}" r="5" fill="${weights === 'stored' ? 'white' : color}" stroke="${color}" stroke-width="2"/>`);
          const text = series === 'parscale' ? `P=${r.P}` : r === base ? '' : `${formatCount(r.N).replace(' ', '')}`;
          // ParScale labels below the point in int8, above it in bf16, so the two formats' labels do not overlap
          const dy = series === 'parscale' && weights === 'int8' ? 14 : -6;
          if (text) parts.push(`<text x="${cx + 8}" y="${cy + dy}" fill="${color}">${escapeXml(formats.length > 1 ? `${text} ${formatShort(weights)}` : text)}</text>`);
        }
      }
    }
    if (measured.length === 0) parts.push(`<text x="${x0 + panel.width / 2}" y="${panel.top + plotHeight / 2}" text-anchor="middle">no measurements</text>`);
  });
  // legend and notes
  const legendY = height - 36;
  parts.push(`<path d="M${panel.left},${legendY - 9}l10,10m-10,0l10,-10" stroke="${colors.parscale}" stroke-width="2.5"/>`);
  parts.push(`<text x="${panel.left + 16}" y="${legendY}">ParScale: the base shape with P = 1, 2, 4, 8 streams</text>`);
  parts.push(`<circle cx="${panel.left + 375}" cy="${legendY - 4}" r="5" fill="${colors.scaled}"/>`);
  parts.push(`<text x="${panel.left + 386}" y="${legendY}">P = 1 models grown to the same predicted loss (label: N)</text>`);
  parts.push(
    `<text x="${panel.left}" y="${legendY + 20}">${escapeXml(formats.length > 1 ? 'solid lines: int8 weights (bf16-scaled int8, groups of 32); dashed lines, open circles: stored bf16 weights' : `all points: ${formatLabel(formats[0])}`)}</text>`,
  );
  const missing = rows.flatMap((r) => r.measurements.filter((m) => !m.bench).map((m) => `${r.series === 'scaled' ? `P=1 ${formatCount(r.N)}` : `P=${r.P}`} ${formatShort(m.weights)}`));
  if (missing.length > 0) parts.push(`<text x="${width - 10}" y="${panel.top - 6}" text-anchor="end" fill="#a00">${escapeXml(`not measured: ${missing.join(', ')}`)}</text>`);
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

// ---- main ----

async function main(argv: string[]): Promise<void> {
  const options = parseOptions(argv);
  if (!existsSync(options.out) || !statSync(options.out).isDirectory()) throw new ScriptError(`output folder not found: ${options.out} (create it, or pass --out)`);
  const rows = planRows(options);
  const order = planMeasurements(rows, options);
  if (options.plan) {
    writeFileSync(join(options.out, 'paper-cost.md'), page(rows, options, null));
    process.stderr.write(`wrote ${join(options.out, 'paper-cost.md')} (plan only)\n`);
    return;
  }
  if (existsSync(options.ckptDir) && !statSync(options.ckptDir).isDirectory()) throw new ScriptError(`--ckpt-dir ${options.ckptDir} is not a folder`);
  mkdirSync(options.ckptDir, { recursive: true });
  // every checkpoint first (also those of rows that fit no format asked for: the next run may ask
  // for another), so the measurements follow each other without the writing in between
  for (const row of rows) {
    ensureCheckpoint(row);
    checkParameterCount(row);
  }
  if (options.prepare) {
    process.stderr.write(`checkpoints ready under ${options.ckptDir}: ${rows.map((r) => r.id).join(', ')}\n`);
    return;
  }
  for (const { row, measurement } of order) {
    if (measurement.notMeasured !== undefined) {
      process.stderr.write(`skip ${row.id}, ${formatShort(measurement.weights)} weights: ${measurement.notMeasured}\n`);
      continue;
    }
    const result = await runBench(row, measurement.weights, options);
    if ('notMeasured' in result) {
      measurement.notMeasured = result.notMeasured;
      process.stderr.write(`  not measured: ${result.notMeasured}\n`);
    } else {
      const report = (measurement.bench = result.report);
      process.stderr.write(`  decode ${report.decode_ms_per_token.toFixed(1)} ms/token, request ${requestSeconds(report).toFixed(2)} s, peak RSS ${gb(report.peak_rss_bytes)}\n`);
    }
  }
  const measuredAt = new Date();
  writeFileSync(join(options.out, 'paper-cost.md'), page(rows, options, measuredAt));
  writeFileSync(join(options.out, 'paper-cost.svg'), plotSvg(rows, options));
  const json = {
    command: commandLine(options),
    measured_at: measuredAt.toISOString(),
    cpu: cpus()[0]?.model ?? null,
    cores: cpus().length,
    node: process.version,
    fit: { name: options.fit, ...LAW_FITS[options.fit] },
    weights: formatsOf(options.weights),
    rows: rows.map(({ shape, measurements, ...rest }) => ({
      ...rest,
      shape,
      measurements: measurements.map(({ weights, memory, bench, notMeasured }) => ({
        weights,
        format: formatLabel(weights),
        wasm_memory_plan: memory,
        not_measured: notMeasured ?? null,
        prefill_s: bench ? prefillSeconds(bench) : null,
        decode_s: bench ? decodeSeconds(bench) : null,
        request_s: bench ? requestSeconds(bench) : null,
        bench: bench ?? null,
      })),
    })),
    comparisons: formatsOf(options.weights).flatMap((weights) => compare(rows, weights)).map(({ parscale, scaled, ...rest }) => ({ ...rest, parscale: parscale.id, scaled: scaled.id })),
  };
  writeFileSync(join(options.out, 'paper-cost.json'), JSON.stringify(json, null, 2) + '\n');
  process.stderr.write(`wrote ${['paper-cost.md', 'paper-cost.svg', 'paper-cost.json'].map((f) => join(options.out, f)).join(', ')}\n`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).catch((error) => {
    if (error instanceof ScriptError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      console.error(`paper-cost: ${(error as Error).message}`);
      process.exitCode = 1;
    } else {
      console.error(error);
      process.exitCode = 1;
    }
  });
}
