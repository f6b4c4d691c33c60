// `npm run train:scaling`: a toy version of the paper's parallel scaling law on this CPU.
// Trains P = 1, 2, 4, 8 at two model sizes, every run on the same number of training tokens
// (same data order, same seed), measures the final validation loss, and fits
//     loss = E + (A / (N · (k · ln P + 1)))^α          (N = non-embedding parameters)
// by least squares (grid over α and k, E and A^α solved linearly). Writes docs/scaling.md
// (table + fit), docs/scaling.svg (plot) and docs/scaling-results.json.
//
// Environment: SCALING_TOKENS (training tokens per run, default 49152), SCALING_OUT (folder for
// the run outputs, default a temporary folder), THREADS (default 2).
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_OPTIONS, train } from '../src/training/train.ts';
import { parameterEntries } from '../src/training/weights.ts';

const tokensPerRun = Number(process.env.SCALING_TOKENS ?? 49152);
const outRoot = process.env.SCALING_OUT ?? mkdtempSync(join(tmpdir(), 'parscale-scaling-'));
const threads = Number(process.env.THREADS ?? 2);
const docs = process.env.SCALING_DOCS ?? 'docs';
const context = 64;
const batch = 8;
const steps = Math.max(1, Math.round(tokensPerRun / (context * batch)));

const sizes = [
  { name: 'small', layers: 2, hidden: 48, heads: 4, kvHeads: 2, intermediate: 96 },
  { name: 'medium', layers: 2, hidden: 96, heads: 4, kvHeads: 2, intermediate: 192 },
];
const streams = [1, 2, 4, 8];

interface Run {
  size: string;
  P: number;
  /** non-embedding parameters of the backbone (the N of the law; prefixes and aggregation excluded) */
  N: number;
  /** what ParScale adds: prefixes + aggregation layer */
  parscaleParams: number;
  valLoss: number;
  tokensPerS: number;
  seconds: number;
}

const runs: Run[] = [];
for (const size of sizes) {
  for (const P of streams) {
    const started = performance.now();
    const result = await train({
      ...DEFAULT_OPTIONS,
      ...size,
      data: 'data/kjv-train.txt',
      val: 'data/kjv-val.txt',
      out: join(outRoot, `${size.name}-P${P}`),
      P,
      prefixTokens: 8,
      vocabSize: 257, // bytes only: keeps the embedding small next to these tiny backbones
      context,
      batch,
      steps,
      lr: 3e-3,
      evalEvery: 0,
      evalWindows: 64,
      saveEvery: 0,
      seed: 7,
      threads,
      quiet: true,
    });
    const entries = parameterEntries(result.config, result.params);
    const count = (f: (role: string, name: string) => boolean) =>
      entries.filter((e) => f(e.role, e.name)).reduce((s, e) => s + e.data.length, 0);
    const N = count((role, name) => role === 'backbone' && name !== 'model.embed_tokens.weight' && name !== 'lm_head.weight');
    const logs = result.logs;
    const run: Run = {
      size: size.name,
      P,
      N,
      parscaleParams: count((role) => role !== 'backbone'),
      valLoss: result.finalValLoss ?? NaN,
      tokensPerS: logs.reduce((s, l) => s + l.tokens_per_s, 0) / logs.length,
      seconds: (performance.now() - started) / 1000,
    };
    runs.push(run);
    process.stderr.write(`${size.name} P=${P}: N=${N}, val loss ${run.valLoss.toFixed(4)}, ${run.tokensPerS.toFixed(0)} tok/s, ${run.seconds.toFixed(0)} s\n`);
  }
}

// Fit loss = E + B · x with x = (N (k ln P + 1))^(−α), B = A^α: linear in (E, B) for fixed (α, k).
function fitLinear(xs: number[], ys: number[]): { E: number; B: number; sse: number } {
  const n = xs.length;
  const mx = xs.reduce((s, x) => s + x, 0) / n;
  const my = ys.reduce((s, y) => s + y, 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (let i = 0; i < n; i++) {
    sxy += (xs[i] - mx) * (ys[i] - my);
    sxx += (xs[i] - mx) ** 2;
  }
  const B = sxx === 0 ? 0 : sxy / sxx;
  const E = my - B * mx;
  const sse = xs.reduce((s, x, i) => s + (E + B * x - ys[i]) ** 2, 0);
  return { E, B, sse };
}
let best = { alpha: 0, k: 0, E: 0, B: 0, sse: Infinity };
for (let alpha = 0.02; alpha <= 2; alpha += 0.005) {
  for (let k = 0; k <= 3; k += 0.005) {
    const xs = runs.map((r) => (r.N * (k * Math.log(r.P) + 1)) ** -alpha);
    const fit = fitLinear(xs, runs.map((r) => r.valLoss));
    // a law's constants must be meaningful: positive A, an irreducible loss E ≥ 0
    if (fit.B > 0 && fit.E >= 0 && fit.sse < best.sse) best = { alpha, k, ...fit };
  }
}
const A = best.B ** (1 / best.alpha);
const predict = (N: number, P: number) => best.E + (A / (N * (best.k * Math.log(P) + 1))) ** best.alpha;
const meanLoss = runs.reduce((s, r) => s + r.valLoss, 0) / runs.length;
const sst = runs.reduce((s, r) => s + (r.valLoss - meanLoss) ** 2, 0);
const r2 = 1 - best.sse / sst;

// SVG: validation loss against P (log axis), one colour per size, fitted curves
const W = 560;
const Hh = 360;
const pad = { l: 60, r: 20, t: 30, b: 45 };
const losses = runs.map((r) => r.valLoss);
const yMin = Math.min(...losses) - 0.05;
const yMax = Math.max(...losses) + 0.05;
const xOf = (P: number) => pad.l + (Math.log2(P) / 3) * (W - pad.l - pad.r);
const yOf = (loss: number) => pad.t + ((yMax - loss) / (yMax - yMin)) * (Hh - pad.t - pad.b);
const colours = ['#1f77b4', '#d62728'];
const parts: string[] = [];
parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${Hh}" font-family="sans-serif" font-size="12">`);
parts.push(`<rect width="${W}" height="${Hh}" fill="white"/>`);
parts.push(`<text x="${W / 2}" y="18" text-anchor="middle">Toy parallel scaling law: validation loss vs P (same ${tokensPerRun} training tokens)</text>`);
parts.push(`<line x1="${pad.l}" y1="${Hh - pad.b}" x2="${W - pad.r}" y2="${Hh - pad.b}" stroke="black"/>`);
parts.push(`<line x1="${pad.l}" y1="${pad.t}" x2="${pad.l}" y2="${Hh - pad.b}" stroke="black"/>`);
for (const P of streams) {
  parts.push(`<text x="${xOf(P)}" y="${Hh - pad.b + 16}" text-anchor="middle">${P}</text>`);
}
parts.push(`<text x="${W / 2}" y="${Hh - 8}" text-anchor="middle">P (parallel streams, log scale)</text>`);
for (let i = 0; i <= 4; i++) {
  const loss = yMin + ((yMax - yMin) * i) / 4;
  parts.push(`<text x="${pad.l - 6}" y="${yOf(loss) + 4}" text-anchor="end">${loss.toFixed(2)}</text>`);
}
parts.push(`<text x="14" y="${Hh / 2}" transform="rotate(-90 14 ${Hh / 2})" text-anchor="middle">validation loss (nats/byte)</text>`);
sizes.forEach((size, s) => {
  const sizeRuns = runs.filter((r) => r.size === size.name);
  const N = sizeRuns[0].N;
  const curve: string[] = [];
  for (let i = 0; i <= 60; i++) {
    const P = 2 ** ((3 * i) / 60);
    curve.push(`${xOf(P).toFixed(1)},${yOf(predict(N, P)).toFixed(1)}`);
  }
  parts.push(`<polyline points="${curve.join(' ')}" fill="none" stroke="${colours[s]}" stroke-dasharray="4 3"/>`);
  for (const r of sizeRuns) parts.push(`<circle cx="${xOf(r.P)}" cy="${yOf(r.valLoss)}" r="4" fill="${colours[s]}"/>`);
  parts.push(`<text x="${W - pad.r - 150}" y="${pad.t + 16 + 16 * s}" fill="${colours[s]}">● ${size.name} (N = ${N})</text>`);
});
parts.push(`<text x="${W - pad.r - 150}" y="${pad.t + 48}">- - fit</text>`);
parts.push('</svg>');

mkdirSync(docs, { recursive: true });
writeFileSync(join(docs, 'scaling.svg'), parts.join('\n') + '\n');
writeFileSync(
  join(docs, 'scaling-results.json'),
  JSON.stringify({ tokensPerRun, context, batch, steps, runs, fit: { E: best.E, A, k: best.k, alpha: best.alpha, r2 } }, null, 2) + '\n',
);
const table = runs
  .map(
    (r) =>
      `| ${r.size} | ${r.P} | ${r.N} | ${r.parscaleParams} | ${r.valLoss.toFixed(4)} | ${predict(r.N, r.P).toFixed(4)} | ${r.tokensPerS.toFixed(0)} | ${r.seconds.toFixed(0)} |`,
  )
  .join('\n');
writeFileSync(
  join(docs, 'scaling.md'),
  `# A toy parallel scaling law on the CPU

Generated by \`npm run train:scaling\` (tools/train-scaling.ts); rerun it to regenerate this page,
\`scaling.svg\` and \`scaling-results.json\`.

Setup: the King James Bible (data/), byte-level vocabulary (257), context ${context}, batch ${batch},
${steps} AdamW updates = ${steps * context * batch} training tokens per run for every run (same seed, same
data order), learning rate 3e-3 with warm-up and cosine decay, ${8} prefix tokens per stream,
models from scratch. Validation loss: mean cross-entropy (nats per byte) on 64 fixed windows of
the held-out chapters. N counts the backbone's non-embedding parameters (as in the paper);
the "ParScale params" column is what the P streams add (prefixes + aggregation layer).

| size | P | N | ParScale params | val loss | fit | tokens/s | seconds |
| --- | --- | --- | --- | --- | --- | --- | --- |
${table}

Fit (least squares over all ${runs.length} runs): **loss = ${best.E.toFixed(3)} + (${A.toExponential(3)} / (N · (${best.k.toFixed(3)} · ln P + 1)))^${best.alpha.toFixed(3)}**,
R² = ${r2.toFixed(3)}. In the paper's form, P streams act like multiplying N by k·ln P + 1 =
${(best.k * Math.log(2) + 1).toFixed(2)}, ${(best.k * Math.log(4) + 1).toFixed(2)}, ${(best.k * Math.log(8) + 1).toFixed(2)} for P = 2, 4, 8.

![validation loss vs P](scaling.svg)

Caveats, plainly: this is a toy. Two sizes, four values of P, one seed, ${steps * context * batch} tokens per
run (far from convergence; the paper trains on 42B tokens), so the fitted constants carry large
uncertainty and only the qualitative question — does loss fall with log P at fixed N and fixed
data — is meaningful here. Four fitted constants on eight points leave little to test the form.
`,
);
process.stderr.write(`fit: E=${best.E.toFixed(4)} A=${A.toExponential(3)} k=${best.k.toFixed(3)} alpha=${best.alpha.toFixed(3)} R²=${r2.toFixed(3)}\n`);
