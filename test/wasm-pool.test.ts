// The kernel pool (src/wasm-bridge/pool.ts): matmul split over worker threads on the shared
// memory must give exactly the bits of the single-threaded kernel, job after job.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { WasmKernels, type WeightFormat } from '../src/wasm-bridge/kernels.ts';
import { KernelPool, outputRange } from '../src/wasm-bridge/pool.ts';
import { quantizeQ8 } from '../src/reference/q8.ts';
import { randomArray, rng } from './helpers/random-model.ts';

const bits = (a: Float32Array) => new Uint32Array(a.slice().buffer);

describe('kernel pool', () => {
  const kernels = new WasmKernels();
  let one: KernelPool;
  let two: KernelPool;
  let three: KernelPool;
  before(async () => {
    // with a matmul_q8 scratch for inDim ≤ 200 per thread
    [one, two, three] = await Promise.all([KernelPool.create(kernels, 1, 200), KernelPool.create(kernels, 2, 200), KernelPool.create(kernels, 3, 200)]);
  });
  after(async () => {
    await Promise.all([one.close(), two.close(), three.close()]);
  });

  it('output ranges cover [0, outDim) in order, without overlap', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1, max: 300 }), (parts, outDim) => {
        let next = 0;
        for (let part = 0; part < parts; part++) {
          const [start, end] = outputRange(part, parts, outDim);
          assert.ok(start <= end);
          if (start < end) assert.equal(start, next);
          next = Math.max(next, end);
        }
        assert.equal(next, outDim);
      }),
    );
  });

  it('1, 2 and 3 threads give the same bits as the kernel called directly (f32, bf16, f16)', () => {
    fc.assert(
      fc.property(
        fc.constantFrom<WeightFormat>('f32', 'bf16', 'f16'),
        fc.integer({ min: 1, max: 9 }),
        fc.integer({ min: 1, max: 200 }),
        fc.integer({ min: 1, max: 150 }),
        fc.boolean(),
        fc.integer({ min: 0, max: 2 ** 31 }),
        (format, rows, inDim, outDim, withBias, seed) => {
          const mark = kernels.mark();
          try {
            const random = rng(seed);
            const x = kernels.f32(randomArray(random, rows * inDim, 1)).ptr;
            const w =
              format === 'f32'
                ? kernels.f32(randomArray(random, outDim * inDim, 1)).ptr
                // random bf16/f16 bits with exponents kept away from Inf/NaN
                : kernels.u16(Uint16Array.from({ length: outDim * inDim }, () => (Math.floor(random() * 0x10000) & 0xbfff) | 0x2000)).ptr;
            const bias = withBias ? kernels.f32(randomArray(random, outDim, 1)).ptr : null;
            const direct = kernels.f32(rows * outDim);
            kernels.matmul(format, direct.ptr, x, w, bias, rows, inDim, outDim);
            for (const pool of [one, two, three]) {
              const out = kernels.f32(rows * outDim);
              pool.matmul(format, out.ptr, x, w, bias, rows, inDim, outDim);
              assert.deepEqual(bits(out.array), bits(direct.array), `${pool.threads} threads`);
            }
          } finally {
            kernels.release(mark);
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it('int8 weights: 1, 2 and 3 threads give the same bits as matmul_q8 called directly', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 200 }), fc.integer({ min: 1, max: 150 }), fc.boolean(), fc.integer({ min: 0, max: 2 ** 31 }), (rows, inDim, outDim, withBias, seed) => {
        const mark = kernels.mark();
        try {
          const random = rng(seed);
          const x = kernels.f32(randomArray(random, rows * inDim, 1)).ptr;
          const q = quantizeQ8(randomArray(random, outDim * inDim, 1), outDim, inDim);
          const matrix = { ptr: kernels.i8(q.values).ptr, format: 'q8' as const, scales: kernels.u16(q.scales).ptr };
          const bias = withBias ? kernels.f32(randomArray(random, outDim, 1)).ptr : null;
          const direct = kernels.f32(rows * outDim);
          kernels.linear(matrix, direct.ptr, x, bias, rows, inDim, outDim);
          for (const pool of [one, two, three]) {
            const out = kernels.f32(rows * outDim);
            pool.linear(matrix, out.ptr, x, bias, rows, inDim, outDim);
            assert.deepEqual(bits(out.array), bits(direct.array), `${pool.threads} threads`);
          }
        } finally {
          kernels.release(mark);
        }
      }),
      { numRuns: 150 },
    );
  });

  it('a long run of back-to-back jobs (a decode step is hundreds) never mixes two jobs', () => {
    const random = rng(1);
    const mark = kernels.mark();
    try {
      const [rows, inDim, outDim] = [8, 96, 64];
      const x = kernels.f32(randomArray(random, rows * inDim, 1));
      const w = kernels.f32(randomArray(random, outDim * inDim, 1));
      const expected = kernels.f32(rows * outDim);
      kernels.matmul_f32(expected.ptr, x.ptr, w.ptr, null, rows, inDim, outDim);
      const outs = [kernels.f32(rows * outDim), kernels.f32(rows * outDim)];
      for (let i = 0; i < 2000; i++) {
        // alternate two outputs, poisoned before each job, so a late or overlapping share shows
        const out = outs[i % 2];
        out.array.fill(NaN);
        two.matmul_f32(out.ptr, x.ptr, w.ptr, null, rows, inDim, outDim);
        assert.deepEqual(bits(out.array), bits(expected.array), `job ${i}`);
      }
    } finally {
      kernels.release(mark);
    }
  });

  it('close right after create never hangs (a worker must not miss the exit signal)', async () => {
    for (let i = 0; i < 5; i++) await (await KernelPool.create(kernels, 2)).close();
  });

  it('refuses work after close', async () => {
    const pool = await KernelPool.create(kernels, 2);
    await pool.close();
    assert.throws(() => pool.matmul_f32(0, 0, 0, null, 1, 1, 1), /closed/);
  });
});
