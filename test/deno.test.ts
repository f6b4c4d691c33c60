// Smoke test under Deno 2 (the `deno` npm package, a devDependency): the same sources run
// `dump` on both backends and `generate` on the default model, and the logits match PyTorch's.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { compareRows } from './helpers/fixtures.ts';

const repo = fileURLToPath(new URL('../', import.meta.url));
const deno = join(repo, 'node_modules/.bin/deno');
const fixture = join(repo, 'test/fixtures/parscale-p8-bf16-tied-sharded');

function runDeno(args: string[]) {
  const r = spawnSync(deno, ['run', '-A', join(repo, 'bin/parscale-deno.ts'), ...args], { cwd: repo, encoding: 'utf8', timeout: 180_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('under Deno', () => {
  it('the deno binary is installed (devDependency "deno")', () => assert.ok(existsSync(deno), deno));

  for (const backend of ['reference', 'wasm']) {
    it(`dump --backend ${backend} reproduces the PyTorch logits`, () => {
      const expected = JSON.parse(readFileSync(join(fixture, 'expected.json'), 'utf8'));
      const r = runDeno(['dump', '--backend', backend, '--model', fixture, '--ids', expected.prompt_ids.join(','), '--decode', String(expected.decode_ids.length), '--out', '-']);
      assert.equal(r.code, 0, r.stderr);
      const got = JSON.parse(r.stdout);
      assert.equal(got.backend, backend);
      assert.deepEqual(got.decode_ids, expected.decode_ids);
      compareRows('prefill_logits', got.prefill_logits, expected.prefill_logits);
    });
  }

  it('generate runs on the default model', () => {
    const r = runDeno(['generate', '--model', 'models/default', '--no-progress', '-n', '6', '--seed', '1', 'Hello']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.startsWith('Hello'));
    assert.match(r.stderr, /generated \d+ tokens/);
  });
});
