// Training's three matrix products (linearForward, linearBackwardInput, linearBackwardWeight of
// kernels.ts) on the WebAssembly SIMD kernel matmul_f32 of assembly/kernels.ts. A sibling of the
// TypeScript kernels, not a replacement: those stay the readable oracle, the float64 path of the
// gradient checks, and the `--kernels ts` choice; test/training-wasm.test.ts ties the two together.
//
// How. Every thread (the main thread and each gradient worker of parallel.ts) lazily creates its
// own WasmKernels instance — this module's state is per thread because every worker loads its own
// copy of the module. A product copies its operands into the instance's memory (bump-allocated
// scratch above a mark, released afterwards; the memory grows to the largest product seen and
// stays there), runs matmul_f32, and copies the result out. Copies are O(operands), the product
// O(rows × weights). The backward products become matmul_f32 calls the same way the TypeScript
// ones do: by transposing one operand (written straight into the wasm memory).
//
// Numbers. matmul_f32 sums in f32 (four lanes, then the lane sum, then the tail), the TypeScript
// kernel in float64, so results differ by f32 summation rounding (≈ inDim · 2^-24 · Σ|w·x| at
// worst). Arrays that are not all Float32Array (the float64 gradient checks) take the TypeScript
// path unchanged.
import { type Ptr, WasmKernels } from '../wasm-bridge/kernels.ts';
import { type Floats, linearBackwardInput, linearBackwardWeight, linearForward, transpose } from './kernels.ts';

/** Which kernels run training's matrix products. */
export type KernelChoice = 'wasm' | 'ts';
export const KERNEL_CHOICES: readonly KernelChoice[] = ['wasm', 'ts'];

/** The three products with the signatures of kernels.ts. */
export interface LinearProducts {
  linearForward: typeof linearForward;
  linearBackwardInput: typeof linearBackwardInput;
  linearBackwardWeight: typeof linearBackwardWeight;
}

export const tsProducts: LinearProducts = { linearForward, linearBackwardInput, linearBackwardWeight };
export const wasmProducts: LinearProducts = {
  linearForward: wasmLinearForward,
  linearBackwardInput: wasmLinearBackwardInput,
  linearBackwardWeight: wasmLinearBackwardWeight,
};

/** The products for a choice; undefined means 'ts' (the oracle) for direct callers of model.ts. */
export function linearProducts(choice: KernelChoice | undefined): LinearProducts {
  if (choice === undefined || choice === 'ts') return tsProducts;
  if (choice === 'wasm') return wasmProducts;
  throw new Error(`kernels: expected 'wasm' or 'ts', got ${JSON.stringify(choice)}`);
}

let instance: WasmKernels | undefined;

/** This thread's kernels (created on first use). */
function kernels(): WasmKernels {
  instance ??= new WasmKernels();
  return instance;
}

/** Size of this thread's wasm memory in bytes: it grows to fit the largest product so far (0 before the first). */
export function wasmScratchBytes(): number {
  return instance === undefined ? 0 : instance.memory.buffer.byteLength;
}

function allF32(...arrays: (Floats | null)[]): boolean {
  return arrays.every((a) => a === null || a instanceof Float32Array);
}

function need(name: string, array: Floats, length: number, shape: string): void {
  if (array.length < length) {
    throw new RangeError(`${name} has ${array.length} elements, the product needs ${shape} = ${length}`);
  }
}

/** Run `body` with scratch allocated from this thread's kernels, then free the scratch. */
function withScratch<T>(body: (k: WasmKernels, alloc: (floats: number) => Ptr) => T): T {
  const k = kernels();
  const mark = k.mark();
  try {
    return body(k, (floats) => k.alloc(floats * 4));
  } finally {
    k.release(mark);
  }
}

/** The kernels' memory as f32 (a fresh view: the memory may just have grown). */
function heapOf(k: WasmKernels): Float32Array {
  return new Float32Array(k.memory.buffer);
}

/** out[r, o] = Σ_i w[o, i] · x[r, i] (+ bias[o]).  W (outDim, inDim) @ x (rows, inDim) -> out (rows, outDim) */
export function wasmLinearForward(
  out: Floats,
  x: Floats,
  w: Floats,
  bias: Floats | null,
  rows: number,
  inDim: number,
  outDim: number,
): void {
  if (!allF32(out, x, w, bias)) return linearForward(out, x, w, bias, rows, inDim, outDim);
  need('out', out, rows * outDim, `rows × outDim = ${rows} × ${outDim}`);
  need('x', x, rows * inDim, `rows × inDim = ${rows} × ${inDim}`);
  need('w', w, outDim * inDim, `outDim × inDim = ${outDim} × ${inDim}`);
  if (bias !== null) need('bias', bias, outDim, 'outDim');
  withScratch((k, alloc) => {
    const xPtr = alloc(rows * inDim);
    const wPtr = alloc(outDim * inDim);
    const bPtr = bias === null ? 0 : alloc(outDim);
    const outPtr = alloc(rows * outDim);
    const heap = heapOf(k);
    heap.set(x.subarray(0, rows * inDim), xPtr >> 2);
    heap.set(w.subarray(0, outDim * inDim), wPtr >> 2);
    if (bias !== null) heap.set(bias.subarray(0, outDim), bPtr >> 2);
    k.exports.matmul_f32(outPtr, xPtr, wPtr, bPtr, rows, inDim, outDim, 0, outDim);
    out.set(heap.subarray(outPtr >> 2, (outPtr >> 2) + rows * outDim));
  });
}

/**
 * dx[r, i] += Σ_o dy[r, o] · w[o, i].  dy (rows, outDim), W (outDim, inDim) -> dx (rows, inDim)
 * As in kernels.ts: Wᵀ (inDim, outDim) is the weight of a forward product of dy.
 */
export function wasmLinearBackwardInput(
  dx: Floats,
  dy: Floats,
  w: Floats,
  rows: number,
  inDim: number,
  outDim: number,
): void {
  if (!allF32(dx, dy, w)) return linearBackwardInput(dx, dy, w, rows, inDim, outDim);
  need('dx', dx, rows * inDim, `rows × inDim = ${rows} × ${inDim}`);
  need('dy', dy, rows * outDim, `rows × outDim = ${rows} × ${outDim}`);
  need('w', w, outDim * inDim, `outDim × inDim = ${outDim} × ${inDim}`);
  withScratch((k, alloc) => {
    const dyPtr = alloc(rows * outDim);
    const wTPtr = alloc(inDim * outDim);
    const outPtr = alloc(rows * inDim);
    const heap = heapOf(k);
    heap.set(dy.subarray(0, rows * outDim), dyPtr >> 2);
    transpose(heap.subarray(wTPtr >> 2, (wTPtr >> 2) + inDim * outDim), w, outDim, inDim);
    k.exports.matmul_f32(outPtr, dyPtr, wTPtr, 0, rows, outDim, inDim, 0, inDim);
    addInto(dx, heap, outPtr >> 2, rows * inDim);
  });
}

/**
 * dw[o, i] += Σ_r dy[r, o] · x[r, i];  db[o] += Σ_r dy[r, o].
 * dy (rows, outDim), x (rows, inDim) -> dw (outDim, inDim), db (outDim) (db may be null)
 * As in kernels.ts: dyᵀ (outDim, rows) against xᵀ (inDim, rows). db is summed in float64 in row
 * order, exactly like the TypeScript kernel.
 */
export function wasmLinearBackwardWeight(
  dw: Floats,
  db: Floats | null,
  dy: Floats,
  x: Floats,
  rows: number,
  inDim: number,
  outDim: number,
): void {
  if (!allF32(dw, db, dy, x)) return linearBackwardWeight(dw, db, dy, x, rows, inDim, outDim);
  need('dw', dw, outDim * inDim, `outDim × inDim = ${outDim} × ${inDim}`);
  need('dy', dy, rows * outDim, `rows × outDim = ${rows} × ${outDim}`);
  need('x', x, rows * inDim, `rows × inDim = ${rows} × ${inDim}`);
  if (db !== null) need('db', db, outDim, 'outDim');
  withScratch((k, alloc) => {
    const dyTPtr = alloc(outDim * rows);
    const xTPtr = alloc(inDim * rows);
    const outPtr = alloc(outDim * inDim);
    const heap = heapOf(k);
    transpose(heap.subarray(dyTPtr >> 2, (dyTPtr >> 2) + outDim * rows), dy, rows, outDim);
    transpose(heap.subarray(xTPtr >> 2, (xTPtr >> 2) + inDim * rows), x, rows, inDim);
    k.exports.matmul_f32(outPtr, dyTPtr, xTPtr, 0, outDim, rows, inDim, 0, inDim);
    addInto(dw, heap, outPtr >> 2, outDim * inDim);
    if (db !== null) {
      const dyT = dyTPtr >> 2;
      for (let o = 0; o < outDim; o++) {
        let sum = 0;
        for (let r = 0; r < rows; r++) sum += heap[dyT + o * rows + r];
        db[o] += sum;
      }
    }
  });
}

/** into[j] += heap[from + j] for j < n */
function addInto(into: Floats, heap: Float32Array, from: number, n: number): void {
  for (let j = 0; j < n; j++) into[j] += heap[from + j];
}
