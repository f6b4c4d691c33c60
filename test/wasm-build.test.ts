// The committed src/wasm-bridge/kernels.wasm and kernels-relaxed.wasm must be exactly what
// assembly/kernels.ts compiles to (asconfig.json targets release and relaxed).
// The .wasm is committed so that a clean clone runs without a build step (npm ci && npm test, and
// library users never need the compiler); this test rebuilds it with the pinned AssemblyScript
// and fails when someone edits assembly/ and forgets `npm run build:wasm`.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { kernelsWasmUrl, relaxedKernelsWasmUrl } from '../src/wasm-bridge/kernels.ts';

const repo = fileURLToPath(new URL('../', import.meta.url));
// The compiler runs in a plain Node child process: imported through tsx, binaryen's 13 MB of
// JavaScript takes ~12 s just to load.
const ascBin = join(createRequire(import.meta.url).resolve('assemblyscript/package.json'), '../bin/asc.js');

describe('kernels.wasm and kernels-relaxed.wasm', () => {
  for (const [target, url] of [
    ['release', kernelsWasmUrl],
    ['relaxed', relaxedKernelsWasmUrl],
  ] as const) {
    it(`${url.pathname.split('/').at(-1)} is up to date with assembly/kernels.ts (else run \`npm run build:wasm\`)`, () => {
      const dir = mkdtempSync(join(tmpdir(), 'parscale-asc-'));
      try {
        const outFile = join(dir, 'kernels.wasm');
        const r = spawnSync(process.execPath, [ascBin, '--config', 'asconfig.json', '--target', target, '--outFile', outFile], { cwd: repo, encoding: 'utf8', timeout: 120_000 });
        assert.equal(r.status, 0, `asc failed:\n${r.stdout}${r.stderr}`);
        const committed = readFileSync(url);
        assert.ok(readFileSync(outFile).equals(committed), `src/wasm-bridge/${url.pathname.split('/').at(-1)} is stale: run \`npm run build:wasm\` and commit it`);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});
