// The WebAssembly products of training (src/training/wasm-products.ts) against the TypeScript
// kernels they stand in for (src/training/kernels.ts, the oracle), and training runs with
// `kernels: 'wasm'` against `kernels: 'ts'`.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { linearBackwardInput, linearBackwardWeight, linearForward } from '../src/training/kernels.ts';
import { type StepLog, type TrainOptions, train } from '../src/training/train.ts';
import { losses, tinyTraining } from './helpers/tiny-training.ts';
import {
  linearProducts,
  wasmLinearBackwardInput,
  wasmLinearBackwardWeight,
  wasmLinearForward,
  wasmScratchBytes,
} from '../src/training/wasm-products.ts';
import { randomArray, rng } from './helpers/random-model.ts';

// Tolerance. Each output is a sum of k products plus one more term (the bias, or the value the
// backward kernels add to). The TypeScript kernel sums in float64 and rounds once to f32: within
// u·|Σ| of the exact sum, u = 2^-24. The wasm kernel rounds every product and every addition in
// f32; the classic bound for m such roundings, |fl(Σ t) − Σ t| ≤ γ_m · Σ|t| with γ_m = m·u/(1 − m·u),
// holds with m = k + 3 (its four-lane order is only ≈ k/4 + 6 additions deep, and the final add
// into the output is one more rounding). So |wasm − ts| ≤ γ_{k+4} · Σ|t|, computed per output from
// the f32 inputs in float64. A wrong index, a missed bias or a lost accumulation is off by O(|t|).
const U = 2 ** -24;
const gamma = (m: number) => (m * U) / (1 - m * U);

interface Case {
  rows: number;
  inDim: number;
  outDim: number;
  seed: number;
}

// sizes on both sides of multiples of 4 (the kernel's f32x4 lanes and 4-output tiles) and of 2
// (its 2-row tiles), including 1
const shapes = fc.record({
  rows: fc.integer({ min: 1, max: 37 }),
  inDim: fc.integer({ min: 1, max: 45 }),
  outDim: fc.integer({ min: 1, max: 23 }),
  seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
});

/** Assert |actual − expected| ≤ γ_{k+4} · bound at every index, naming the first failure. */
function assertClose(what: string, actual: Float32Array, expected: Float32Array, bound: Float64Array, k: number): void {
  assert.equal(actual.length, expected.length);
  let worst = 0;
  for (let j = 0; j < actual.length; j++) {
    const diff = Math.abs(actual[j] - expected[j]);
    const tol = gamma(k + 4) * bound[j];
    if (!(diff <= tol)) {
      assert.fail(`${what}[${j}]: wasm ${actual[j]}, ts ${expected[j]}, |diff| ${diff} > tolerance ${tol} (k = ${k})`);
    }
    worst = Math.max(worst, diff / tol);
  }
  assert.ok(worst <= 1);
}

describe('wasm products equal the TypeScript kernels', () => {
  it('linearForward, with and without bias', () => {
    fc.assert(
      fc.property(shapes, fc.boolean(), ({ rows, inDim, outDim, seed }: Case, withBias) => {
        const random = rng(seed);
        const x = randomArray(random, rows * inDim, 1);
        const w = randomArray(random, outDim * inDim, 1);
        const bias = withBias ? randomArray(random, outDim, 1) : null;
        const expected = new Float32Array(rows * outDim);
        const actual = randomArray(random, rows * outDim, 9); // overwritten, not added to
        linearForward(expected, x, w, bias, rows, inDim, outDim);
        wasmLinearForward(actual, x, w, bias, rows, inDim, outDim);
        const bound = new Float64Array(rows * outDim);
        for (let r = 0; r < rows; r++) {
          for (let o = 0; o < outDim; o++) {
            let s = bias === null ? 0 : Math.abs(bias[o]);
            for (let i = 0; i < inDim; i++) s += Math.abs(w[o * inDim + i] * x[r * inDim + i]);
            bound[r * outDim + o] = s;
          }
        }
        assertClose('out', actual, expected, bound, inDim);
      }),
      { numRuns: 150 },
    );
  });

  it('linearBackwardInput adds dy · W into dx', () => {
    fc.assert(
      fc.property(shapes, ({ rows, inDim, outDim, seed }: Case) => {
        const random = rng(seed);
        const dy = randomArray(random, rows * outDim, 1);
        const w = randomArray(random, outDim * inDim, 1);
        const start = randomArray(random, rows * inDim, 1);
        const expected = start.slice();
        const actual = start.slice();
        linearBackwardInput(expected, dy, w, rows, inDim, outDim);
        wasmLinearBackwardInput(actual, dy, w, rows, inDim, outDim);
        const bound = new Float64Array(rows * inDim);
        for (let r = 0; r < rows; r++) {
          for (let i = 0; i < inDim; i++) {
            let s = Math.abs(start[r * inDim + i]);
            for (let o = 0; o < outDim; o++) s += Math.abs(dy[r * outDim + o] * w[o * inDim + i]);
            bound[r * inDim + i] = s;
          }
        }
        assertClose('dx', actual, expected, bound, outDim);
      }),
      { numRuns: 150 },
    );
  });

  it('linearBackwardWeight adds dyᵀ x into dW and Σ_r dy into db (with and without db)', () => {
    fc.assert(
      fc.property(shapes, fc.boolean(), ({ rows, inDim, outDim, seed }: Case, withBias) => {
        const random = rng(seed);
        const dy = randomArray(random, rows * outDim, 1);
        const x = randomArray(random, rows * inDim, 1);
        const start = randomArray(random, outDim * inDim, 1);
        const expected = start.slice();
        const actual = start.slice();
        const dbStart = randomArray(random, outDim, 1);
        const dbExpected = withBias ? dbStart.slice() : null;
        const dbActual = withBias ? dbStart.slice() : null;
        linearBackwardWeight(expected, dbExpected, dy, x, rows, inDim, outDim);
        wasmLinearBackwardWeight(actual, dbActual, dy, x, rows, inDim, outDim);
        const bound = new Float64Array(outDim * inDim);
        for (let o = 0; o < outDim; o++) {
          for (let i = 0; i < inDim; i++) {
            let s = Math.abs(start[o * inDim + i]);
            for (let r = 0; r < rows; r++) s += Math.abs(dy[r * outDim + o] * x[r * inDim + i]);
            bound[o * inDim + i] = s;
          }
        }
        assertClose('dw', actual, expected, bound, rows);
        // db is summed by the same float64 loop over the same f32 values: identical
        if (withBias) assert.deepEqual(dbActual, dbExpected);
      }),
      { numRuns: 150 },
    );
  });

  it('float64 operands take the TypeScript kernels (bit for bit)', () => {
    const random = rng(7);
    const [rows, inDim, outDim] = [5, 6, 3];
    const x = Float64Array.from(randomArray(random, rows * inDim, 1));
    const w = Float64Array.from(randomArray(random, outDim * inDim, 1));
    const b = Float64Array.from(randomArray(random, outDim, 1));
    const dy = Float64Array.from(randomArray(random, rows * outDim, 1));
    const ts = { out: new Float64Array(rows * outDim), dx: new Float64Array(rows * inDim), dw: new Float64Array(outDim * inDim), db: new Float64Array(outDim) };
    const wasm = structuredClone(ts);
    linearForward(ts.out, x, w, b, rows, inDim, outDim);
    linearBackwardInput(ts.dx, dy, w, rows, inDim, outDim);
    linearBackwardWeight(ts.dw, ts.db, dy, x, rows, inDim, outDim);
    wasmLinearForward(wasm.out, x, w, b, rows, inDim, outDim);
    wasmLinearBackwardInput(wasm.dx, dy, w, rows, inDim, outDim);
    wasmLinearBackwardWeight(wasm.dw, wasm.db, dy, x, rows, inDim, outDim);
    assert.deepEqual(wasm, ts);
  });

  it('the scratch memory grows for a large product and still serves small ones', () => {
    const random = rng(11);
    const [rows, inDim, outDim] = [600, 301, 257]; // ≈ 1.6 MB of operands, more than the 1 MiB start
    const x = randomArray(random, rows * inDim, 1);
    const w = randomArray(random, outDim * inDim, 1);
    const expected = new Float32Array(rows * outDim);
    const actual = new Float32Array(rows * outDim);
    linearForward(expected, x, w, null, rows, inDim, outDim);
    wasmLinearForward(actual, x, w, null, rows, inDim, outDim);
    assert.ok(wasmScratchBytes() >= 4 * (rows * inDim + outDim * inDim + rows * outDim), `${wasmScratchBytes()} bytes`);
    // a tolerance of γ_{k+4} · k (|x|, |w| ≤ 1) bounds the difference of every output
    for (let j = 0; j < actual.length; j++) assert.ok(Math.abs(actual[j] - expected[j]) <= gamma(inDim + 4) * inDim, `out[${j}]`);
    const small = new Float32Array(2);
    wasmLinearForward(small, Float32Array.of(1, 2), Float32Array.of(3, 4, 5, 6), Float32Array.of(0.5, -1), 1, 2, 2);
    assert.deepEqual(small, Float32Array.of(11.5, 16));
  });

  it('refuses operands shorter than their shape, and an unknown kernel choice, with the reason', () => {
    assert.throws(
      () => wasmLinearForward(new Float32Array(6), new Float32Array(5), new Float32Array(6), null, 2, 3, 3),
      /x has 5 elements, the product needs rows × inDim = 2 × 3 = 6/,
    );
    assert.throws(
      () => wasmLinearBackwardWeight(new Float32Array(9), new Float32Array(2), new Float32Array(6), new Float32Array(6), 2, 3, 3),
      /db has 2 elements, the product needs outDim = 3/,
    );
    assert.throws(() => linearProducts('gpu' as 'ts'), /kernels: expected 'wasm' or 'ts', got "gpu"/);
  });
});

// ---------------------------------------------------------------------------------------------
// Training runs

const setup = tinyTraining('parscale-train-wasm-');
const { work } = setup;
const tiny = (overrides: Partial<TrainOptions>): TrainOptions => setup.options({ P: 2, prefixTokens: 2, batch: 3, steps: 5, evalEvery: 2, ...overrides });

// Loss tolerance of a short run. One step's products differ by ≈ 1e-7 relative (above), so the
// first loss agrees to ≈ 1e-7 of its ≈ 5.7; the updates then differ by about as much, relative,
// and over 5 steps these runs were seen to drift apart by at most 1e-7 (P = 2). 1e-5 leaves a
// factor 100 while any real difference in the math (a wrong product) moves a loss by 1e-2 or more.
const LOSS_TOLERANCE = 1e-5;

function assertLossesClose(a: StepLog[], b: StepLog[], what: string): void {
  assert.equal(a.length, b.length);
  a.forEach((l, i) => {
    assert.equal(l.step, b[i].step);
    assert.ok(Math.abs(l.loss - b[i].loss) <= LOSS_TOLERANCE, `${what}, step ${l.step}: loss ${l.loss} vs ${b[i].loss}`);
    if (l.val_loss !== undefined || b[i].val_loss !== undefined) {
      assert.ok(Math.abs(l.val_loss! - b[i].val_loss!) <= LOSS_TOLERANCE, `${what}, step ${l.step}: val ${l.val_loss} vs ${b[i].val_loss}`);
    }
  });
}

describe("training with kernels: 'wasm'", () => {
  it("gives the losses of kernels: 'ts' (P = 1 and P = 2, tied and untied), on 1 and 2 threads", async () => {
    for (const [P, tied] of [[1, true], [2, false]] as const) {
      const ts = await train(tiny({ out: join(work, `ts-${P}`), P, tied, kernels: 'ts' }));
      const wasm = await train(tiny({ out: join(work, `wasm-${P}`), P, tied, kernels: 'wasm' }));
      assertLossesClose(wasm.logs, ts.logs, `P = ${P}`);
      // not the same computation: the f32 sums round differently somewhere
      assert.notDeepEqual(losses(wasm.logs), losses(ts.logs), `P = ${P}: wasm and ts computed the same bits`);
      const twoThreads = await train(tiny({ out: join(work, `wasm-${P}-2`), P, tied, kernels: 'wasm', threads: 2 }));
      assertLossesClose(twoThreads.logs, ts.logs, `P = ${P}, 2 threads`);
    }
  });

  it('a resumed run keeps the kernels it was saved with (runs saved before the option: ts)', async () => {
    const whole = await train(tiny({ out: join(work, 'whole-ts'), kernels: 'ts' }));
    const part = join(work, 'part-ts');
    const first = await train(tiny({ out: part, kernels: 'ts', stopAfter: 2 }));
    // asking for wasm on resume changes nothing: the saved options win
    const rest = await train(tiny({ out: join(work, 'rest-ts'), resume: part, kernels: 'wasm' }));
    assert.deepEqual(losses([...first.logs, ...rest.logs]), losses(whole.logs));

    const stateFile = join(part, 'trainer_state.json');
    const state = JSON.parse(readFileSync(stateFile, 'utf8'));
    assert.equal(state.options.kernels, 'ts');
    delete state.options.kernels;
    writeFileSync(stateFile, JSON.stringify(state));
    const legacy = await train(tiny({ out: join(work, 'rest-legacy'), resume: part, kernels: 'wasm' }));
    assert.deepEqual(losses([...first.logs, ...legacy.logs]), losses(whole.logs));
  });

  it('refuses an unknown kernels option with the reason', async () => {
    await assert.rejects(train(tiny({ out: join(work, 'bad'), kernels: 'gpu' as 'ts' })), /kernels: expected one of wasm, ts, got "gpu"/);
  });
});
