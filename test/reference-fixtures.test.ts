// The reference forward pass against an independent implementation: every checkpoint in
// test/fixtures was written, and its logits computed, by tools/make_fixtures.py (PyTorch,
// float32 math, following the official modeling_qwen2_parscale.py). We load each with our own
// loader and compare every number.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { dumpModel, type DumpResult } from '../src/cli/dump.ts';
import { type Expected, compareRows, fixtureNames, fixturesDir } from './helpers/fixtures.ts';
import { loadModel } from '../src/load-model.ts';

const repoDir = fileURLToPath(new URL('../', import.meta.url));

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
