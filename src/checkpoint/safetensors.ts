// The safetensors format: an 8-byte little-endian header length N, N bytes of JSON
// ({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}), then the data
// section; offsets are relative to the start of the data section. We read the header alone and
// then each tensor's bytes on their own, so a multi-GB file is never held twice in memory.
// Hand-written because the format is a few lines and no npm package reads it lazily from disk.
import { closeSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import { CheckpointError } from './errors.ts';

export type DType = 'F32' | 'F16' | 'BF16';
export const DTYPE_BYTES: Record<DType, number> = { F32: 4, F16: 2, BF16: 2 };
const KNOWN_UNSUPPORTED = ['F64', 'I64', 'I32', 'I16', 'I8', 'U8', 'U16', 'U32', 'U64', 'BOOL', 'F8_E4M3', 'F8_E5M2'];

export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  /** the file holding it (absolute path) */
  file: string;
  /** absolute offset of its first byte in the file */
  byteOffset: number;
  byteLength: number;
}

/** Headers larger than this are not real checkpoints (the largest real ones are a few MB). */
const MAX_HEADER_BYTES = 100_000_000;

export function readSafetensorsHeader(file: string): { tensors: Map<string, TensorInfo>; metadata: Record<string, string> } {
  const fd = openSync(file, 'r');
  try {
    const fileSize = fstatSync(fd).size;
    const fail = (code: 'SAFETENSORS_TRUNCATED' | 'SAFETENSORS_HEADER', message: string): never => {
      throw new CheckpointError(code, `${file}: ${message}`, { file });
    };
    if (fileSize < 8) fail('SAFETENSORS_TRUNCATED', `file has ${fileSize} bytes, too short for the 8-byte header length`);
    const lengthBytes = Buffer.alloc(8);
    readSync(fd, lengthBytes, 0, 8, 0);
    const headerLength = lengthBytes.readBigUInt64LE(0);
    if (headerLength > BigInt(fileSize - 8)) {
      fail('SAFETENSORS_TRUNCATED', `header length ${headerLength} runs past the end of the file (${fileSize} bytes)`);
    }
    if (headerLength > BigInt(MAX_HEADER_BYTES)) fail('SAFETENSORS_HEADER', `header length ${headerLength} is implausibly large`);
    const n = Number(headerLength);
    const headerBytes = Buffer.alloc(n);
    readSync(fd, headerBytes, 0, n, 8);
    let header: unknown;
    try {
      header = JSON.parse(headerBytes.toString('utf8'));
    } catch (error) {
      fail('SAFETENSORS_HEADER', `header is not valid JSON (${(error as Error).message})`);
    }
    if (typeof header !== 'object' || header === null || Array.isArray(header)) fail('SAFETENSORS_HEADER', 'header is not a JSON object');
    const dataStart = 8 + n;
    const dataSize = fileSize - dataStart;
    const tensors = new Map<string, TensorInfo>();
    let metadata: Record<string, string> = {};
    for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
      if (name === '__metadata__') {
        metadata = (entry ?? {}) as Record<string, string>;
        continue;
      }
      tensors.set(name, parseEntry(file, name, entry, dataStart, dataSize));
    }
    checkNoOverlap(file, [...tensors.values()], dataStart);
    return { tensors, metadata };
  } finally {
    closeSync(fd);
  }
}

function parseEntry(file: string, name: string, entry: unknown, dataStart: number, dataSize: number): TensorInfo {
  const bad = (message: string): never => {
    throw new CheckpointError('SAFETENSORS_HEADER', `${file}: tensor "${name}": ${message}`, { file, tensor: name });
  };
  if (typeof entry !== 'object' || entry === null) bad('entry is not an object');
  const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
  if (typeof dtype !== 'string') bad('missing "dtype"');
  if (!(dtype as string in DTYPE_BYTES)) {
    const known = KNOWN_UNSUPPORTED.includes(dtype as string) ? 'a safetensors dtype we do not load' : 'not a safetensors dtype';
    throw new CheckpointError('SAFETENSORS_DTYPE', `${file}: tensor "${name}" has dtype ${dtype} (${known}); expected BF16, F16 or F32`, {
      file,
      tensor: name,
    });
  }
  if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) bad(`"shape" must be a list of non-negative integers, found ${JSON.stringify(shape)}`);
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isInteger(o) && o >= 0)) {
    bad(`"data_offsets" must be [begin, end], found ${JSON.stringify(offsets)}`);
  }
  const [begin, end] = offsets as number[];
  const offsetError = (message: string): never => {
    throw new CheckpointError('SAFETENSORS_OFFSETS', `${file}: tensor "${name}": ${message}`, { file, tensor: name });
  };
  if (begin > end) offsetError(`data_offsets [${begin}, ${end}] end before they begin`);
  const expectedBytes = (shape as number[]).reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype as DType];
  if (end - begin !== expectedBytes) {
    offsetError(`data_offsets [${begin}, ${end}] hold ${end - begin} bytes, but shape ${JSON.stringify(shape)} of ${dtype} needs ${expectedBytes}`);
  }
  if (end > dataSize) {
    throw new CheckpointError(
      'SAFETENSORS_TRUNCATED',
      `${file}: tensor "${name}" ends at data byte ${end}, but the data section has only ${dataSize} bytes (file truncated?)`,
      { file, tensor: name },
    );
  }
  return { name, dtype: dtype as DType, shape: shape as number[], file, byteOffset: dataStart + begin, byteLength: end - begin };
}

function checkNoOverlap(file: string, tensors: TensorInfo[], dataStart: number): void {
  const sorted = tensors.filter((t) => t.byteLength > 0).sort((a, b) => a.byteOffset - b.byteOffset);
  for (let i = 1; i < sorted.length; i++) {
    const previous = sorted[i - 1];
    if (sorted[i].byteOffset < previous.byteOffset + previous.byteLength) {
      const range = (t: TensorInfo) => `[${t.byteOffset - dataStart}, ${t.byteOffset - dataStart + t.byteLength}]`;
      throw new CheckpointError(
        'SAFETENSORS_OFFSETS',
        `${file}: tensors "${previous.name}" ${range(previous)} and "${sorted[i].name}" ${range(sorted[i])} overlap`,
        { file, tensor: sorted[i].name },
      );
    }
  }
}

/** Read one tensor's bytes into a new buffer (one copy, nothing else of the file). */
export function readTensorBytes(info: TensorInfo, fd?: number): Uint8Array {
  const own = fd === undefined;
  const handle = own ? openSync(info.file, 'r') : fd;
  try {
    const bytes = new Uint8Array(info.byteLength);
    // readSync reads at most 2 GiB per call
    let done = 0;
    while (done < info.byteLength) {
      const chunk = Math.min(info.byteLength - done, 1 << 30);
      const read = readSync(handle, bytes, done, chunk, info.byteOffset + done);
      if (read === 0) {
        throw new CheckpointError('SAFETENSORS_TRUNCATED', `${info.file}: file ended while reading tensor "${info.name}"`, { file: info.file, tensor: info.name });
      }
      done += read;
    }
    return bytes;
  } finally {
    if (own) closeSync(handle);
  }
}

export interface TensorToWrite {
  name: string;
  dtype: DType;
  shape: number[];
  data: Uint8Array;
}

/** Write a safetensors file exactly as the Python library does (header padded to 8 bytes). */
export function writeSafetensors(file: string, tensors: TensorToWrite[], metadata: Record<string, string> = { format: 'pt' }): void {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const t of tensors) {
    const expected = t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype];
    if (t.data.byteLength !== expected) throw new RangeError(`tensor ${t.name}: ${t.data.byteLength} bytes given, shape needs ${expected}`);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + expected] };
    offset += expected;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  const fd = openSync(file, 'w');
  try {
    writeSync(fd, length);
    writeSync(fd, Buffer.from(json, 'utf8'));
    for (const t of tensors) {
      let done = 0;
      while (done < t.data.byteLength) done += writeSync(fd, t.data, done, Math.min(t.data.byteLength - done, 1 << 30));
    }
  } finally {
    closeSync(fd);
  }
}

// ---- number formats ----

/** A Uint16Array over little-endian 16-bit values, copying only when the bytes are unaligned. */
function halves(bytes: Uint8Array): Uint16Array {
  if (bytes.byteOffset % 2 === 0) return new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
  return new Uint16Array(bytes.slice().buffer);
}

export function bytesToFloat32(bytes: Uint8Array, dtype: DType): Float32Array {
  if (dtype === 'F32') {
    if (bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    return new Float32Array(bytes.slice().buffer);
  }
  const src = halves(bytes);
  const out = new Float32Array(src.length);
  if (dtype === 'BF16') {
    // bf16 is the high half of a float32: widening is exact
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
  } else {
    for (let i = 0; i < src.length; i++) out[i] = f16ToFloat(src[i]);
  }
  return out;
}

export function float32ToBytes(values: Float32Array, dtype: DType): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(values.slice().buffer);
  const out = new Uint16Array(values.length);
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  if (dtype === 'BF16') {
    for (let i = 0; i < values.length; i++) out[i] = floatBitsToBf16(bits[i]);
  } else {
    for (let i = 0; i < values.length; i++) out[i] = floatToF16(values[i]);
  }
  return new Uint8Array(out.buffer);
}

/** float32 bits → bf16 bits, rounding to nearest even; NaN stays NaN. */
export function floatBitsToBf16(x: number): number {
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) | 0x40) & 0xffff; // quiet NaN
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

export function f16ToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24; // zero and subnormals
  if (exponent === 0x1f) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

/** float → IEEE half bits, round to nearest even, with subnormals and overflow to infinity. */
export function floatToF16(value: number): number {
  const f = Math.fround(value);
  if (Number.isNaN(f)) return 0x7e00;
  const sign = f < 0 || Object.is(f, -0) ? 0x8000 : 0;
  const a = Math.abs(f);
  if (a >= 65520) return sign | 0x7c00; // rounds past the largest half (65504)
  if (a < 2 ** -14) {
    // subnormal: a multiple of 2^-24, rounded to nearest even
    return sign | roundHalfEven(a * 2 ** 24);
  }
  let exponent = Math.floor(Math.log2(a));
  if (2 ** exponent > a) exponent--; // guard against log2 rounding
  if (2 ** (exponent + 1) <= a) exponent++;
  let mantissa = roundHalfEven((a / 2 ** exponent - 1) * 1024);
  if (mantissa === 1024) {
    mantissa = 0;
    exponent++;
  }
  if (exponent > 15) return sign | 0x7c00;
  return sign | ((exponent + 15) << 10) | mantissa;
}

function roundHalfEven(x: number): number {
  const floor = Math.floor(x);
  const rest = x - floor;
  if (rest > 0.5) return floor + 1;
  if (rest < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}
