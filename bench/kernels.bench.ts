// Kernel benchmarks: matmul at decode shapes, the TypeScript oracle against the WebAssembly
// kernels, next to the machine's "roofline" (plain read bandwidth and mul+add peak measured with
// the same WebAssembly). Run: npm run bench:kernels
//
// A decode step reads every weight once, so the figure that matters is GB/s of weight bytes.
// "hot" calls the kernel on the same matrix every time (it sits in the last-level cache when it
// fits); "streamed" rotates over enough copies of it (≥ 512 MB) that every call reads its weights
// from DRAM, as a real model (gigabytes of weights) does. rows = P streams: rows 8 costs the same
// memory traffic as rows 1 and 8× the arithmetic — the reason ParScale is cheap at batch size 1.
import os from 'node:os';
import { Bench } from 'tinybench';
import { matmul } from '../src/reference/kernels.ts';
import { WasmKernels, type WeightFormat } from '../src/wasm-bridge/kernels.ts';
import { KernelPool } from '../src/wasm-bridge/pool.ts';
import { randomArray, rng } from '../test/helpers/random-model.ts';

const MB = 1024 * 1024;
const STREAM_BYTES = 512 * MB;
const shapes: [outDim: number, inDim: number][] = [
  [1536, 1536], // ParScale-1.8B q/o projections (H = 2048 for 3B; 1536 is Qwen2-1.5B's H)
  [8320, 1536], // an MLP gate/up projection
];
const rowCounts = [1, 8];

interface Row {
  name: string;
  medianMs: number;
  gflops?: number;
  gbps?: number;
}
const results: Row[] = [];

/** Median latency (ms) of fn over a short tinybench run. */
async function median(name: string, fn: () => void, timeMs = 400): Promise<number> {
  const bench = new Bench({ time: timeMs, warmupTime: 100, iterations: 5, warmupIterations: 2 });
  bench.add(name, fn);
  await bench.run();
  const result = bench.tasks[0].result;
  if (result.state !== 'completed') throw new Error(`${name}: ${result.state}`);
  return result.latency.p50;
}

async function record(name: string, fn: () => void, flops?: number, bytes?: number, timeMs?: number) {
  const medianMs = await median(name, fn, timeMs);
  const row: Row = { name, medianMs };
  if (flops !== undefined) row.gflops = flops / medianMs / 1e6;
  if (bytes !== undefined) row.gbps = bytes / medianMs / 1e6;
  results.push(row);
  console.error(`  ${name}: ${medianMs.toFixed(3)} ms`);
}

const kernels = new WasmKernels();
const pool = await KernelPool.create(kernels, 2);
const random = rng(42);

// ---- roofline references --------------------------------------------------------------------
const stream = kernels.alloc(STREAM_BYTES, 64);
new Uint8Array(kernels.memory.buffer, stream, STREAM_BYTES).fill(1);
for (const bytes of [1 * MB, 32 * MB, STREAM_BYTES]) {
  await record(`read_bandwidth ${bytes / MB} MB`, () => kernels.exports.read_bandwidth(stream, bytes), undefined, bytes);
}
const peakIterations = 1_000_000;
await record('madd_peak (f32x4 mul+add, 1 thread)', () => kernels.exports.madd_peak(peakIterations), 96 * peakIterations);

// ---- matmul -----------------------------------------------------------------------------------
const bf16Bits = (v: number) => new Uint32Array(Float32Array.of(v).buffer)[0] >>> 16;

for (const [outDim, inDim] of shapes) {
  const weights = randomArray(random, outDim * inDim, 1 / Math.sqrt(inDim));
  const mark = kernels.mark();
  const x = kernels.f32(randomArray(random, 8 * inDim, 1));
  const out = kernels.f32(8 * outDim);
  const xArray = x.array.slice();
  const outArray = new Float32Array(8 * outDim);

  for (const format of ['f32', 'bf16', 'f16'] as WeightFormat[]) {
    const bytesPerWeight = format === 'f32' ? 4 : 2;
    const matrixBytes = outDim * inDim * bytesPerWeight;
    const copies = Math.floor(STREAM_BYTES / matrixBytes);
    // Copy 0 holds the weights in this format; the others are byte copies of it.
    if (format === 'f32') new Float32Array(kernels.memory.buffer, stream, weights.length).set(weights);
    else {
      const raw = new Uint16Array(kernels.memory.buffer, stream, weights.length);
      // f16 bits of the same values would need an encoder; bf16 bits with the top exponent bit
      // cleared are f16 numbers of a similar (smaller) range — fine for timing.
      for (let i = 0; i < weights.length; i++) raw[i] = format === 'bf16' ? bf16Bits(weights[i]) : bf16Bits(weights[i]) & 0xbfff;
    }
    const bytes = new Uint8Array(kernels.memory.buffer, stream, copies * matrixBytes);
    for (let c = 1; c < copies; c++) bytes.copyWithin(c * matrixBytes, 0, matrixBytes);

    for (const rows of rowCounts) {
      const flops = 2 * rows * inDim * outDim;
      const label = `${outDim}×${inDim} rows ${rows} ${format}`;
      if (format === 'f32') {
        await record(`${label} TS oracle hot`, () => matmul(outArray, xArray, weights, null, rows, inDim, outDim), flops, outDim * inDim * 4, 1500);
      }
      if (format !== 'f16') await record(`${label} wasm hot`, () => kernels.matmul(format, out.ptr, x.ptr, stream, null, rows, inDim, outDim), flops, matrixBytes);
      let next = 0;
      const streamed = () => stream + (next = (next + 1) % copies) * matrixBytes;
      await record(`${label} wasm streamed`, () => kernels.matmul(format, out.ptr, x.ptr, streamed(), null, rows, inDim, outDim), flops, matrixBytes);
      if (format !== 'f16') await record(`${label} wasm streamed 2 threads`, () => pool.matmul(format, out.ptr, x.ptr, streamed(), null, rows, inDim, outDim), flops, matrixBytes);
    }
  }
  kernels.release(mark);
}
await pool.close();

const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
console.log(`\nKernel benchmarks — ${cpu}, ${os.cpus().length} cores, Node ${process.version}; medians`);
console.table(
  results.map((r) => ({
    task: r.name,
    'median ms': Number(r.medianMs.toFixed(3)),
    'GFLOP/s': r.gflops === undefined ? '' : Number(r.gflops.toFixed(2)),
    'GB/s': r.gbps === undefined ? '' : Number(r.gbps.toFixed(2)),
  })),
);
