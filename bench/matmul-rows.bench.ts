// Arithmetic efficiency of the matmul kernels by row count: GFLOP/s of matmul_{f32,bf16,f16,q8}
// at the ParScale-1.8B shapes for rows = 1 … 64 (P streams at decode, P × tokens at prefill), one
// thread, next to madd_peak measured in the same run — the peak the fast-path targets are stated
// against (2 flops per multiply-add).
//
//   node --import tsx bench/matmul-rows.bench.ts [--variants old.wasm,other.wasm] [--formats f32,bf16,bf16p,f16,q8]
//        [--rows 1,2,4,8,16,64] [--shapes 1536x1536,1536x8320,8320x1536] [--rounds 5] [--ms 20] [--dram 1024]
//
// bf16p is bf16 in the paired order the wasm backend keeps bf16 matrices in (BF16P in
// assembly/kernels.ts); variants built before it existed skip it. --dram MiB: keep that many MiB of
// copies of each matrix and let consecutive calls walk through all of them, so the weights come
// from DRAM as in a whole model (without it a matrix may sit in the last-level cache: 300 MB on the
// machine of docs/performance.md). GB/s is of weight bytes.
//
// Shapes are "in x out" (W is out × in). --variants: other builds of assembly/kernels.ts timed side
// by side with the current one (src/wasm-bridge/kernels.wasm), e.g. the last commit's:
//   git show HEAD:src/wasm-bridge/kernels.wasm > /tmp/kernels-old.wasm
// Every variant is an instance over the same shared memory and the same buffers.
//
// Made for a machine shared with other work: each timed call computes one slice of the outputs
// (a multiple of 4, about 8 Mflop, walking through the whole matrix, so a matrix larger than the
// caches is read from memory as in a model), the variants take turns for --ms per round, and the
// figure is the 10th percentile of the call times (the first round is warm-up): a short call that
// was not preempted. Outputs of all variants are compared bit for bit: they agree as long as the
// kernels keep each output's order of operations (see matmul in assembly/kernels.ts).
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { q8ScratchBytes } from '../src/reference/q8.ts';
import { instantiateKernels, type KernelExports, WasmKernels } from '../src/wasm-bridge/kernels.ts';
import { randomArray, rng } from '../test/helpers/random-model.ts';

const { values } = parseArgs({
  options: {
    variants: { type: 'string', default: '' },
    formats: { type: 'string', default: 'f32,bf16,q8' },
    rows: { type: 'string', default: '1,2,4,8,16,64' },
    shapes: { type: 'string', default: '1536x1536,1536x8320,8320x1536' },
    rounds: { type: 'string', default: '5' },
    ms: { type: 'string', default: '20' },
    dram: { type: 'string', default: '0' },
  },
});
const formats = values.formats.split(',') as ('f32' | 'bf16' | 'bf16p' | 'f16' | 'q8')[];
const dramBytes = Number(values.dram) * 2 ** 20;
const rowCounts = values.rows.split(',').map(Number);
const shapes = values.shapes.split(',').map((s) => s.split('x').map(Number) as [inDim: number, outDim: number]);
const rounds = Number(values.rounds);
const sampleMs = Number(values.ms);

const kernels = new WasmKernels({ initialPages: 16 });
// Instantiate every variant before allocating anything: an instance writes its static data into
// the shared memory, below its heap_base.
const variants: { name: string; exports: KernelExports }[] = [{ name: 'current', exports: kernels.exports }];
for (const file of values.variants.split(',').filter(Boolean)) {
  const exports = instantiateKernels(kernels.memory, new WebAssembly.Module(readFileSync(file)));
  if (exports.heap_base() > kernels.heapBase) kernels.alloc(exports.heap_base() - kernels.heapBase);
  variants.push({ name: file.replace(/^.*\//, '').replace(/\.wasm$/, ''), exports });
}

/** Times (seconds) of calls run(n) for at least sampleMs, appended to `into` (n: the call's index there). */
function sample(run: (call: number) => void, into: number[]): void {
  const started = performance.now();
  let now = started;
  do {
    const before = now;
    run(into.length);
    now = performance.now();
    into.push((now - before) / 1000);
  } while (now - started < sampleMs);
}

/** The q-quantile of times: a low one is what the kernel does when it is not preempted. */
function quantile(times: number[], q: number): number {
  const sorted = [...times].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}
const Q = 0.1;

// madd_peak: 96 flops per iteration (see assembly/kernels.ts); short calls, so V8's optimised
// code runs (it swaps it in between calls, not inside a long one).
const PEAK_ITERATIONS = 200_000;
let peakFlops = 0;
const peakTimes: number[] = [];
function measurePeak(): void {
  for (const v of variants) sample(() => v.exports.madd_peak(PEAK_ITERATIONS), peakTimes);
  peakFlops = (96 * PEAK_ITERATIONS) / quantile(peakTimes, Q);
}

interface Result {
  shape: string;
  format: string;
  rows: number;
  seconds: number[]; // per variant: the low quantile of the call times, per flop-normalised call (NaN: variant lacks the kernel)
  flopsPerCall: number;
  bytesPerCall: number;
  identical: boolean;
}
const results: Result[] = [];
const random = rng(7);
const maxRows = Math.max(...rowCounts);
/** Flops per timed call: each call computes the next slice of the outputs (about 0.3 ms). */
const FLOPS_PER_CALL = 8e6;

for (const [inDim, outDim] of shapes) {
  const mark = kernels.mark();
  const weights = randomArray(random, outDim * inDim, 1 / Math.sqrt(inDim));
  const x = kernels.f32(randomArray(random, maxRows * inDim, 1));
  const bias = kernels.f32(randomArray(random, outDim, 0.1));
  const outs = variants.map(() => kernels.f32(maxRows * outDim));
  const scratch = kernels.alloc(q8ScratchBytes(inDim), 64);
  for (const format of formats) {
    const formatMark = kernels.mark();
    let w = 0;
    let scales = 0;
    if (format === 'f32') w = kernels.f32(weights).ptr;
    else if (format === 'q8') {
      const source = kernels.f32(weights).ptr;
      w = kernels.alloc(outDim * inDim, 16);
      scales = kernels.alloc(outDim * Math.ceil(inDim / 32) * 2, 16);
      kernels.quantize_q8(w, scales, source, 'f32', outDim, inDim);
    } else {
      const bits = new Uint32Array(weights.buffer);
      const raw = kernels.u16(weights.length);
      // bf16: the top half; "f16": bf16 bits with the top exponent bit cleared (finite, smaller range)
      for (let i = 0; i < weights.length; i++) raw.array[i] = format === 'f16' ? (bits[i] >>> 16) & 0xbfff : bits[i] >>> 16;
      if (format === 'bf16p') kernels.pair_bf16(raw.ptr, outDim, inDim);
      w = raw.ptr;
    }
    // --dram: copies of the matrix (values and scales as one block), laid out one after another
    const matrixBytes = outDim * inDim * (format === 'f32' ? 4 : format === 'q8' ? 1 : 2);
    const scaleBytes = format === 'q8' ? outDim * Math.ceil(inDim / 32) * 2 : 0;
    const copies = Math.max(1, Math.ceil(dramBytes / (matrixBytes + scaleBytes)));
    const copyAt: { w: number; scales: number }[] = [{ w, scales }];
    for (let c = 1; c < copies; c++) {
      const cw = kernels.alloc(matrixBytes, 16);
      new Uint8Array(kernels.memory.buffer, cw, matrixBytes).set(new Uint8Array(kernels.memory.buffer, w, matrixBytes));
      const cs = scaleBytes > 0 ? kernels.alloc(scaleBytes, 16) : 0;
      if (cs !== 0) new Uint8Array(kernels.memory.buffer, cs, scaleBytes).set(new Uint8Array(kernels.memory.buffer, scales, scaleBytes));
      copyAt.push({ w: cw, scales: cs });
    }
    for (const rows of rowCounts) {
      const product = (e: KernelExports, out: number, at: { w: number; scales: number }, oStart: number, oEnd: number) =>
        format === 'q8'
          ? e.matmul_q8(out, x.ptr, at.w, at.scales, bias.ptr, rows, inDim, outDim, oStart, oEnd, scratch)
          : e[`matmul_${format}`](out, x.ptr, at.w, bias.ptr, rows, inDim, outDim, oStart, oEnd);
      const kernelName = format === 'q8' ? 'matmul_q8' : (`matmul_${format}` as const);
      const has = variants.map((v) => typeof v.exports[kernelName] === 'function');
      // Slices of a multiple of 4 outputs (the pool's split), walking through the whole matrix
      // and then on to the next copy.
      const slice = Math.min(outDim, Math.max(4, Math.round(FLOPS_PER_CALL / (2 * rows * inDim) / 4) * 4));
      const slices = Math.floor(outDim / slice);
      const runs = variants.map((v, i) => (call: number) => {
        const oStart = (call % slices) * slice;
        product(v.exports, outs[i].ptr, copyAt[Math.floor(call / slices) % copies], oStart, oStart + slice);
      });
      const times: number[][] = variants.map(() => []);
      for (let round = 0; round < rounds; round++) {
        // alternate the order so neither variant always runs first
        const order = variants.map((_, i) => i);
        if (round % 2 === 1) order.reverse();
        for (const i of order) if (has[i]) sample(runs[i], times[i]);
      }
      const compared = outs.filter((_, i) => has[i]);
      for (let i = 0; i < variants.length; i++) if (has[i]) product(variants[i].exports, outs[i].ptr, copyAt[0], 0, outDim);
      const reference = new Uint32Array(kernels.memory.buffer, compared[0].ptr, rows * outDim);
      const identical = compared.every((o) => new Uint32Array(kernels.memory.buffer, o.ptr, rows * outDim).every((bits, i) => bits === reference[i]));
      const seconds = times.map((t, i) => (has[i] ? quantile(t.slice(Math.floor(t.length / rounds)), Q) : NaN)); // the first round warms up
      const flopsPerCall = 2 * rows * inDim * slice;
      const bytesPerCall = (matrixBytes + scaleBytes) * (slice / outDim);
      results.push({ shape: `${inDim}→${outDim}`, format, rows, seconds, flopsPerCall, bytesPerCall, identical });
      measurePeak();
      console.error(`  ${inDim}→${outDim} ${format} rows ${rows}: ${seconds.map((t, i) => `${variants[i].name} ${(flopsPerCall / t / 1e9).toFixed(2)} GFLOP/s ${(bytesPerCall / t / 1e9).toFixed(2)} GB/s`).join(', ')}`);
    }
    kernels.release(formatMark);
  }
  kernels.release(mark);
}

console.log(`\nmatmul by rows — ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.cpus().length} cores, Node ${process.version}, 1 thread`);
console.log(`madd_peak (10th percentile of call times): ${(peakFlops / 1e9).toFixed(2)} GFLOP/s; load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
if (dramBytes > 0) {
  const read = kernels.alloc(dramBytes, 64);
  const readTimes: number[] = [];
  sample(() => kernels.exports.read_bandwidth(read, dramBytes), readTimes);
  sample(() => kernels.exports.read_bandwidth(read, dramBytes), readTimes);
  console.log(`weights from DRAM: ${values.dram} MiB of copies per matrix; read_bandwidth over ${values.dram} MiB (best call): ${(dramBytes / Math.min(...readTimes) / 1e9).toFixed(2)} GB/s`);
}
console.table(
  results.map((r) => {
    const row: Record<string, string | number> = { shape: r.shape, format: r.format, rows: r.rows };
    variants.forEach((v, i) => {
      const gflops = r.flopsPerCall / r.seconds[i] / 1e9;
      row[`${v.name} GFLOP/s`] = Number(gflops.toFixed(2));
      row[`${v.name} GB/s`] = Number((r.bytesPerCall / r.seconds[i] / 1e9).toFixed(2));
      row[`${v.name} % peak`] = Number(((100 * gflops * 1e9) / peakFlops).toFixed(1));
      if (i > 0) row[`current ÷ ${v.name}`] = Number((r.seconds[i] / r.seconds[0]).toFixed(3));
    });
    if (variants.length > 1) row['bit-identical'] = r.identical ? 'yes' : 'NO';
    return row;
  }),
);
