// The relaxed-SIMD build of the kernels (kernels-relaxed.wasm: fused multiply-adds in the matrix
// products) must pass the same tests as the plain build. The other test files run whichever build
// the engine picks — the plain one under Node 20, which has relaxed SIMD only behind a flag — so
// this file runs the kernel and whole-model tests again in a child process with the flag on and
// PARSCALE_WASM=relaxed-simd (which fails loudly if the build cannot be used).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { kernelBuild, relaxedSimdSupported } from '../src/wasm-bridge/kernels.ts';

const repo = fileURLToPath(new URL('../', import.meta.url));
const files = ['test/wasm-kernels.test.ts', 'test/wasm-model.test.ts', 'test/wasm-pool.test.ts'];

describe('the relaxed-SIMD build of the kernels', () => {
  it(`passes ${files.join(', ')}`, () => {
    // without NODE_TEST_CONTEXT the child reports as a top-level run (TAP on stdout)
    const { NODE_TEST_CONTEXT: _, ...env } = process.env;
    const r = spawnSync(process.execPath, ['--experimental-wasm-relaxed-simd', '--import', 'tsx', '--test', ...files], {
      cwd: repo,
      encoding: 'utf8',
      env: { ...env, PARSCALE_WASM: 'relaxed-simd' },
      timeout: 600_000,
    });
    const summary = r.stdout.split('\n').filter((line) => /^# (tests|pass|fail)/.test(line));
    assert.equal(r.status, 0, `the relaxed-SIMD run failed:\n${r.stdout.slice(-20_000)}\n${r.stderr.slice(-5_000)}`);
    // a run that tested nothing must not pass either
    const passed = Number(/^# pass (\d+)/m.exec(r.stdout)?.[1] ?? 0);
    assert.ok(passed > 20, `expected the relaxed-SIMD run to pass its tests, got: ${summary.join('; ')}`);
  });
});

describe('choosing the build (kernelBuild)', () => {
  const withEnv = (value: string | undefined, body: () => void) => {
    const saved = process.env.PARSCALE_WASM;
    if (value === undefined) delete process.env.PARSCALE_WASM;
    else process.env.PARSCALE_WASM = value;
    try {
      body();
    } finally {
      if (saved === undefined) delete process.env.PARSCALE_WASM;
      else process.env.PARSCALE_WASM = saved;
    }
  };
  it('takes relaxed-simd exactly where the engine validates relaxed SIMD', () =>
    withEnv(undefined, () => assert.equal(kernelBuild(), relaxedSimdSupported() ? 'relaxed-simd' : 'simd')));
  it('PARSCALE_WASM=simd forces the plain build; an unknown value is an error that lists the choices', () => {
    withEnv('simd', () => assert.equal(kernelBuild(), 'simd'));
    withEnv('avx', () => assert.throws(() => kernelBuild(), /PARSCALE_WASM must be one of simd, relaxed-simd, got "avx"/));
  });
  it('PARSCALE_WASM=relaxed-simd on an engine without relaxed SIMD says so instead of failing to compile', () =>
    withEnv('relaxed-simd', () => {
      if (relaxedSimdSupported()) assert.equal(kernelBuild(), 'relaxed-simd');
      else assert.throws(() => kernelBuild(), /does not support WebAssembly relaxed SIMD/);
    }));
});
