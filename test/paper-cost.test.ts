// The pure parts of bench/paper-cost.ts: the paper's fitted law against the losses it was fitted
// on, the non-embedding count against the paper's own counts and against the tensor sizes in a
// written checkpoint's safetensors headers, and the choice of the matched P = 1 shapes.
// Nothing here measures time.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { readConfig } from '../src/checkpoint/config.ts';
import { PRESETS, type Shape, makeCheckpoint } from '../tools/make-checkpoint.ts';
import { FAMILY, FAMILY_P, LAW_FITS, chooseEquivalentShape, equivalentN, nonEmbeddingParameters, predictedLoss, shapeConfig } from '../bench/paper-cost-law.ts';
import { compare, formatsOf, measurementOf, niceTicks, page, parseOptions, planMeasurements, planRows, plotSvg } from '../bench/paper-cost.ts';
import { WASM_MEMORY_LIMIT_BYTES, planWasmMemory } from '../src/wasm-bridge/plan.ts';

const scratch = mkdtempSync(join(tmpdir(), 'parscale-paper-cost-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

// The final losses of the 48 training runs the law was fitted on, from QwenLM/ParScale
// parametric_fit.py lines 71-83: rows P = 1, 2, 4, 8; columns the six FAMILY sizes.
const LOSSES = {
  'stack-v2-python': [
    [1.1722, 1.1496, 1.1131, 1.0817, 1.0451, 1.0213],
    [1.1507, 1.1262, 1.094, 1.0623, 1.0244, 1.0025],
    [1.1354, 1.1124, 1.0808, 1.049, 1.0126, 0.9906],
    [1.1231, 1.0997, 1.0688, 1.0383, 1.0016, 0.9794],
  ],
  pile: [
    [2.1113, 2.0671, 2.0027, 1.9539, 1.8876, 1.8451],
    [2.0772, 2.0363, 1.973, 1.9266, 1.861, 1.8137],
    [2.0544, 2.0128, 1.9509, 1.904, 1.8394, 1.7938],
    [2.0364, 1.9933, 1.9318, 1.8856, 1.8218, 1.7772],
  ],
} as const;

const base18 = PRESETS['parscale-1.8b'];
const familyShape = (member: (typeof FAMILY)[number]): Shape => ({ ...base18, hidden_size: member.hidden, intermediate_size: member.intermediate });

describe('the fitted parallel scaling law', () => {
  for (const name of ['stack-v2-python', 'pile'] as const) {
    it(`${name}: the Figure 2 constants reproduce the fitted losses with the annotated R²`, () => {
      const fit = LAW_FITS[name];
      const observed: number[] = [];
      const predicted: number[] = [];
      FAMILY_P.forEach((P, row) =>
        FAMILY.forEach((member, column) => {
          observed.push(LOSSES[name][row][column]);
          predicted.push(predictedLoss(fit, member.N[row], P));
        }),
      );
      const mean = observed.reduce((a, b) => a + b) / observed.length;
      const residual = observed.reduce((sum, y, i) => sum + (y - predicted[i]) ** 2, 0);
      const total = observed.reduce((sum, y) => sum + (y - mean) ** 2, 0);
      const r2 = 1 - residual / total;
      // A is in parameters here; read in the fitting code's units of 1e9 it would miss by far
      assert.ok(Math.abs(r2 - fit.r2) < 5e-4, `R² ${r2.toFixed(5)}, annotated ${fit.r2}`);
      const worst = Math.max(...observed.map((y, i) => Math.abs(y - predicted[i])));
      assert.ok(worst < 0.012, `largest error ${worst}`);
    });
  }

  it('a P-stream model and its N_eq at P = 1 have the same predicted loss; N_eq grows like k·ln P', () => {
    const fit = LAW_FITS['stack-v2-python'];
    const N = 1.5e9;
    assert.equal(equivalentN(fit, N, 1), N);
    for (const P of [2, 4, 8]) {
      assert.ok(Math.abs(predictedLoss(fit, equivalentN(fit, N, P), 1) - predictedLoss(fit, N, P)) < 1e-12);
    }
    // doubling P adds the same k·ln 2 · N each time
    const step = (P: number) => equivalentN(fit, N, 2 * P) - equivalentN(fit, N, P);
    assert.ok(Math.abs(step(2) - fit.k * Math.LN2 * N) < 1e-3 && Math.abs(step(4) - step(2)) < 1e-3);
    assert.ok(predictedLoss(fit, N, 8) < predictedLoss(fit, N, 2));
  });
});

/** Element counts per tensor name, read straight from the safetensors headers in `dir`. */
function headerTensorSizes(dir: string): Map<string, number> {
  const sizes = new Map<string, number>();
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.safetensors'))) {
    const bytes = readFileSync(join(dir, file));
    const headerLength = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8')) as Record<string, { shape: number[] }>;
    for (const [name, entry] of Object.entries(header)) {
      if (name !== '__metadata__') sizes.set(name, entry.shape.reduce((a, b) => a * b, 1));
    }
  }
  return sizes;
}

describe('non-embedding parameter count', () => {
  it('equals the paper\'s own counts for all 24 family models (parametric_fit.py lines 65-68)', () => {
    for (const member of FAMILY) {
      FAMILY_P.forEach((P, i) => assert.equal(nonEmbeddingParameters(shapeConfig(familyShape(member), P)), member.N[i], `${member.label} P = ${P}`));
    }
  });

  const cases: { name: string; shape: Shape; P: number }[] = [
    { name: 'P = 1, tied', shape: { ...PRESETS.tiny, vocab_size: 300 }, P: 1 },
    { name: 'P = 4, untied, 6 heads / 2 KV heads, 3 layers', shape: { ...PRESETS.tiny, hidden_size: 48, num_attention_heads: 6, num_key_value_heads: 2, num_hidden_layers: 3, vocab_size: 300, tie_word_embeddings: false }, P: 4 },
    { name: 'P = 3, sharded', shape: { ...PRESETS.tiny, intermediate_size: 80, vocab_size: 200 }, P: 3 },
  ];
  for (const { name, shape, P } of cases) {
    it(`matches the tensor sizes in a written checkpoint's safetensors headers (${name})`, () => {
      const dir = join(scratch, name.replace(/\W+/g, '-'));
      makeCheckpoint({ out: dir, shape, P, prefixTokens: 5, attnSmooth: 0.01, dtype: 'f32', seed: 3, maxShardBytes: name.includes('sharded') ? 20_000 : 2e9 });
      const sizes = headerTensorSizes(dir);
      if (name.includes('sharded')) assert.ok(readdirSync(dir).filter((f) => f.endsWith('.safetensors')).length > 1, 'several shards');
      let fromHeaders = 0;
      for (const [tensor, size] of sizes) if (tensor !== 'model.embed_tokens.weight' && tensor !== 'lm_head.weight') fromHeaders += size;
      assert.equal(sizes.has('lm_head.weight'), !shape.tie_word_embeddings);
      assert.equal(nonEmbeddingParameters(readConfig(dir)), fromHeaders);
    });
  }
});

describe('the matched P = 1 shapes', () => {
  it('from the 1.8B base, the N of each family member gives back its published shape', () => {
    for (const member of FAMILY) {
      const choice = chooseEquivalentShape(base18, member.N[0]);
      assert.deepEqual([choice.shape.hidden_size, choice.shape.intermediate_size], [member.hidden, member.intermediate], member.label);
      assert.equal(choice.mismatch, 0);
    }
  });

  it('keeps layers, heads and vocabulary, steps of 128, and misses by at most half an intermediate step', () => {
    for (let target = 0.6e9; target < 5e9; target += 0.137e9) {
      const { shape, N, mismatch } = chooseEquivalentShape(base18, target);
      assert.equal(N, nonEmbeddingParameters(shapeConfig(shape, 1)));
      assert.deepEqual(
        [shape.num_hidden_layers, shape.num_attention_heads, shape.num_key_value_heads, shape.vocab_size],
        [base18.num_hidden_layers, base18.num_attention_heads, base18.num_key_value_heads, base18.vocab_size],
      );
      assert.equal(shape.hidden_size % 128, 0);
      assert.equal(shape.intermediate_size % 128, 0);
      assert.ok(Math.abs(mismatch * target) <= 1.5 * shape.num_hidden_layers * shape.hidden_size * 128, `target ${target}: mismatch ${mismatch}`);
      const ratio = shape.intermediate_size / shape.hidden_size;
      assert.ok(ratio > 4.5 && ratio < 6.5, `intermediate/hidden ${ratio}`);
    }
  });

  it('the planned rows: each matched P = 1 model has the predicted loss of the ParScale row it stands in for', () => {
    for (const shapes of ['paper', 'small'] as const) {
      const rows = planRows({ shapes, base: '1.8b', fit: 'pile', ckptDir: '/nonexistent' });
      assert.deepEqual(rows.map((r) => r.P), [1, 2, 4, 8, 1, 1, 1]);
      for (const scaled of rows.filter((r) => r.series === 'scaled')) {
        const parscale = rows.find((r) => r.series === 'parscale' && r.P === scaled.matchesP)!;
        assert.ok(Math.abs(scaled.loss - parscale.loss) < 1e-3 * parscale.loss, `${shapes} P = ${parscale.P}: ${scaled.loss} vs ${parscale.loss}`);
        assert.ok(scaled.N > parscale.N);
      }
    }
  });
});

describe('the plot', () => {
  it('round ticks that cover the range', () => {
    assert.deepEqual(niceTicks(0.43, 0.61, 5), [0.4, 0.45, 0.5, 0.55, 0.6, 0.65]);
    assert.deepEqual(niceTicks(1, 9, 4), [0, 2, 4, 6, 8, 10]);
    assert.deepEqual(niceTicks(1.04, 1.084, 5), [1.04, 1.05, 1.06, 1.07, 1.08, 1.09]);
  });

  it('an SVG with a point per measured row and format, the unmeasured ones named with their format', () => {
    const rows = planRows({ shapes: 'small', base: '1.8b', fit: 'stack-v2-python', ckptDir: '/nonexistent' });
    planMeasurements(rows, { weights: 'both', backend: 'wasm', promptTokens: 8, newTokens: 8, threads: 2 });
    rows.forEach((row, i) => {
      for (const m of row.measurements) {
        // int8: all but the last matched model; stored: the ParScale rows only
        if (m.weights === 'int8' ? i === 6 : row.series === 'scaled') m.notMeasured = 'too big';
        else m.bench = fakeBench(row.P, { decodeTokensPerSecond: 10 / (1 + i), peakRss: (1 + i) * 1e8 });
      }
    });
    const svg = plotSvg(rows, { promptTokens: 8, newTokens: 8, fit: 'stack-v2-python', shapes: 'small', weights: 'both' });
    assert.match(svg, /^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    assert.ok(svg.trimEnd().endsWith('</svg>'));
    // two panels: int8 has 3 circles (base + 2 measured matched models), stored the base's only; + the legend's
    assert.equal(svg.match(/<circle /g)!.length, 2 * (3 + 1) + 1);
    // per panel: the int8 lines of both series, and the stored ParScale line dashed (stored has no matched model to draw a line to)
    assert.equal(svg.match(/<polyline /g)!.length, 2 * 3);
    assert.equal(svg.match(/<polyline [^>]*stroke-dasharray/g)!.length, 2);
    assert.match(svg, /not measured: P=1 [^<]* int8, P=1 [^<]* bf16/);
    assert.match(svg, /int8 weights solid, stored bf16 dashed/);
    assert.match(svg, /SMALL SHAPES/);
  });
});

/** A bench report with the figures a test sets; the rest fixed. */
function fakeBench(P: number, { decodeTokensPerSecond = 10, peakRss = 1e8, weightBytes = 1e8 }: { decodeTokensPerSecond?: number; peakRss?: number; weightBytes?: number } = {}) {
  return { backend: 'wasm', P, threads: 2, prompt_tokens: 8, new_tokens: 8, runs: 1, prefill_tokens_per_s: 10, decode_tokens_per_s: decodeTokensPerSecond, decode_ms_per_token: 1000 / decodeTokensPerSecond, peak_rss_bytes: peakRss, weight_bytes: weightBytes };
}

describe('weight formats', () => {
  const bench = { promptTokens: 64, newTokens: 64, threads: 2 };

  it('--weights: both by default with wasm (int8 first), stored with the reference backend, which refuses int8', () => {
    assert.equal(parseOptions([]).weights, 'both');
    assert.deepEqual(formatsOf('both'), ['int8', 'stored']);
    assert.deepEqual(formatsOf('stored'), ['stored']);
    assert.equal(parseOptions(['--backend', 'reference']).weights, 'stored');
    assert.throws(() => parseOptions(['--backend', 'reference', '--weights', 'int8']), /needs the wasm backend/);
    assert.throws(() => parseOptions(['--weights', 'fp4']), /--weights must be one of both, int8, stored/);
    assert.throws(() => parseOptions(['--plan', '--prepare']), /give one of them/);
  });

  it('paper shapes, both formats: every row runs in int8; in bf16 only the ParScale rows, the matched models marked "does not fit" with what they need', () => {
    const rows = planRows({ shapes: 'paper', base: '1.8b', fit: 'stack-v2-python', ckptDir: '/nonexistent' });
    const order = planMeasurements(rows, { weights: 'both', backend: 'wasm', ...bench });
    assert.deepEqual(order.map(({ row, measurement }) => `${row.id}:${measurement.weights}`), [...rows.map((r) => `${r.id}:int8`), ...rows.map((r) => `${r.id}:stored`)]);
    for (const row of rows) {
      const [int8, stored] = [measurementOf(row, 'int8')!, measurementOf(row, 'stored')!];
      assert.equal(int8.notMeasured, undefined, row.id);
      assert.ok(int8.memory!.totalBytes <= WASM_MEMORY_LIMIT_BYTES && int8.memory!.maxContext === 128);
      if (row.series === 'parscale') assert.equal(stored.notMeasured, undefined, row.id);
      else {
        assert.ok(stored.memory!.totalBytes > WASM_MEMORY_LIMIT_BYTES);
        assert.match(stored.notMeasured!, new RegExp(`does not fit one wasm32 memory with bf16 weights \\(needs ${(stored.memory!.totalBytes / 2 ** 30).toFixed(2)} GiB`));
      }
    }
    // the bf16 matched models need 4.3-6 GiB, int8 roughly halves every row
    const scaledStored = rows.filter((r) => r.series === 'scaled').map((r) => measurementOf(r, 'stored')!.memory!.totalBytes / 2 ** 30);
    assert.ok(scaledStored[0] > 4 && scaledStored[2] < 6.5, String(scaledStored));
  });

  it('the reference backend has no wasm memory to fit: every row runs, in stored weights only', () => {
    const rows = planRows({ shapes: 'paper', base: '1.8b', fit: 'stack-v2-python', ckptDir: '/nonexistent' });
    const order = planMeasurements(rows, { weights: 'stored', backend: 'reference', ...bench });
    assert.equal(order.length, rows.length);
    assert.ok(order.every(({ measurement }) => measurement.weights === 'stored' && measurement.memory === null && measurement.notMeasured === undefined));
  });

  it('the memory plan from a row\'s shape is the plan of the config.json its checkpoint gets', () => {
    const rows = planRows({ shapes: 'paper', base: '1.8b', fit: 'stack-v2-python', ckptDir: join(scratch, 'plans') });
    planMeasurements(rows, { weights: 'both', backend: 'wasm', ...bench });
    for (const row of [rows[3], rows[6]]) {
      makeCheckpoint({ out: row.dir, shape: row.shape, P: row.P, prefixTokens: 48, attnSmooth: 0.01, dtype: 'bf16', seed: 1, maxShardBytes: 2e9, configOnly: true });
      for (const m of row.measurements) {
        assert.deepEqual(planWasmMemory(readConfig(row.dir), () => 'BF16', { weights: m.weights, maxContext: 128, threads: 2 }), m.memory, `${row.id} ${m.weights}`);
      }
    }
  });

  it('the paper-shape page: bf16 rows that do not fit are listed with what they need, and the comparison table holds int8 only', () => {
    const options = parseOptions(['--ckpt-dir', '/nonexistent']);
    const rows = planRows(options);
    planMeasurements(rows, options);
    const plan = page(rows, options, null);
    assert.match(plan, /full table has NOT been run yet/);
    assert.match(plan, /- Stored bf16 weights: runs P = 1 \(3\.\d\d GiB\), P = 2 [^\n]*; does not fit: matched P = 1 for P = 2 \(4\.\d\d GiB\)/);
    assert.doesNotMatch(plan, /## Measurements/);
    rows.forEach((row, i) => {
      for (const m of row.measurements) if (!m.notMeasured) m.bench = fakeBench(row.P, { peakRss: (m.weights === 'int8' ? 2e9 : 4e9) + i * 1e8 });
    });
    const measured = page(rows, options, new Date());
    const comparisonRows = measured.split('\n').filter((line) => /^\| (int8|bf16) \| [248] \|/.test(line));
    assert.deepEqual(comparisonRows.map((line) => line.split(' | ')[0]), ['| int8', '| int8', '| int8']);
    assert.match(measured, /No comparison with stored bf16 weights/);
    assert.equal(measured.match(/\| bf16 \| not measured: does not fit one wasm32 memory with bf16 weights \(needs \d\.\d\d GiB/g)!.length, 3);
    assert.match(measured, /### int8 against stored bf16, the same checkpoint/);
  });

  it('ParScale is compared with the matched models in one format only', () => {
    const rows = planRows({ shapes: 'small', base: '1.8b', fit: 'stack-v2-python', ckptDir: '/nonexistent' });
    planMeasurements(rows, { weights: 'both', backend: 'wasm', promptTokens: 8, newTokens: 8, threads: 2 });
    rows.forEach((row, i) => {
      // int8 peaks at 1 GB + i·10 MB; stored at 2 GB + i·100 MB, and has no matched model for P = 4
      measurementOf(row, 'int8')!.bench = fakeBench(row.P, { peakRss: 1e9 + i * 1e7 });
      if (!(row.series === 'scaled' && row.matchesP === 4)) measurementOf(row, 'stored')!.bench = fakeBench(row.P, { peakRss: 2e9 + i * 1e8 });
    });
    const int8 = compare(rows, 'int8');
    assert.deepEqual(int8.map((c) => [c.weights, c.P]), [['int8', 2], ['int8', 4], ['int8', 8]]);
    // P = 2 is row 1, its matched model row 4: increases over row 0 in int8 figures only
    assert.ok(Math.abs(int8[0].parscaleMemoryIncrease - 1e7) < 1 && Math.abs(int8[0].scaledMemoryIncrease - 4e7) < 1);
    const stored = compare(rows, 'stored');
    assert.deepEqual(stored.map((c) => c.P), [2, 8]);
    assert.ok(Math.abs(stored[1].parscaleMemoryIncrease - 3e8) < 1 && Math.abs(stored[1].scaledMemoryIncrease - 6e8) < 1);
  });
});
