// The thin bridge to the WebAssembly kernels (assembly/kernels.ts, built into kernels.wasm next to
// this file by `npm run build:wasm`). It owns one shared WebAssembly.Memory, a bump allocator over
// it, and wrappers with the oracle's names and argument order (src/reference/kernels.ts) in which
// every array is a byte offset ("pointer") into that memory.
//
// The memory is shared (SharedArrayBuffer) so that worker threads can run their own instance of
// the same module over the same bytes (pool.ts). A shared memory is never detached when it grows:
// typed-array views made earlier stay valid (they just do not see the new pages).
import { readFileSync } from 'node:fs';
import { q8ScratchBytes } from '../reference/q8.ts';

/** A byte offset into the kernels' linear memory. */
export type Ptr = number;

/** How a weight matrix is stored: the kernels widen bf16 and f16 to f32 in registers. */
export type WeightFormat = 'f32' | 'bf16' | 'f16';

/** The `format` argument of quantize_q8. */
export const SOURCE_FORMAT: Record<WeightFormat, number> = { f32: 0, bf16: 1, f16: 2 };

/**
 * A matrix's format in the kernels' memory: a stored width; bf16 in paired order ('bf16p': each
 * block of 8 weights w0..w7 of a row stored as w0 w4 w1 w5 w2 w6 w3 w7, see BF16P in
 * assembly/kernels.ts; the wasm backend keeps bf16 matrices so); or int8 with per-group scales
 * (src/reference/q8.ts).
 */
export type MatrixFormat = WeightFormat | 'bf16p' | 'q8';

/** A weight matrix (outDim, inDim) in the kernels' memory. */
export interface WeightMatrix {
  ptr: Ptr;
  format: MatrixFormat;
  /** q8 only: the bf16 scales (outDim, ceil(inDim / 32)); 0 otherwise */
  scales: Ptr;
}

/** The raw exports of assembly/kernels.ts (see the contract comments there). */
export interface KernelExports {
  matmul_f32(out: Ptr, x: Ptr, w: Ptr, bias: Ptr, rows: number, inDim: number, outDim: number, oStart: number, oEnd: number): void;
  matmul_bf16(out: Ptr, x: Ptr, w: Ptr, bias: Ptr, rows: number, inDim: number, outDim: number, oStart: number, oEnd: number): void;
  matmul_f16(out: Ptr, x: Ptr, w: Ptr, bias: Ptr, rows: number, inDim: number, outDim: number, oStart: number, oEnd: number): void;
  matmul_bf16p(out: Ptr, x: Ptr, w: Ptr, bias: Ptr, rows: number, inDim: number, outDim: number, oStart: number, oEnd: number): void;
  pair_bf16(w: Ptr, inDim: number, rStart: number, rEnd: number): void;
  matmul_q8(out: Ptr, x: Ptr, w: Ptr, scales: Ptr, bias: Ptr, rows: number, inDim: number, outDim: number, oStart: number, oEnd: number, scratch: Ptr): void;
  dequantize_row_q8(out: Ptr, w: Ptr, scales: Ptr, inDim: number, row: number): void;
  quantize_q8(values: Ptr, scales: Ptr, source: Ptr, format: number, rows: number, inDim: number, rStart: number, rEnd: number): void;
  rmsnorm(out: Ptr, x: Ptr, weight: Ptr, eps: number, rows: number, dim: number): void;
  rope(vec: Ptr, offset: number, numHeads: number, headDim: number, position: number, freqs: Ptr): void;
  softmax(x: Ptr, offset: number, n: number): void;
  attention(out: Ptr, q: Ptr, qOffset: number, keys: Ptr, values: Ptr, length: number, capacity: number, numHeads: number, numKvHeads: number, headDim: number, scores: Ptr): void;
  swiglu(out: Ptr, gate: Ptr, up: Ptr, n: number): void;
  aggregate_f32(out: Ptr, weightsOut: Ptr, hidden: Ptr, w0: Ptr, b0: Ptr, w2: Ptr, b2: Ptr, smoothing: number, P: number, H: number, scratch: Ptr): void;
  aggregate_bf16(out: Ptr, weightsOut: Ptr, hidden: Ptr, w0: Ptr, b0: Ptr, w2: Ptr, b2: Ptr, smoothing: number, P: number, H: number, scratch: Ptr): void;
  aggregate_f16(out: Ptr, weightsOut: Ptr, hidden: Ptr, w0: Ptr, b0: Ptr, w2: Ptr, b2: Ptr, smoothing: number, P: number, H: number, scratch: Ptr): void;
  read_bandwidth(ptr: Ptr, bytes: number): number;
  madd_peak(iterations: number): number;
  fma_peak(iterations: number): number;
  heap_base(): Ptr;
}

export const WASM_PAGE_BYTES = 65536;
/** The module declares its memory with at most 65536 pages: 4 GiB, all wasm32 can address. */
export const MAX_PAGES = 65536;

/**
 * The two builds of assembly/kernels.ts: 'simd' (kernels.wasm: WebAssembly SIMD only, runs
 * everywhere, the same bits on every machine) and 'relaxed-simd' (kernels-relaxed.wasm: the matrix
 * products use relaxed SIMD's fused multiply-add, see madd there).
 */
export type KernelBuild = 'simd' | 'relaxed-simd';
export const KERNEL_BUILDS: readonly KernelBuild[] = ['simd', 'relaxed-simd'];

export const kernelsWasmUrl = new URL('./kernels.wasm', import.meta.url);
export const relaxedKernelsWasmUrl = new URL('./kernels-relaxed.wasm', import.meta.url);
const URLS: Record<KernelBuild, URL> = { simd: kernelsWasmUrl, 'relaxed-simd': relaxedKernelsWasmUrl };

/**
 * The smallest module that uses relaxed SIMD: one function returning f32x4.relaxed_madd of its
 * three v128 arguments. Whether the engine validates it is the feature check.
 */
const RELAXED_SIMD_PROBE = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
  0x01, 0x08, 0x01, 0x60, 0x03, 0x7b, 0x7b, 0x7b, 0x01, 0x7b, // type: (v128 v128 v128) -> v128
  0x03, 0x02, 0x01, 0x00, // function 0 has type 0
  0x0a, 0x0d, 0x01, 0x0b, 0x00, 0x20, 0x00, 0x20, 0x01, 0x20, 0x02, 0xfd, 0x85, 0x02, 0x0b, // local.get 0 1 2; f32x4.relaxed_madd
]);

/** Whether this engine runs relaxed SIMD (Deno 2, Node ≥ 22, Node 20 with --experimental-wasm-relaxed-simd). */
export function relaxedSimdSupported(): boolean {
  return WebAssembly.validate(RELAXED_SIMD_PROBE);
}

/**
 * The build the kernels run: PARSCALE_WASM=simd|relaxed-simd if set, else relaxed-simd where the
 * engine supports it and simd elsewhere.
 */
export function kernelBuild(): KernelBuild {
  const forced = process.env.PARSCALE_WASM;
  if (forced !== undefined && forced !== '') {
    if (!(KERNEL_BUILDS as readonly string[]).includes(forced)) throw new Error(`PARSCALE_WASM must be one of ${KERNEL_BUILDS.join(', ')}, got "${forced}"`);
    if (forced === 'relaxed-simd' && !relaxedSimdSupported()) {
      throw new Error('PARSCALE_WASM=relaxed-simd, but this JavaScript engine does not support WebAssembly relaxed SIMD (on Node 20 run node with --experimental-wasm-relaxed-simd)');
    }
    return forced as KernelBuild;
  }
  return relaxedSimdSupported() ? 'relaxed-simd' : 'simd';
}

const compiled = new Map<KernelBuild, WebAssembly.Module>();

/** The compiled module of a build (default: kernelBuild()), compiled once per thread. A Module can be posted to workers as is. */
export function kernelsModule(build: KernelBuild = kernelBuild()): WebAssembly.Module {
  let module = compiled.get(build);
  if (module === undefined) {
    module = new WebAssembly.Module(readFileSync(URLS[build]));
    compiled.set(build, module);
  }
  return module;
}

/** One instance of the kernels over `memory` (each worker thread makes its own). */
export function instantiateKernels(memory: WebAssembly.Memory, module: WebAssembly.Module = kernelsModule()): KernelExports {
  return new WebAssembly.Instance(module, { env: { memory } }).exports as unknown as KernelExports;
}

/** An f32 array in the kernels' memory: `ptr` for the kernels, `array` to read and write from JS. */
export interface F32Buffer {
  readonly ptr: Ptr;
  readonly length: number;
  readonly array: Float32Array;
}

/** A u16 array in the kernels' memory (bf16 or f16 weights, as their raw bits). */
export interface U16Buffer {
  readonly ptr: Ptr;
  readonly length: number;
  readonly array: Uint16Array;
}

export interface WasmKernelsOptions {
  /** Pages (64 KiB) to start with; the allocator grows the memory as needed. */
  initialPages?: number;
  /** The most pages the memory may ever grow to (≤ 65536). */
  maximumPages?: number;
  /** Which build of the kernels (default: kernelBuild()). */
  build?: KernelBuild;
}

/** The kernels on one shared memory, with a bump allocator and the oracle-shaped wrappers. */
export class WasmKernels {
  readonly memory: WebAssembly.Memory;
  readonly module: WebAssembly.Module;
  readonly build: KernelBuild;
  readonly exports: KernelExports;
  /** Where allocation starts: the first 16-byte boundary after the module's static data. */
  readonly heapBase: Ptr;
  private top: Ptr;

  constructor(options: WasmKernelsOptions = {}) {
    const initial = options.initialPages ?? 16;
    const maximum = options.maximumPages ?? MAX_PAGES;
    this.memory = new WebAssembly.Memory({ initial, maximum, shared: true });
    this.build = options.build ?? kernelBuild();
    this.module = kernelsModule(this.build);
    this.exports = instantiateKernels(this.memory, this.module);
    this.heapBase = align(this.exports.heap_base(), 16);
    this.top = this.heapBase;
  }

  // ---- allocation ------------------------------------------------------------------------------

  /** Reserve `bytes` (aligned to `alignment`, default 16 for v128), growing the memory if needed. */
  alloc(bytes: number, alignment = 16): Ptr {
    const ptr = align(this.top, alignment);
    const end = ptr + bytes;
    const have = this.memory.buffer.byteLength;
    if (end > have) {
      const pages = Math.ceil((end - have) / WASM_PAGE_BYTES);
      try {
        this.memory.grow(pages);
      } catch (cause) {
        throw new RangeError(`WebAssembly memory cannot grow to ${end} bytes (${have} in use, at most 4 GiB)`, { cause });
      }
    }
    this.top = end;
    return ptr;
  }

  /** An f32 array of `init` zeros, or a copy of `init`. */
  f32(init: number | ArrayLike<number>): F32Buffer {
    const length = typeof init === 'number' ? init : init.length;
    const ptr = this.alloc(length * 4);
    const array = new Float32Array(this.memory.buffer, ptr, length);
    if (typeof init === 'number') array.fill(0);
    else array.set(init);
    return { ptr, length, array };
  }

  /** A u16 array of `init` zeros, or a copy of `init` (raw bf16/f16 bits). */
  u16(init: number | ArrayLike<number>): U16Buffer {
    const length = typeof init === 'number' ? init : init.length;
    const ptr = this.alloc(length * 2);
    const array = new Uint16Array(this.memory.buffer, ptr, length);
    if (typeof init === 'number') array.fill(0);
    else array.set(init);
    return { ptr, length, array };
  }

  /** An int8 array of `init` zeros, or a copy of `init` (q8 weight values). */
  i8(init: number | ArrayLike<number>): { readonly ptr: Ptr; readonly length: number; readonly array: Int8Array } {
    const length = typeof init === 'number' ? init : init.length;
    const ptr = this.alloc(length);
    const array = new Int8Array(this.memory.buffer, ptr, length);
    if (typeof init === 'number') array.fill(0);
    else array.set(init);
    return { ptr, length, array };
  }

  /** The allocation point, to free everything allocated after it with release(). */
  mark(): Ptr {
    return this.top;
  }

  /** Free every allocation made since mark() returned `mark` (scratch space, tests). */
  release(mark: Ptr): void {
    if (mark < this.heapBase || mark > this.top) throw new RangeError(`release(${mark}): not a mark of this allocator`);
    this.top = mark;
  }

  /** Bytes allocated so far. */
  get bytesAllocated(): number {
    return this.top - this.heapBase;
  }

  // ---- kernels: the oracle's names and argument order, arrays as pointers ---------------------

  /** out[r, o] = Σ_i w[o, i] · x[r, i] (+ bias[o]).  W (outDim, inDim) @ x (rows, inDim) -> out (rows, outDim), for o in [oStart, oEnd). */
  matmul(format: WeightFormat | 'bf16p', out: Ptr, x: Ptr, w: Ptr, bias: Ptr | null, rows: number, inDim: number, outDim: number, oStart = 0, oEnd = outDim): void {
    this.exports[`matmul_${format}`](out, x, w, bias ?? 0, rows, inDim, outDim, oStart, oEnd);
  }

  matmul_f32(out: Ptr, x: Ptr, w: Ptr, bias: Ptr | null, rows: number, inDim: number, outDim: number, oStart = 0, oEnd = outDim): void {
    this.exports.matmul_f32(out, x, w, bias ?? 0, rows, inDim, outDim, oStart, oEnd);
  }

  matmul_bf16(out: Ptr, x: Ptr, w: Ptr, bias: Ptr | null, rows: number, inDim: number, outDim: number, oStart = 0, oEnd = outDim): void {
    this.exports.matmul_bf16(out, x, w, bias ?? 0, rows, inDim, outDim, oStart, oEnd);
  }

  matmul_f16(out: Ptr, x: Ptr, w: Ptr, bias: Ptr | null, rows: number, inDim: number, outDim: number, oStart = 0, oEnd = outDim): void {
    this.exports.matmul_f16(out, x, w, bias ?? 0, rows, inDim, outDim, oStart, oEnd);
  }

  /** matmul_bf16 with W in paired order (see MatrixFormat): the same bits as matmul_bf16 on the natural matrix. */
  matmul_bf16p(out: Ptr, x: Ptr, w: Ptr, bias: Ptr | null, rows: number, inDim: number, outDim: number, oStart = 0, oEnd = outDim): void {
    this.exports.matmul_bf16p(out, x, w, bias ?? 0, rows, inDim, outDim, oStart, oEnd);
  }

  /** Rewrite rows [rStart, rEnd) of the bf16 matrix w (rows, inDim) in place into paired order. */
  pair_bf16(w: Ptr, rows: number, inDim: number, rStart = 0, rEnd = rows): void {
    this.exports.pair_bf16(w, inDim, rStart, rEnd);
  }

  /**
   * matmul with W as int8 values w (outDim, inDim) and bf16 scales (outDim, ceil(inDim / 32)); see
   * src/reference/q8.ts; the activations are quantized to int16 per group of 32 (W8A16). scratch:
   * q8ScratchBytes(inDim) bytes (the quantized activations go there); by default one is allocated for the call
   * and freed after.
   */
  matmul_q8(out: Ptr, x: Ptr, w: Ptr, scales: Ptr, bias: Ptr | null, rows: number, inDim: number, outDim: number, oStart = 0, oEnd = outDim, scratch?: Ptr): void {
    if (scratch !== undefined) {
      this.exports.matmul_q8(out, x, w, scales, bias ?? 0, rows, inDim, outDim, oStart, oEnd, scratch);
      return;
    }
    const mark = this.mark();
    try {
      this.exports.matmul_q8(out, x, w, scales, bias ?? 0, rows, inDim, outDim, oStart, oEnd, this.alloc(q8ScratchBytes(inDim)));
    } finally {
      this.release(mark);
    }
  }

  /** out = m · x (+ bias) for a matrix in any format. */
  linear(m: WeightMatrix, out: Ptr, x: Ptr, bias: Ptr | null, rows: number, inDim: number, outDim: number, oStart = 0, oEnd = outDim): void {
    if (m.format === 'q8') this.matmul_q8(out, x, m.ptr, m.scales, bias, rows, inDim, outDim, oStart, oEnd);
    else this.matmul(m.format, out, x, m.ptr, bias, rows, inDim, outDim, oStart, oEnd);
  }

  /** Row `row` of an int8 matrix (rows, inDim), dequantized into out (inDim) f32. */
  dequantize_row_q8(out: Ptr, w: Ptr, scales: Ptr, inDim: number, row: number): void {
    this.exports.dequantize_row_q8(out, w, scales, inDim, row);
  }

  /** Quantize rows [rStart, rEnd) of source (rows, inDim) in `format` to int8 values + bf16 scales: quantizeRowsQ8 of src/reference/q8.ts. */
  quantize_q8(values: Ptr, scales: Ptr, source: Ptr, format: WeightFormat, rows: number, inDim: number, rStart = 0, rEnd = rows): void {
    this.exports.quantize_q8(values, scales, source, SOURCE_FORMAT[format], rows, inDim, rStart, rEnd);
  }

  /** out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight.  x, out (rows, dim); out may alias x. */
  rmsnorm(out: Ptr, x: Ptr, weight: Ptr, eps: number, rows: number, dim: number): void {
    this.exports.rmsnorm(out, x, weight, eps, rows, dim);
  }

  /** RoPE, rotate_half convention, in place on vec (numHeads, headDim) at element `offset`; freqs (headDim/2) f32. */
  rope(vec: Ptr, offset: number, numHeads: number, headDim: number, position: number, freqs: Ptr): void {
    this.exports.rope(vec, offset, numHeads, headDim, position, freqs);
  }

  /** Numerically safe softmax over x[offset .. offset + n), in place. */
  softmax(x: Ptr, offset: number, n: number): void {
    this.exports.softmax(x, offset, n);
  }

  /** Attention of one query position of one stream; keys, values (numKvHeads, capacity, headDim); scores (length) scratch. */
  attention(out: Ptr, q: Ptr, qOffset: number, keys: Ptr, values: Ptr, length: number, capacity: number, numHeads: number, numKvHeads: number, headDim: number, scores: Ptr): void {
    this.exports.attention(out, q, qOffset, keys, values, length, capacity, numHeads, numKvHeads, headDim, scores);
  }

  /** out[i] = silu(gate[i]) · up[i], for i < n.  out may alias gate. */
  swiglu(out: Ptr, gate: Ptr, up: Ptr, n: number): void {
    this.exports.swiglu(out, gate, up, n);
  }

  /** ParScale aggregation of one position; w0 (H, P·H) and w2 (P, H) in `format`, biases f32; scratch (P·H + H). */
  aggregate(format: WeightFormat, out: Ptr, weightsOut: Ptr, hidden: Ptr, w0: Ptr, b0: Ptr, w2: Ptr, b2: Ptr, smoothing: number, P: number, H: number, scratch: Ptr): void {
    this.exports[`aggregate_${format}`](out, weightsOut, hidden, w0, b0, w2, b2, smoothing, P, H, scratch);
  }
}

function align(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}
