// The safetensors format (https://github.com/huggingface/safetensors):
//
//   [8 bytes]  N, the header length, unsigned 64-bit little-endian
//   [N bytes]  JSON: { name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__": {…} }
//              (writers pad it with spaces to a multiple of 8 so the data starts aligned)
//   [rest]     the data section; data_offsets are relative to its start, `end` exclusive
//
// We read the header alone, validate all of it, and read each tensor's bytes on their own, so
// a multi-GB file is never held in memory twice and a bad file fails before any data is read.
// Hand-written because the format is a page long and no npm package reads it lazily from disk.
//
// All tensor data is little-endian, and so are the typed-array views below: this code assumes
// a little-endian host (x86-64, ARM64 — everything Node runs on in practice).
import { closeSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import { resolve } from 'node:path';
import { CheckpointError } from './errors.ts';

export type DType = 'F32' | 'F16' | 'BF16';
export const DTYPE_BYTES: Readonly<Record<DType, number>> = { F32: 4, F16: 2, BF16: 2 };

/** Real safetensors dtypes we do not load; named so the error can say "unsupported" rather than "unknown". */
const OTHER_SAFETENSORS_DTYPES = ['F64', 'I64', 'I32', 'I16', 'I8', 'U64', 'U32', 'U16', 'U8', 'BOOL', 'F8_E4M3', 'F8_E5M2', 'F8_E8M0', 'F6_E2M3', 'F6_E3M2', 'F4', 'C64'];

export interface TensorInfo {
  name: string;
  dtype: DType;
  /** [] for a scalar */
  shape: number[];
  /** the file holding it (absolute path) */
  file: string;
  /** absolute offset of its first byte in the file */
  byteOffset: number;
  byteLength: number;
}

export interface SafetensorsHeader {
  tensors: Map<string, TensorInfo>;
  /** the "__metadata__" entry ({} when absent); string to string by the format's definition */
  metadata: Record<string, string>;
}

/** Headers larger than this are not real checkpoints (the largest real ones are a few MB). */
const MAX_HEADER_BYTES = 100_000_000;

/** What the first bytes of an un-fetched Git LFS file look like: a text pointer, not the weights. */
const LFS_POINTER_START = 'version https://git-lfs';

/** Read and validate a safetensors file's header (never its data); every tensor must be F32, F16 or BF16. */
export function readSafetensorsHeader(file: string): SafetensorsHeader {
  const path = resolve(file);
  const fd = openForReading(path);
  try {
    const fileSize = fstatSync(fd).size;
    const headerLength = readHeaderLength(path, fd, fileSize);
    const header = parseHeaderJson(path, readExactly(path, fd, headerLength, 8));
    const dataStart = 8 + headerLength;
    const dataSize = fileSize - dataStart;

    let metadata: Record<string, string> = {};
    const entries: HeaderEntry[] = [];
    for (const [name, value] of Object.entries(header)) {
      if (name === '__metadata__') metadata = parseMetadata(path, value);
      else entries.push(parseEntry(path, name, value));
    }
    checkNoOverlap(path, entries);
    checkWithinData(path, entries, dataSize, fileSize, headerLength);

    const tensors = new Map<string, TensorInfo>();
    for (const { name, dtype, shape, begin, end } of entries) {
      tensors.set(name, { name, dtype, shape, file: path, byteOffset: dataStart + begin, byteLength: end - begin });
    }
    return { tensors, metadata };
  } finally {
    closeSync(fd);
  }
}

/** Open a regular file for reading, turning the usual failures into CheckpointErrors that name it. */
export function openForReading(file: string): number {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new CheckpointError('FILE_NOT_FOUND', `${file}: file not found`, { file, cause: error });
    throw new CheckpointError('FILE_UNREADABLE', `${file}: cannot open for reading (${code ?? (error as Error).message})`, { file, cause: error });
  }
  // opening a folder succeeds on Linux; only the first read would fail
  if (!fstatSync(fd).isFile()) {
    closeSync(fd);
    throw new CheckpointError('FILE_UNREADABLE', `${file}: not a regular file`, { file });
  }
  return fd;
}

function readHeaderLength(file: string, fd: number, fileSize: number): number {
  const fail = (code: 'SAFETENSORS_TRUNCATED' | 'SAFETENSORS_HEADER', message: string): never => {
    throw new CheckpointError(code, `${file}: ${message}`, { file });
  };
  if (fileSize < 8) fail('SAFETENSORS_TRUNCATED', `the file has ${fileSize} bytes, too short for the 8-byte header length a safetensors file starts with`);
  const start = readExactly(file, fd, Math.min(fileSize, LFS_POINTER_START.length), 0);
  if (Buffer.from(start).toString('latin1') === LFS_POINTER_START) {
    fail('SAFETENSORS_HEADER', 'this is a Git LFS pointer, not the weights: fetch them (git lfs pull, or download the file itself)');
  }
  const length = Buffer.from(start.buffer, start.byteOffset, 8).readBigUInt64LE(0);
  // A huge length is garbage (not a safetensors file); a plausible one past the end is a cut file.
  if (length > BigInt(MAX_HEADER_BYTES)) {
    fail('SAFETENSORS_HEADER', `header length ${length} bytes is implausible (expected at most ${MAX_HEADER_BYTES}): not a safetensors file?`);
  }
  if (length > BigInt(fileSize - 8)) {
    fail('SAFETENSORS_TRUNCATED', `header length ${length} runs past the end of the file (${fileSize} bytes in all): file truncated?`);
  }
  return Number(length);
}

function parseHeaderJson(file: string, bytes: Uint8Array): Record<string, unknown> {
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (error) {
    throw new CheckpointError('SAFETENSORS_HEADER', `${file}: the header is not valid JSON (${(error as Error).message})`, { file, cause: error });
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    const found = Array.isArray(header) ? 'an array' : header === null ? 'null' : `a ${typeof header}`;
    throw new CheckpointError('SAFETENSORS_HEADER', `${file}: the header is not a JSON object (found ${found})`, { file });
  }
  return header as Record<string, unknown>;
}

function parseMetadata(file: string, value: unknown): Record<string, string> {
  const isStringMap =
    typeof value === 'object' && value !== null && !Array.isArray(value) && Object.values(value).every((v) => typeof v === 'string');
  if (!isStringMap) {
    throw new CheckpointError('SAFETENSORS_HEADER', `${file}: "__metadata__" must map strings to strings, found ${JSON.stringify(value)}`, {
      file,
    });
  }
  return value as Record<string, string>;
}

interface HeaderEntry {
  name: string;
  dtype: DType;
  shape: number[];
  /** offsets in the data section, end exclusive */
  begin: number;
  end: number;
}

function parseEntry(file: string, name: string, entry: unknown): HeaderEntry {
  const where = { file, tensor: name };
  const malformed = (message: string): never => {
    throw new CheckpointError('SAFETENSORS_HEADER', `${file}: tensor "${name}": ${message}`, where);
  };
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) malformed(`entry must be an object, found ${JSON.stringify(entry)}`);
  const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;

  if (typeof dtype !== 'string') malformed(`"dtype" must be a string, found ${JSON.stringify(dtype)}`);
  // Object.hasOwn, not `in`: a dtype of "toString" must not find Object.prototype.toString.
  if (!Object.hasOwn(DTYPE_BYTES, dtype as string)) {
    const kind = OTHER_SAFETENSORS_DTYPES.includes(dtype as string) ? 'a safetensors dtype we do not load' : 'not a safetensors dtype';
    throw new CheckpointError('SAFETENSORS_DTYPE', `${file}: tensor "${name}" has dtype ${dtype} (${kind}); expected BF16, F16 or F32`, where);
  }
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    malformed(`"shape" must be a list of non-negative integers, found ${JSON.stringify(shape)}`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
    malformed(`"data_offsets" must be [begin, end] with non-negative integers, found ${JSON.stringify(offsets)}`);
  }

  const [begin, end] = offsets as [number, number];
  const badOffsets = (message: string): never => {
    throw new CheckpointError('SAFETENSORS_OFFSETS', `${file}: tensor "${name}": ${message}`, where);
  };
  if (begin > end) badOffsets(`data_offsets [${begin}, ${end}] end before they begin`);
  const expectedBytes = byteSize(shape as number[], dtype as DType);
  if (!Number.isSafeInteger(expectedBytes)) malformed(`shape ${JSON.stringify(shape)} is too large`);
  if (end - begin !== expectedBytes) {
    badOffsets(
      `data_offsets [${begin}, ${end}] hold ${end - begin} bytes, but shape ${JSON.stringify(shape)} of ${dtype} needs ${expectedBytes}`,
    );
  }
  return { name, dtype: dtype as DType, shape: shape as number[], begin, end };
}

function byteSize(shape: number[], dtype: DType): number {
  return shape.reduce((product, d) => product * d, 1) * DTYPE_BYTES[dtype];
}

function checkNoOverlap(file: string, entries: HeaderEntry[]): void {
  const sorted = entries.filter((e) => e.end > e.begin).sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < sorted.length; i++) {
    const [previous, current] = [sorted[i - 1], sorted[i]];
    if (current.begin < previous.end) {
      throw new CheckpointError(
        'SAFETENSORS_OFFSETS',
        `${file}: tensors "${previous.name}" [${previous.begin}, ${previous.end}] and "${current.name}" [${current.begin}, ${current.end}] overlap in the data section`,
        { file, tensor: current.name },
      );
    }
  }
}

/**
 * Every tensor must lie within the data section. When one does not, tell a cut-short file
 * (the tensors tile [0, maxEnd) without gaps, as every writer lays them out, and the file
 * simply stops early) from offsets that point somewhere odd (a gap before the stray tensor).
 * Bytes after the last tensor are tolerated (the Rust library is stricter): nothing reads them.
 */
function checkWithinData(file: string, entries: HeaderEntry[], dataSize: number, fileSize: number, headerLength: number): void {
  const beyond = entries.filter((e) => e.end > dataSize).sort((a, b) => a.begin - b.begin);
  if (beyond.length === 0) return;
  const maxEnd = entries.reduce((max, e) => Math.max(max, e.end), 0);
  const storedBytes = entries.reduce((sum, e) => sum + (e.end - e.begin), 0);
  const first = beyond[0];
  if (storedBytes === maxEnd) {
    throw new CheckpointError(
      'SAFETENSORS_TRUNCATED',
      `${file}: the file is truncated: its header describes ${maxEnd} bytes of tensor data but only ${dataSize} follow the header ` +
        `(expected a file of ${8 + headerLength + maxEnd} bytes, found ${fileSize}); tensor "${first.name}" [${first.begin}, ${first.end}] is cut off`,
      { file, tensor: first.name },
    );
  }
  throw new CheckpointError(
    'SAFETENSORS_OFFSETS',
    `${file}: tensor "${first.name}": data_offsets [${first.begin}, ${first.end}] run past the end of the data section (${dataSize} bytes)`,
    { file, tensor: first.name },
  );
}

// ---- reading tensor data ----

/** readSync moves at most ~2 GiB per call; stay well below. */
const MAX_READ_BYTES = 1 << 30;

/** Read exactly `length` bytes at `position` into a new array; a short read means the file shrank. */
function readExactly(file: string, fd: number, length: number, position: number): Uint8Array {
  const bytes = new Uint8Array(length);
  fillFromFile(fd, bytes, 0, length, position, () => new CheckpointError('SAFETENSORS_TRUNCATED', `${file}: the file ended early`, { file }));
  return bytes;
}

function fillFromFile(fd: number, target: Uint8Array, targetOffset: number, length: number, position: number, onEof: () => Error): void {
  let done = 0;
  while (done < length) {
    const read = readSync(fd, target, targetOffset + done, Math.min(length - done, MAX_READ_BYTES), position + done);
    if (read === 0) throw onEof();
    done += read;
  }
}

/**
 * Read bytes [start, start + length) of a tensor into target[start …], from an open file.
 * The loader reads large tensors in pieces with this, to report progress and honour aborts.
 */
export function readTensorRange(fd: number, info: TensorInfo, target: Uint8Array, start: number, length: number): void {
  fillFromFile(fd, target, start, length, info.byteOffset + start, () => {
    return new CheckpointError('SAFETENSORS_TRUNCATED', `${info.file}: the file ended while reading tensor "${info.name}"`, {
      file: info.file,
      tensor: info.name,
    });
  });
}

/** Read one tensor's bytes into a new array: one copy, nothing else of the file. */
export function readTensorBytes(info: TensorInfo): Uint8Array {
  const fd = openForReading(info.file);
  try {
    const bytes = new Uint8Array(info.byteLength);
    readTensorRange(fd, info, bytes, 0, info.byteLength);
    return bytes;
  } finally {
    closeSync(fd);
  }
}

// ---- writing ----

export interface TensorToWrite {
  name: string;
  dtype: DType;
  shape: number[];
  /** exactly product(shape) × DTYPE_BYTES[dtype] little-endian bytes */
  data: Uint8Array;
}

/**
 * Write a safetensors file as the Python library does: compact JSON header with "__metadata__"
 * first, padded with spaces to a multiple of 8 bytes; the data in the order given.
 */
export function writeSafetensors(file: string, tensors: TensorToWrite[], metadata: Record<string, string> = { format: 'pt' }): void {
  // no prototype: a tensor named "__proto__" must become a key, not the object's prototype
  const header: Record<string, unknown> = Object.create(null);
  header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    if (t.name === '__metadata__' || Object.hasOwn(header, t.name)) throw new RangeError(`writeSafetensors: duplicate or reserved tensor name "${t.name}"`);
    const bytes = byteSize(t.shape, t.dtype);
    if (t.data.byteLength !== bytes) {
      throw new RangeError(`writeSafetensors: tensor "${t.name}" has ${t.data.byteLength} bytes, shape ${JSON.stringify(t.shape)} of ${t.dtype} needs ${bytes}`);
    }
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(headerBytes.byteLength));

  const fd = openSync(file, 'w');
  try {
    writeFully(fd, length);
    writeFully(fd, headerBytes);
    for (const t of tensors) writeFully(fd, t.data);
  } finally {
    closeSync(fd);
  }
}

function writeFully(fd: number, bytes: Uint8Array): void {
  for (let done = 0; done < bytes.byteLength; ) done += writeSync(fd, bytes, done, Math.min(bytes.byteLength - done, MAX_READ_BYTES));
}

// ---- number formats ----
//
// Every conversion works on the bit patterns (Uint16Array / Uint32Array views), never through
// JavaScript numbers, so NaN payloads and -0 survive and the hot loops stay integer-only.

/** Little-endian 16-bit values as a Uint16Array: a view when aligned, else one copy. */
function uint16View(bytes: Uint8Array): Uint16Array {
  if (bytes.byteLength % 2 !== 0) throw new RangeError(`${bytes.byteLength} bytes is not a whole number of 16-bit values`);
  if (bytes.byteOffset % 2 === 0) return new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
  return new Uint16Array(bytes.slice().buffer);
}

/** Decode stored values to a new Float32Array. Exact for all three dtypes (incl. subnormals, ±inf, NaN). */
export function bytesToFloat32(bytes: Uint8Array, dtype: DType): Float32Array {
  if (dtype === 'F32') {
    if (bytes.byteLength % 4 !== 0) throw new RangeError(`${bytes.byteLength} bytes is not a whole number of 32-bit values`);
    return new Float32Array(bytes.slice().buffer); // slice: one copy, and aligned whatever the source offset
  }
  const halves = uint16View(bytes);
  const out = new Uint32Array(halves.length);
  if (dtype === 'BF16') {
    // bf16 is the high half of a float32: widening is exact
    for (let i = 0; i < halves.length; i++) out[i] = halves[i] << 16;
  } else {
    const table = f16ToF32BitsTable();
    for (let i = 0; i < halves.length; i++) out[i] = table[halves[i]];
  }
  return new Float32Array(out.buffer);
}

/** Encode float32 values in a dtype; bf16 and f16 round to nearest, ties to even. */
export function float32ToBytes(values: Float32Array, dtype: DType): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(values.slice().buffer);
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  if (dtype === 'BF16') {
    for (let i = 0; i < bits.length; i++) out[i] = floatBitsToBf16(bits[i]);
  } else {
    for (let i = 0; i < bits.length; i++) out[i] = floatBitsToF16(bits[i]);
  }
  return new Uint8Array(out.buffer);
}

/** float32 bits → bf16 bits, round to nearest even (overflow goes to ±inf); NaN stays a quiet NaN. */
export function floatBitsToBf16(x: number): number {
  if ((x & 0x7fffffff) >>> 0 > 0x7f800000) return ((x >>> 16) | 0x40) & 0xffff;
  // Adding 0x7fff plus the lowest kept bit carries into the kept bits exactly when the dropped
  // half is above one half, or equal to it with an odd kept part. No overflow past 2^32: the
  // largest non-NaN pattern (0xff800000, -inf) plus 0x8000 stays below it.
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/** float32 bits → IEEE half bits, round to nearest even, with subnormals and overflow to ±inf. */
export function floatBitsToF16(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exponent = (x >>> 23) & 0xff;
  const mantissa = x & 0x7fffff;
  if (exponent === 0xff) return mantissa === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mantissa >>> 13); // ±inf; quiet NaN keeping its top payload bits
  const halfExponent = exponent - 127 + 15;
  if (halfExponent >= 0x1f) return sign | 0x7c00; // ≥ 2^16: beyond the largest half (65504) whatever the rounding
  if (halfExponent <= 0) {
    // A half subnormal: a multiple of 2^-24. Below 2^-25 everything rounds to zero (the
    // shift below would also exceed 31 bits).
    if (halfExponent < -10) return sign;
    const significand = mantissa | 0x800000; // 24 bits with the implicit leading 1
    const shift = 14 - halfExponent; // 14…24
    return sign | roundShiftRight(significand, shift);
  }
  // Normal: keep 10 mantissa bits. A carry out of the mantissa bumps the exponent, which is
  // exactly right, and turns 65520 and above into 0x7c00 (inf).
  return sign | roundShiftRight((halfExponent << 23) | mantissa, 13);
}

/** value >> shift, rounded to nearest, ties to even (1 ≤ shift ≤ 24). */
function roundShiftRight(value: number, shift: number): number {
  const kept = value >>> shift;
  const dropped = value & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  return dropped > half || (dropped === half && (kept & 1) === 1) ? kept + 1 : kept;
}

/** IEEE half bits → float32 bits; exact. */
function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exponent = (h >>> 10) & 0x1f;
  let mantissa = h & 0x3ff;
  if (exponent === 0x1f) return (sign | 0x7f800000 | (mantissa << 13)) >>> 0; // ±inf, NaN with its payload
  if (exponent !== 0) return (sign | ((exponent - 15 + 127) << 23) | (mantissa << 13)) >>> 0;
  if (mantissa === 0) return sign >>> 0; // ±0
  // Subnormal (mantissa × 2^-24): shift the leading 1 into the implicit position.
  let e = -14 + 127;
  while ((mantissa & 0x400) === 0) {
    mantissa <<= 1;
    e--;
  }
  return (sign | (e << 23) | ((mantissa & 0x3ff) << 13)) >>> 0;
}

let f16Table: Uint32Array | undefined;

/** All 65536 half → float32 bit patterns (256 KB), built on first use: decoding is one lookup. */
function f16ToF32BitsTable(): Uint32Array {
  if (f16Table === undefined) {
    f16Table = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16BitsToF32Bits(h);
  }
  return f16Table;
}

const scratchFloat = new Float32Array(1);
const scratchBits = new Uint32Array(scratchFloat.buffer);

/** One IEEE half (given as its bits) as a number. */
export function f16ToFloat(h: number): number {
  scratchBits[0] = f16ToF32BitsTable()[h & 0xffff];
  return scratchFloat[0];
}

/** One number → IEEE half bits (via float32, as PyTorch converts float32 tensors). */
export function floatToF16(value: number): number {
  scratchFloat[0] = value;
  return floatBitsToF16(scratchBits[0]);
}
