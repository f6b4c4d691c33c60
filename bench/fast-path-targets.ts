// The fast-path issue's targets, measured in one go: each configuration through `parscale bench
// --json` in its own process (so peak RSS is per configuration), repeated --repeats times with the
// configurations taking turns (so a slow minute of a shared machine hits all of them alike), then
// the median of each figure over the repeats. Prints a Markdown table and writes the raw reports.
//
//   npx tsx bench/fast-path-targets.ts [--ckpt-dir /tmp/ckpt] [--repeats 3] [--threads 2] [--out FILE.json]
//       [--only p18-p1,p18-p8,qwen05]
//
// Checkpoints (random weights of the real shapes; written when absent):
//   p18-p1, p18-p8   ParScale-1.8B shape, bf16, P = 1 and 8  (tools/make-checkpoint.ts --preset parscale-1.8b)
//   qwen05-p1        Qwen2.5-0.5B shape, bf16, P = 1         (--preset qwen2.5-0.5b)
// Each wasm configuration runs with the relaxed-SIMD build (stored and int8 weights) and the plain
// build (stored weights); the 0.5B shape also with the TypeScript reference backend.
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const repo = fileURLToPath(new URL('../', import.meta.url));
const { values } = parseArgs({
  options: {
    'ckpt-dir': { type: 'string', default: '/tmp/ckpt' },
    repeats: { type: 'string', default: '3' },
    threads: { type: 'string', default: '2' },
    out: { type: 'string' },
    only: { type: 'string', default: 'p18-p1,p18-p8,qwen05' },
  },
});
const ckptDir = values['ckpt-dir'];
const repeats = Number(values.repeats);
const threads = values.threads;
const only = new Set(values.only.split(','));

type Build = 'simd' | 'relaxed-simd';
interface Config {
  name: string;
  dir: string;
  preset: string;
  P: number;
  backend: 'wasm' | 'reference';
  build: Build;
  weights: 'stored' | 'int8';
  /** bench arguments: prompt and new tokens, runs inside one process */
  args: string[];
}

const configs: Config[] = [];
const add = (c: Omit<Config, 'dir'> & { folder: string }) => configs.push({ ...c, dir: join(ckptDir, c.folder) });
// the kernel build the engine picks where it can (relaxed-simd) with both weight choices, and the
// plain build with stored weights for comparison
const variants = [
  { build: 'relaxed-simd', weights: 'stored' },
  { build: 'relaxed-simd', weights: 'int8' },
  { build: 'simd', weights: 'stored' },
] as const;
for (const { build, weights } of variants) {
  // P = 1: a 64-token prompt (the paper's) for the prefill figure, 16 decoded tokens
  if (only.has('p18-p1')) add({ name: '1.8B P=1', folder: 'p18-p1', preset: 'parscale-1.8b', P: 1, backend: 'wasm', build, weights, args: ['--prompt-tokens', '64', '--new-tokens', '16', '--runs', '3'] });
  // P = 8: a 16-token prompt is already 128 rows per product
  if (only.has('p18-p8')) add({ name: '1.8B P=8', folder: 'p18-p8', preset: 'parscale-1.8b', P: 8, backend: 'wasm', build, weights, args: ['--prompt-tokens', '16', '--new-tokens', '8', '--runs', '3'] });
  if (only.has('qwen05')) add({ name: '0.5B P=1', folder: 'qwen05-p1', preset: 'qwen2.5-0.5b', P: 1, backend: 'wasm', build, weights, args: ['--prompt-tokens', '4', '--new-tokens', '16', '--runs', '3'] });
}
// the oracle is slow (about 1 s per token at this size): fewer tokens, once per repeat
if (only.has('qwen05')) add({ name: '0.5B P=1', folder: 'qwen05-p1', preset: 'qwen2.5-0.5b', P: 1, backend: 'reference', build: 'simd', weights: 'stored', args: ['--prompt-tokens', '4', '--new-tokens', '8', '--runs', '3'] });

for (const c of new Map(configs.map((c) => [c.dir, c])).values()) {
  if (existsSync(join(c.dir, 'config.json'))) continue;
  process.stderr.write(`writing ${c.dir} (${c.preset}, P = ${c.P})\n`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(repo, 'tools/make-checkpoint.ts'), '--preset', c.preset, '--P', String(c.P), '--out', c.dir], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`make-checkpoint failed for ${c.dir}`);
}

type Report = Record<string, number | string | null>;
const reports = new Map<Config, Report[]>(configs.map((c) => [c, []]));
for (let repeat = 0; repeat < repeats; repeat++) {
  for (const c of configs) {
    const args = [join(repo, 'bin/parscale.js'), 'bench', '--model', c.dir, '--backend', c.backend, '--threads', threads, ...c.args, '--json'];
    if (c.backend === 'wasm') args.push('--weights', c.weights);
    const started = Date.now();
    const r = spawnSync(process.execPath, args, { encoding: 'utf8', env: { ...process.env, PARSCALE_WASM: c.build }, maxBuffer: 1 << 24 });
    if (r.status !== 0) throw new Error(`bench failed (${c.name}, ${c.backend}, ${c.build}, ${c.weights}):\n${r.stderr}`);
    const report = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as Report;
    if (c.backend === 'wasm' && report.kernel_build !== c.build) throw new Error(`asked for the ${c.build} build, bench ran ${report.kernel_build}`);
    reports.get(c)!.push(report);
    process.stderr.write(`repeat ${repeat + 1}/${repeats} ${c.name} ${c.backend} ${c.backend === 'wasm' ? `${c.build} ${c.weights}` : ''}: decode ${Number(report.decode_ms_per_token).toFixed(1)} ms/token, ${((Date.now() - started) / 1000).toFixed(0)} s; load ${os.loadavg()[0].toFixed(2)}\n`);
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const med = (c: Config, key: string) => median(reports.get(c)!.map((r) => Number(r[key])));
const pct = (x: number) => `${(100 * x).toFixed(0)} %`;
const gb = (x: number) => `${(x / 1e9).toFixed(1)} GB/s`;

console.log(`\n${os.cpus()[0]?.model ?? 'CPU'}, ${os.cpus().length} cores, Node ${process.version}; ${threads} threads; medians of ${repeats} processes (each: the median of 3 runs)\n`);
console.log('| model | backend | build | weights | decode ms/token | prefill tokens/s | decode weight GB/s | 2-thread read loop | decode / read loop | decode multiply-adds / peak (mul+add, fused) | prefill / peak (mul+add, fused) | peak RSS / weights |');
console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
for (const c of configs) {
  const wasm = c.backend === 'wasm';
  const cells = [
    c.name,
    c.backend,
    wasm ? c.build : '—',
    c.weights,
    med(c, 'decode_ms_per_token').toFixed(1),
    med(c, 'prefill_tokens_per_s').toFixed(2),
    wasm ? gb(med(c, 'decode_weight_bytes_per_s')) : '—',
    wasm ? gb(med(c, 'read_loop_bytes_per_s_all_threads')) : '—',
    wasm ? pct(med(c, 'decode_read_share_of_read_loop_all_threads')) : '—',
    wasm ? `${pct(med(c, 'decode_madd_share_of_madd_peak_all_threads'))}, ${pct(med(c, 'decode_madd_share_of_fma_peak_all_threads'))}` : '—',
    wasm ? `${pct(med(c, 'prefill_madd_share_of_madd_peak_all_threads'))}, ${pct(med(c, 'prefill_madd_share_of_fma_peak_all_threads'))}` : '—',
    wasm ? (med(c, 'peak_rss_bytes') / med(c, 'weight_bytes')).toFixed(2) : `${(med(c, 'peak_rss_bytes') / 1e9).toFixed(2)} GB`,
  ];
  console.log(`| ${cells.join(' | ')} |`);
}
// the two ratios the issue asks for
const find = (name: string, backend: string, build: Build, weights: string) => configs.find((c) => c.name === name && c.backend === backend && (backend === 'reference' || c.build === build) && c.weights === weights);
console.log('');
for (const build of ['relaxed-simd', 'simd'] as const) {
  for (const weights of ['stored', 'int8']) {
    if (!variants.some((v) => v.build === build && v.weights === weights)) continue;
    const p1 = find('1.8B P=1', 'wasm', build, weights);
    const p8 = find('1.8B P=8', 'wasm', build, weights);
    if (p1 && p8) console.log(`- P = 8 / P = 1 decode step time, 1.8B, ${build}, ${weights}: ${(med(p8, 'decode_ms_per_token') / med(p1, 'decode_ms_per_token')).toFixed(2)}`);
    const fast = find('0.5B P=1', 'wasm', build, weights);
    const oracle = find('0.5B P=1', 'reference', 'simd', 'stored');
    if (fast && oracle) console.log(`- wasm (${build}, ${weights}) vs the TypeScript reference, 0.5B P = 1 decode: ${(med(oracle, 'decode_ms_per_token') / med(fast, 'decode_ms_per_token')).toFixed(1)}×`);
  }
}
if (values.out) writeFileSync(values.out, JSON.stringify(configs.map((c) => ({ ...c, reports: reports.get(c) })), null, 2));
