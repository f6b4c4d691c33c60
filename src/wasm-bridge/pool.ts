// Threads for the kernels: the calling thread plus N − 1 worker threads, each running its own
// instance of the kernels module over the SAME shared memory (so no weight or activation is ever
// copied). A matmul is split by output rows: thread i computes out[:, o] for o in its range. Each
// output is computed by the same operations whatever the range (see matmul in
// assembly/kernels.ts), so any number of threads gives the same bits as one.
//
// No message is posted per operation. The caller writes the job into a control block in the
// shared memory, bumps a generation counter and wakes the workers (Atomics.notify); each worker
// runs its share, decrements a pending counter, and the last one wakes the caller. Both sides spin
// briefly before sleeping in Atomics.wait, because a decode step runs hundreds of matmuls of a
// fraction of a millisecond each and a futex round trip per matmul would show.
import { Worker } from 'node:worker_threads';
import { q8ScratchBytes } from '../reference/q8.ts';
import { type KernelExports, type Ptr, SOURCE_FORMAT, type WasmKernels, type WeightFormat, type WeightMatrix } from './kernels.ts';

// Control block layout (Int32Array slots).
const GENERATION = 0; // bumped by the caller for every job; workers wait on it
const PENDING = 1; // workers that have not finished the current job
const FAILED = 2; // set to 1 by a worker whose share threw
const OP = 3;
const ARGS = 4; // the op's i32 arguments follow
const CONTROL_INTS = 16;

const OP_EXIT = 0;
const OP_MATMUL: Record<WeightFormat, number> = { f32: 1, bf16: 2, f16: 3 };
const OP_MATMUL_Q8 = 4; // one more argument: the scales
const OP_QUANTIZE_Q8 = 5; // split by source rows instead of output rows
const OP_READ = 6; // the read-loop roofline: each thread reads its share of a byte range
const OP_MATMUL_BF16P = 7; // bf16 in paired order
const OP_PEAK = 8; // the multiply-add roofline: every thread runs madd_peak (0) or fma_peak (1)
const OP_ATTENTION = 9; // a table of attention rows, dealt out to the threads in turn
/** Numbers per row of an attention job table: out, qOffset, keys, values, length. */
export const ATTENTION_JOB_INTS = 5;

/** Busy-wait this many polls (a few microseconds) before sleeping in Atomics.wait. */
const SPIN_POLLS = 20_000;

/** What each worker is started with (structured-cloned: the Module and shared Memory are shared, not copied). */
export interface WorkerData {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  control: Ptr;
  part: number;
  parts: number;
}

/** The output rows [start, end) of thread `part` of `parts`: contiguous, in multiples of 4 (the kernel's tile). */
export function outputRange(part: number, parts: number, outDim: number): [number, number] {
  const chunk = Math.ceil(outDim / parts / 4) * 4;
  return [Math.min(outDim, part * chunk), Math.min(outDim, (part + 1) * chunk)];
}

/** Run thread `part`'s share of the job described in the control block. */
function runShare(kernels: KernelExports, control: Int32Array, part: number, parts: number): void {
  const op = control[OP];
  if (op === OP_READ) {
    // the range is passed in 64-byte blocks so that 4 GiB fits an i32
    const [ptr, blocks] = control.subarray(ARGS, ARGS + 2);
    const [bStart, bEnd] = outputRange(part, parts, blocks);
    if (bStart < bEnd) kernels.read_bandwidth((ptr >>> 0) + bStart * 64, (bEnd - bStart) * 64);
    return;
  }
  if (op === OP_ATTENTION) {
    const [table, count, q, capacity, numHeads, numKvHeads, headDim, scores, scoresStride] = control.subarray(ARGS, ARGS + 9);
    const jobs = new Int32Array(control.buffer, table >>> 0, count * ATTENTION_JOB_INTS);
    const myScores = (scores >>> 0) + part * scoresStride;
    for (let j = part; j < count; j += parts) {
      const at = j * ATTENTION_JOB_INTS;
      kernels.attention(jobs[at], q, jobs[at + 1], jobs[at + 2], jobs[at + 3], jobs[at + 4], capacity, numHeads, numKvHeads, headDim, myScores);
    }
    return;
  }
  if (op === OP_PEAK) {
    const [kind, iterations] = control.subarray(ARGS, ARGS + 2);
    if (kind === 0) kernels.madd_peak(iterations);
    else kernels.fma_peak(iterations);
    return;
  }
  if (op === OP_QUANTIZE_Q8) {
    const [values, scales, source, format, rows, inDim] = control.subarray(ARGS, ARGS + 6);
    const [rStart, rEnd] = outputRange(part, parts, rows);
    if (rStart < rEnd) kernels.quantize_q8(values, scales, source, format, rows, inDim, rStart, rEnd);
    return;
  }
  const [out, x, w, bias, rows, inDim, outDim, scales, scratchBase, scratchBytes] = control.subarray(ARGS, ARGS + 10);
  const [oStart, oEnd] = outputRange(part, parts, outDim);
  if (oStart >= oEnd) return;
  // each thread's own scratch for matmul_q8 (q8ScratchBytes(inDim): its int16 activations; matmul_q8 checked the size)
  const scratch = (scratchBase >>> 0) + part * scratchBytes;
  if (op === OP_MATMUL.f32) kernels.matmul_f32(out, x, w, bias, rows, inDim, outDim, oStart, oEnd);
  else if (op === OP_MATMUL.bf16) kernels.matmul_bf16(out, x, w, bias, rows, inDim, outDim, oStart, oEnd);
  else if (op === OP_MATMUL.f16) kernels.matmul_f16(out, x, w, bias, rows, inDim, outDim, oStart, oEnd);
  else if (op === OP_MATMUL_BF16P) kernels.matmul_bf16p(out, x, w, bias, rows, inDim, outDim, oStart, oEnd);
  else if (op === OP_MATMUL_Q8) kernels.matmul_q8(out, x, w, scales, bias, rows, inDim, outDim, oStart, oEnd, scratch);
  else throw new Error(`kernel pool: unknown op ${op}`);
}

/** Wait until control[index] is no longer `value`: spin first, then sleep. */
function waitWhile(control: Int32Array, index: number, value: number): void {
  for (let i = 0; i < SPIN_POLLS; i++) if (Atomics.load(control, index) !== value) return;
  while (Atomics.load(control, index) === value) Atomics.wait(control, index, value);
}

/** The worker side (worker.ts): serve jobs until the exit op. */
export function serveJobs(kernels: KernelExports, data: WorkerData): void {
  const control = new Int32Array(data.memory.buffer, data.control, CONTROL_INTS);
  // Generation 0, not whatever the counter holds now: the block starts zeroed and the caller may
  // already have bumped it (a job, or close() right after create()) by the time we get here.
  let seen = 0;
  for (;;) {
    waitWhile(control, GENERATION, seen);
    seen = Atomics.load(control, GENERATION);
    if (control[OP] === OP_EXIT) return;
    try {
      runShare(kernels, control, data.part, data.parts);
    } catch (error) {
      Atomics.store(control, FAILED, 1);
      console.error(`kernel pool worker ${data.part}:`, error);
    }
    if (Atomics.sub(control, PENDING, 1) === 1) Atomics.notify(control, PENDING);
  }
}

// Workers are TypeScript too. Node's Worker will not load a .ts entry even under tsx, so the entry
// is a one-line ES module (a data: URL) that registers tsx's loader and imports worker.ts.
const workerEntry = new URL(
  'data:text/javascript,' +
    encodeURIComponent(
      `import { register } from ${JSON.stringify(import.meta.resolve('tsx/esm/api'))}; register();` +
        `await import(${JSON.stringify(new URL('./worker.ts', import.meta.url).href)});`,
    ),
);

/** The kernels on `threads` threads: this one plus threads − 1 workers. */
export class KernelPool {
  private readonly control: Int32Array;
  private closed = false;

  private constructor(
    private readonly kernels: WasmKernels,
    private readonly workers: Worker[],
    controlPtr: Ptr,
    /** per-thread scratch for matmul_q8: threads × scratchBytes from scratchBase (0: none) */
    private readonly scratchBase: Ptr,
    private readonly scratchBytes: number,
  ) {
    this.control = new Int32Array(kernels.memory.buffer, controlPtr, CONTROL_INTS);
  }

  /**
   * Start threads − 1 workers on `kernels`' memory; resolves when every worker is ready.
   * `q8InDim`: the largest inDim of the int8 matrices it will multiply (0: none), for the
   * per-thread scratch matmul_q8 quantizes the activations into (q8ScratchBytes(q8InDim) per thread).
   */
  static async create(kernels: WasmKernels, threads: number, q8InDim = 0): Promise<KernelPool> {
    if (!Number.isInteger(threads) || threads < 1) throw new RangeError(`threads must be an integer ≥ 1, got ${threads}`);
    const controlPtr = kernels.alloc(CONTROL_INTS * 4, 64);
    const scratchBytes = q8InDim > 0 ? q8ScratchBytes(q8InDim) : 0;
    const scratchBase = scratchBytes > 0 ? kernels.alloc(threads * scratchBytes, 64) : 0;
    new Int32Array(kernels.memory.buffer, controlPtr, CONTROL_INTS).fill(0);
    const workers = Array.from({ length: threads - 1 }, (_, i) => {
      const workerData: WorkerData = { module: kernels.module, memory: kernels.memory, control: controlPtr, part: i + 1, parts: threads };
      return new Worker(workerEntry, { workerData });
    });
    try {
      await Promise.all(
        workers.map(
          (worker) =>
            new Promise<void>((resolve, reject) => {
              worker.once('message', () => resolve());
              worker.once('error', reject);
              worker.once('exit', (code) => reject(new Error(`kernel pool worker exited with code ${code} before it was ready`)));
            }),
        ),
      );
    } catch (error) {
      await Promise.all(workers.map((worker) => worker.terminate()));
      throw error;
    }
    // Idle workers sleep in Atomics.wait; they must not keep the process alive.
    for (const worker of workers) worker.unref();
    return new KernelPool(kernels, workers, controlPtr, scratchBase, scratchBytes);
  }

  get threads(): number {
    return this.workers.length + 1;
  }

  /** The whole product out = W x (+ bias), split over the threads by output rows. Same contract as WasmKernels.matmul. */
  matmul(format: WeightFormat | 'bf16p', out: Ptr, x: Ptr, w: Ptr, bias: Ptr | null, rows: number, inDim: number, outDim: number): void {
    this.run(format === 'bf16p' ? OP_MATMUL_BF16P : OP_MATMUL[format], [out, x, w, bias ?? 0, rows, inDim, outDim]);
  }

  matmul_f32(out: Ptr, x: Ptr, w: Ptr, bias: Ptr | null, rows: number, inDim: number, outDim: number): void {
    this.matmul('f32', out, x, w, bias, rows, inDim, outDim);
  }

  matmul_bf16(out: Ptr, x: Ptr, w: Ptr, bias: Ptr | null, rows: number, inDim: number, outDim: number): void {
    this.matmul('bf16', out, x, w, bias, rows, inDim, outDim);
  }

  matmul_f16(out: Ptr, x: Ptr, w: Ptr, bias: Ptr | null, rows: number, inDim: number, outDim: number): void {
    this.matmul('f16', out, x, w, bias, rows, inDim, outDim);
  }

  /** matmul with int8 weights and per-group scales (see WasmKernels.matmul_q8), split over the threads. */
  matmul_q8(out: Ptr, x: Ptr, w: Ptr, scales: Ptr, bias: Ptr | null, rows: number, inDim: number, outDim: number): void {
    if (this.scratchBytes < q8ScratchBytes(inDim)) throw new RangeError(`matmul_q8 with inDim ${inDim} needs ${q8ScratchBytes(inDim)} bytes of scratch per thread; the pool has ${this.scratchBytes}`);
    this.run(OP_MATMUL_Q8, [out, x, w, bias ?? 0, rows, inDim, outDim, scales, this.scratchBase, this.scratchBytes]);
  }

  /** out = m · x (+ bias) for a matrix in any format, split over the threads. */
  linear(m: WeightMatrix, out: Ptr, x: Ptr, bias: Ptr | null, rows: number, inDim: number, outDim: number): void {
    if (m.format === 'q8') this.matmul_q8(out, x, m.ptr, m.scales, bias, rows, inDim, outDim);
    else this.matmul(m.format, out, x, m.ptr, bias, rows, inDim, outDim);
  }

  /** read_bandwidth over [ptr, ptr + bytes) (whole 64-byte blocks), split over the threads: the read-loop roofline of all threads. */
  read(ptr: Ptr, bytes: number): void {
    this.run(OP_READ, [ptr, Math.floor(bytes / 64)]);
  }

  /**
   * The attention kernel for `count` rows described in `table` (ATTENTION_JOB_INTS numbers each:
   * out, qOffset, keys, values, length; the other arguments are shared), the rows dealt out to the
   * threads in turn. Each thread uses its own scores scratch: scores + thread · scoresStride bytes,
   * capacity floats. Each row is computed by the same kernel call whatever thread runs it.
   */
  attention(table: Ptr, count: number, q: Ptr, capacity: number, numHeads: number, numKvHeads: number, headDim: number, scores: Ptr, scoresStride: number): void {
    this.run(OP_ATTENTION, [table, count, q, capacity, numHeads, numKvHeads, headDim, scores, scoresStride]);
  }

  /** madd_peak ('madd') or fma_peak ('fma') with `iterations` on every thread at once: the multiply-add roofline of all threads. */
  peak(kind: 'madd' | 'fma', iterations: number): void {
    this.run(OP_PEAK, [kind === 'madd' ? 0 : 1, iterations]);
  }

  /** quantize_q8 of every row of source (rows, inDim), the rows split over the threads (see WasmKernels.quantize_q8). */
  quantize_q8(values: Ptr, scales: Ptr, source: Ptr, format: WeightFormat, rows: number, inDim: number): void {
    this.run(OP_QUANTIZE_Q8, [values, scales, source, SOURCE_FORMAT[format], rows, inDim]);
  }

  /** Stop the workers. The pool cannot be used afterwards; the memory and kernels stay usable. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const exited = this.workers.map((worker) => {
      worker.ref(); // keep the event loop alive until the exit event arrives
      return new Promise((resolve) => worker.once('exit', resolve));
    });
    this.control[OP] = OP_EXIT;
    Atomics.add(this.control, GENERATION, 1);
    Atomics.notify(this.control, GENERATION);
    await Promise.all(exited);
  }

  private run(op: number, args: number[]): void {
    if (this.closed) throw new Error('kernel pool is closed');
    const control = this.control;
    control[OP] = op;
    control.set(args, ARGS);
    Atomics.store(control, FAILED, 0);
    Atomics.store(control, PENDING, this.workers.length);
    // The atomic bump publishes the job written above to every worker that sees the new value.
    Atomics.add(control, GENERATION, 1);
    if (this.workers.length > 0) Atomics.notify(control, GENERATION);
    try {
      runShare(this.kernels.exports, control, 0, this.threads);
    } finally {
      // Even if our share threw, wait for the workers, so the next job never overlaps this one.
      for (let pending = Atomics.load(control, PENDING); pending !== 0; pending = Atomics.load(control, PENDING)) waitWhile(control, PENDING, pending);
    }
    if (Atomics.load(control, FAILED) !== 0) throw new Error('kernel pool: a worker failed (see its message on stderr)');
  }
}
