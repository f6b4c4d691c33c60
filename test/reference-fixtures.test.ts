// The reference forward pass against an independent implementation: every checkpoint in
// test/fixtures was written, and its logits computed, by tools/make_fixtures.py (PyTorch,
// float32 math, following the official modeling_qwen2_parscale.py). We load each with our own
// loader and compare every number.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { dumpModel, type DumpResult } from '../src/cli/dump.ts';
import { loadModel } from '../src/load-model.ts';

const fixturesDir = fileURLToPath(new URL('./fixtures/', import.meta.url));
const repoDir = fileURLToPath(new URL('../', import.meta.url));
export const fixtureNames = existsSync(fixturesDir)
  ? readdirSync(fixturesDir).filter((name) => existsSync(join(fixturesDir, name, 'expected.json')))
  : [];

interface Expected extends DumpResult {
  stream_hidden: number[][][];
  aggregation_weights?: number[][];
}

/**
 * Tolerance: both sides compute in float32 from the same stored weights, but PyTorch accumulates
 * dot products in float32 (in its own order) while the oracle accumulates in float64, and
 * exp/cos/sin differ in the last bits. Over two layers of these tiny models that is ~1e-6
 * relative; we allow 1e-4 of the row's largest magnitude (plus 1e-5 absolute) so a real
 * semantic error (wrong RoPE pairing, stream order, prefix rotation …) — which moves logits by
 * O(0.1..1) — cannot hide.
 */
export function compareRows(name: string, actual: ArrayLike<number>[], expected: ArrayLike<number>[]): number {
  assert.equal(actual.length, expected.length, `${name}: number of rows`);
  let worst = 0;
  actual.forEach((row, r) => {
    const want = expected[r];
    assert.equal(row.length, want.length, `${name}[${r}]: row length`);
    let scale = 0;
    for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]));
    for (let i = 0; i < want.length; i++) {
      const error = Math.abs(row[i] - want[i]);
      worst = Math.max(worst, error / Math.max(scale, 1));
      if (error > 1e-4 * scale + 1e-5) {
        assert.fail(`${name}[${r}][${i}]: got ${row[i]}, PyTorch ${want[i]} (|diff| ${error.toExponential(2)}, row scale ${scale.toFixed(3)})`);
      }
    }
  });
  return worst;
}

describe('reference model against the PyTorch fixtures', () => {
  it('has fixtures to compare against', () => assert.ok(fixtureNames.length >= 5, `found ${fixtureNames.length} in ${fixturesDir}`));

  for (const name of fixtureNames) {
    it(name, async () => {
      const dir = join(fixturesDir, name);
      const expected = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8')) as Expected;
      const model = await loadModel(dir, { backend: 'reference' });
      const got = dumpModel(model, dir, expected.prompt_ids, expected.decode_ids.length, true);
      const worst = Math.max(
        compareRows('prefill_logits', got.prefill_logits, expected.prefill_logits),
        compareRows('decode_logits', got.decode_logits, expected.decode_logits),
        compareRows('stream_hidden', got.stream_hidden!.flat(), expected.stream_hidden.flat()),
      );
      assert.deepEqual(got.decode_ids, expected.decode_ids);
      if (model.config.parscaleN > 1) {
        compareRows('aggregation_weights', got.aggregation_weights!, expected.aggregation_weights!);
      }
      console.log(`# ${name}: worst relative logit error ${worst.toExponential(2)}`);
    });
  }

  it('the `parscale dump` command writes the same numbers', () => {
    const name = fixtureNames.find((n) => n.includes('sharded')) ?? fixtureNames[0];
    const dir = join(fixturesDir, name);
    const expected = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8')) as Expected;
    const tmp = mkdtempSync(join(tmpdir(), 'parscale-dump-'));
    try {
      const out = join(tmp, 'out.json');
      const args = ['dump', '--model', dir, '--ids', expected.prompt_ids.join(','), '--decode', String(expected.decode_ids.length), '--hidden', '--out', out];
      execFileSync(process.execPath, [join(repoDir, 'bin/parscale.js'), ...args], { stdio: 'pipe' });
      const got = JSON.parse(readFileSync(out, 'utf8')) as DumpResult;
      assert.deepEqual(got.prompt_ids, expected.prompt_ids);
      assert.deepEqual(got.decode_ids, expected.decode_ids);
      compareRows('prefill_logits', got.prefill_logits, expected.prefill_logits);
      compareRows('decode_logits', got.decode_logits, expected.decode_logits);
      assert.equal(got.stream_hidden!.length, expected.prompt_ids.length);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
