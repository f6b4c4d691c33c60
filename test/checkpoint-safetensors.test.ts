// The safetensors reader and writer: round trips, byte-exact agreement with the independent
// Python writer that made test/fixtures, and each kind of damaged file giving its own error
// that names the file and the tensor (through readSafetensorsHeader and through loadCheckpoint).
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import { CheckpointError } from '../src/checkpoint/errors.ts';
import { loadCheckpoint } from '../src/checkpoint/load.ts';
import {
  DTYPE_BYTES,
  type DType,
  bytesToFloat32,
  float32ToBytes,
  readSafetensorsHeader,
  readTensorBytes,
  writeSafetensors,
} from '../src/checkpoint/safetensors.ts';
import { type ExpectedCheckpointError, rejectsWithCheckpointError, throwsCheckpointError } from './helpers/checkpoint-errors.ts';
import { slowNearestBf16, slowNearestF16 } from './helpers/float-oracles.ts';
import { tinyConfigJson, writeSyntheticCheckpoint } from './helpers/synthetic-checkpoint.ts';

const scratch = mkdtempSync(join(tmpdir(), 'parscale-safetensors-'));
after(() => rmSync(scratch, { recursive: true, force: true }));
let folders = 0;
const newFolder = () => mkdtempSync(join(scratch, `${folders++}-`));

const FIXTURES = join(import.meta.dirname, 'fixtures');
const dtypes: DType[] = ['F32', 'F16', 'BF16'];

/** The float32 a stored 16-bit value should decode to: the nearest value of the format (oracle). */
function expectedStored(x: number, dtype: DType): number {
  if (dtype === 'F32' || Number.isNaN(x)) return x;
  const h = dtype === 'F16' ? slowNearestF16(x) : slowNearestBf16(x);
  return bytesToFloat32(Uint8Array.of(h & 0xff, h >> 8), dtype)[0];
}

const sameBits = (a: Float32Array, b: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

describe('safetensors write → read', () => {
  const tensorSpec = fc.record({
    dtype: fc.constantFrom(...dtypes),
    // 0-d scalars, empty dimensions, odd sizes
    shape: fc.array(fc.integer({ min: 0, max: 7 }), { maxLength: 3 }),
    seed: fc.integer(),
  });
  const names = fc.uniqueArray(fc.string({ minLength: 1, maxLength: 12, unit: 'grapheme' }).filter((s) => s !== '__metadata__'), { minLength: 1, maxLength: 6 });

  it('tensor names that are Object.prototype keys round trip too ("__proto__" once went missing)', () => {
    const file = join(newFolder(), 'proto.safetensors');
    const names = ['__proto__', 'constructor', 'toString', 'hasOwnProperty'];
    writeSafetensors(file, names.map((name, i) => ({ name, dtype: 'F32' as const, shape: [1], data: float32ToBytes(new Float32Array([i]), 'F32') })));
    const { tensors } = readSafetensorsHeader(file);
    assert.deepEqual([...tensors.keys()].sort(), names.slice().sort());
    names.forEach((name, i) => assert.deepEqual(bytesToFloat32(readTensorBytes(tensors.get(name)!), 'F32'), new Float32Array([i])));
  });

  it('round trips names, dtypes, shapes, values and metadata; f32 exactly, f16/bf16 as the nearest value', () => {
    const file = join(newFolder(), 'roundtrip.safetensors');
    fc.assert(
      fc.property(names, fc.array(tensorSpec, { minLength: 6, maxLength: 6 }), fc.dictionary(fc.string(), fc.string(), { maxKeys: 3 }), (tensorNames, specs, metadata) => {
        const originals = tensorNames.map((name, i) => {
          const { dtype, shape, seed } = specs[i];
          const count = shape.reduce((a, b) => a * b, 1);
          const values = new Float32Array(fc.sample(fc.float({ noDefaultInfinity: false }), { numRuns: count, seed }));
          return { name, dtype, shape, values, data: float32ToBytes(values, dtype) };
        });
        writeSafetensors(file, originals, metadata);

        const { tensors, metadata: readMetadata } = readSafetensorsHeader(file);
        assert.deepEqual(readMetadata, { ...metadata }); // spread: fast-check builds null-prototype objects
        assert.deepEqual([...tensors.keys()].sort(), tensorNames.slice().sort());
        for (const original of originals) {
          const info = tensors.get(original.name)!;
          assert.equal(info.dtype, original.dtype);
          assert.deepEqual(info.shape, original.shape);
          assert.equal(info.byteLength, original.values.length * DTYPE_BYTES[original.dtype]);
          const bytes = readTensorBytes(info);
          assert.deepEqual(bytes, original.data);
          const decoded = bytesToFloat32(bytes, original.dtype);
          if (original.dtype === 'F32') assert.ok(sameBits(decoded, original.values), 'f32 is stored bit for bit');
          original.values.forEach((x, j) => {
            const want = expectedStored(x, original.dtype);
            assert.ok(Object.is(decoded[j], want) || (Number.isNaN(want) && Number.isNaN(decoded[j])), `${original.dtype} ${x} → ${decoded[j]}, expected ${want}`);
          });
          assert.deepEqual(float32ToBytes(decoded, original.dtype), bytes, 're-encoding the decoded values gives the same bytes');
        }
      }),
      { numRuns: 60 },
    );
  });

  it('lays the file out as the format says: padded header, data in the given order, absolute offsets', () => {
    const file = join(newFolder(), 'layout.safetensors');
    const tensors = [
      { name: 'b', dtype: 'BF16' as const, shape: [3], data: float32ToBytes(Float32Array.of(1, 2, 3), 'BF16') },
      { name: 'a', dtype: 'F32' as const, shape: [], data: float32ToBytes(Float32Array.of(-1), 'F32') },
      { name: 'c', dtype: 'F16' as const, shape: [2, 0], data: new Uint8Array(0) },
    ];
    writeSafetensors(file, tensors);
    const bytes = readFileSync(file);
    const n = Number(bytes.readBigUInt64LE(0));
    assert.equal(n % 8, 0, 'header padded to a multiple of 8');
    const headerText = bytes.subarray(8, 8 + n).toString();
    assert.match(headerText, /^\{"__metadata__":\{"format":"pt"\},"b":\{"dtype":"BF16","shape":\[3\],"data_offsets":\[0,6\]\}.*\} *$/);
    assert.equal(bytes.length, 8 + n + 6 + 4);
    const { tensors: infos } = readSafetensorsHeader(file);
    assert.equal(infos.get('b')!.byteOffset, 8 + n);
    assert.equal(infos.get('a')!.byteOffset, 8 + n + 6);
    assert.equal(infos.get('b')!.file, file);
    assert.deepEqual(bytes.subarray(infos.get('a')!.byteOffset, infos.get('a')!.byteOffset + 4), Buffer.from(tensors[1].data));
  });

  it('writes the same bytes as the independent Python writer of test/fixtures', () => {
    const files = readdirSync(FIXTURES, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.safetensors'));
    assert.ok(files.length >= 9, `found ${files.length} fixture files`);
    for (const relative of files) {
      const original = join(FIXTURES, relative);
      const { tensors, metadata } = readSafetensorsHeader(original);
      const inFileOrder = [...tensors.values()].sort((a, b) => a.byteOffset - b.byteOffset);
      const copy = join(newFolder(), 'copy.safetensors');
      writeSafetensors(copy, inFileOrder.map((info) => ({ ...info, data: readTensorBytes(info) })), metadata);
      assert.ok(readFileSync(copy).equals(readFileSync(original)), `${relative} rewritten byte for byte`);
      // and the 16-bit values PyTorch rounded survive our decode → encode unchanged
      for (const info of inFileOrder) {
        const bytes = readTensorBytes(info);
        assert.deepEqual(float32ToBytes(bytesToFloat32(bytes, info.dtype), info.dtype), bytes, `${relative}: ${info.name}`);
      }
    }
  });

  it('refuses to write data that does not match its shape, or a duplicate name', () => {
    const file = join(newFolder(), 'bad.safetensors');
    assert.throws(() => writeSafetensors(file, [{ name: 'x', dtype: 'F32', shape: [2], data: new Uint8Array(4) }]), RangeError);
    const t = { name: 'x', dtype: 'F16' as const, shape: [1], data: new Uint8Array(2) };
    assert.throws(() => writeSafetensors(file, [t, t]), RangeError);
  });
});

// ---- damaged files ----

/** A synthetic checkpoint (P = 2, single file) and its model.safetensors. */
function checkpointFile() {
  const dir = newFolder();
  const { files } = writeSyntheticCheckpoint(dir, tinyConfigJson(), { dtype: 'BF16' });
  return { dir, file: files[0] };
}

/** Rewrite a safetensors file's header (as an object, or as raw text), keeping its data section. */
function rewriteHeader(file: string, edit: ((header: Record<string, any>) => void) | string): void {
  const bytes = readFileSync(file);
  const n = Number(bytes.readBigUInt64LE(0));
  let text: string;
  if (typeof edit === 'string') text = edit;
  else {
    const header = JSON.parse(bytes.subarray(8, 8 + n).toString());
    edit(header);
    text = JSON.stringify(header);
  }
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(Buffer.byteLength(text)));
  writeFileSync(file, Buffer.concat([length, Buffer.from(text), bytes.subarray(8 + n)]));
}

/** Both entry points must report the same damage the same way. */
async function expectDamage(dir: string, file: string, expected: ExpectedCheckpointError): Promise<void> {
  throwsCheckpointError(() => readSafetensorsHeader(file), expected);
  await rejectsWithCheckpointError(loadCheckpoint(dir), expected);
}

describe('damaged safetensors files', { timeout: 30_000 }, () => {
  it('a truncated file (data section cut short)', async () => {
    const { dir, file } = checkpointFile();
    truncateSync(file, readFileSync(file).length - 2);
    // the last tensor written (P = 2 bf16 values, 4 bytes) is the one cut off
    await expectDamage(dir, file, { code: 'SAFETENSORS_TRUNCATED', file, tensor: 'model.aggregate_layer.2.bias', message: [/truncated/] });
  });

  it('a file cut inside the header, and one shorter than the 8-byte length', async () => {
    const { dir, file } = checkpointFile();
    truncateSync(file, 100);
    await expectDamage(dir, file, { code: 'SAFETENSORS_TRUNCATED', file, message: [/header length \d+ runs past the end of the file \(100 bytes/] });
    writeFileSync(file, Uint8Array.of(1, 2, 3));
    await expectDamage(dir, file, { code: 'SAFETENSORS_TRUNCATED', file, message: [/3 bytes, too short/] });
  });

  it('a header length past the end of the file', async () => {
    const { dir, file } = checkpointFile();
    const bytes = readFileSync(file);
    bytes.writeBigUInt64LE(BigInt(bytes.length), 0);
    writeFileSync(file, bytes);
    await expectDamage(dir, file, { code: 'SAFETENSORS_TRUNCATED', file, message: [/header length \d+ runs past the end/] });
  });

  it('an implausibly large header length (not a safetensors file)', async () => {
    const { dir, file } = checkpointFile();
    const bytes = readFileSync(file);
    bytes.writeBigUInt64LE(2n ** 63n + 5n, 0);
    writeFileSync(file, bytes);
    await expectDamage(dir, file, { code: 'SAFETENSORS_HEADER', file, message: [/implausible/] });
  });

  it('a Git LFS pointer instead of the weights', async () => {
    const { dir, file } = checkpointFile();
    writeFileSync(file, 'version https://git-lfs.github.com/spec/v1\noid sha256:4d7a2146\nsize 3087467144\n');
    await expectDamage(dir, file, { code: 'SAFETENSORS_HEADER', file, message: [/Git LFS pointer/] });
  });

  it('a header that is not JSON', async () => {
    const { dir, file } = checkpointFile();
    rewriteHeader(file, '{"model.norm.weight": ');
    await expectDamage(dir, file, { code: 'SAFETENSORS_HEADER', file, message: [/not valid JSON/] });
  });

  it('a header that is JSON but not an object', async () => {
    for (const text of ['[1, 2, 3]', '42', 'null', '"tensors"']) {
      const { dir, file } = checkpointFile();
      rewriteHeader(file, text);
      await expectDamage(dir, file, { code: 'SAFETENSORS_HEADER', file, message: [/not a JSON object/] });
    }
  });

  it('an entry with fields of the wrong type', async () => {
    const edits: [string, (entry: Record<string, unknown>) => void, RegExp][] = [
      ['entry not an object', (e) => Object.keys(e).forEach((k) => delete e[k]), /"dtype" must be a string/],
      ['shape not a list', (e) => void (e.shape = 8), /"shape" must be a list/],
      ['negative dimension', (e) => void (e.shape = [-8]), /"shape" must be a list of non-negative integers/],
      ['offsets not a pair', (e) => void (e.data_offsets = [0]), /"data_offsets" must be \[begin, end\]/],
      ['fractional offset', (e) => void (e.data_offsets = [0.5, 16.5]), /"data_offsets" must be/],
    ];
    for (const [label, edit, pattern] of edits) {
      const { dir, file } = checkpointFile();
      rewriteHeader(file, (h) => edit(h['model.norm.weight']));
      await expectDamage(dir, file, { code: 'SAFETENSORS_HEADER', file, tensor: 'model.norm.weight', message: [pattern] });
    }
    const { dir, file } = checkpointFile();
    rewriteHeader(file, (h) => void (h.__metadata__ = { format: 7 }));
    await expectDamage(dir, file, { code: 'SAFETENSORS_HEADER', file, message: [/"__metadata__" must map strings to strings/] });
  });

  it('offsets out of range', async () => {
    const { dir, file } = checkpointFile();
    rewriteHeader(file, (h) => {
      const [begin, end] = h['model.norm.weight'].data_offsets;
      h['model.norm.weight'].data_offsets = [begin + 1e6, end + 1e6];
    });
    await expectDamage(dir, file, { code: 'SAFETENSORS_OFFSETS', file, tensor: 'model.norm.weight', message: [/run past the end of the data section/] });
  });

  it('overlapping offsets', async () => {
    const { dir, file } = checkpointFile();
    rewriteHeader(file, (h) => {
      // same size as the norm weight, but placed over the start of the embedding
      const [begin] = h['model.embed_tokens.weight'].data_offsets;
      h['model.norm.weight'].data_offsets = [begin + 2, begin + 18];
    });
    await expectDamage(dir, file, { code: 'SAFETENSORS_OFFSETS', file, tensor: 'model.norm.weight', message: [/"model\.embed_tokens\.weight" \[\d+, \d+\] and "model\.norm\.weight" \[\d+, \d+\] overlap/] });
  });

  it('a byte size that is not product(shape) × dtype size', async () => {
    const { dir, file } = checkpointFile();
    rewriteHeader(file, (h) => {
      const [begin, end] = h['model.norm.weight'].data_offsets;
      h['model.norm.weight'].data_offsets = [begin, end - 2];
    });
    await expectDamage(dir, file, { code: 'SAFETENSORS_OFFSETS', file, tensor: 'model.norm.weight', message: [/hold 14 bytes, but shape \[8\] of BF16 needs 16/] });
  });

  it('offsets that end before they begin', async () => {
    const { dir, file } = checkpointFile();
    rewriteHeader(file, (h) => {
      const [begin, end] = h['model.norm.weight'].data_offsets;
      h['model.norm.weight'].data_offsets = [end, begin];
    });
    await expectDamage(dir, file, { code: 'SAFETENSORS_OFFSETS', file, tensor: 'model.norm.weight', message: [/end before they begin/] });
  });

  it('a dtype we do not load, or that does not exist', async () => {
    const cases: [string, RegExp][] = [
      ['F64', /dtype F64 \(a safetensors dtype we do not load\); expected BF16, F16 or F32/],
      ['I8', /dtype I8 \(a safetensors dtype we do not load\)/],
      ['F8_E4M3', /dtype F8_E4M3 \(a safetensors dtype we do not load\)/],
      ['Q4_K', /dtype Q4_K \(not a safetensors dtype\)/],
      // must not be found on Object.prototype
      ['constructor', /dtype constructor \(not a safetensors dtype\)/],
    ];
    for (const [dtype, pattern] of cases) {
      const { dir, file } = checkpointFile();
      rewriteHeader(file, (h) => void (h['model.norm.weight'].dtype = dtype));
      await expectDamage(dir, file, { code: 'SAFETENSORS_DTYPE', file, tensor: 'model.norm.weight', message: [pattern] });
    }
  });

  it('random damage to the header or the length never crashes, hangs, or throws anything but a CheckpointError', async () => {
    const { file } = checkpointFile();
    const original = readFileSync(file);
    const headerEnd = 8 + Number(original.readBigUInt64LE(0));
    const damaged = join(newFolder(), 'damaged.safetensors');
    fc.assert(
      fc.property(
        fc.array(fc.record({ at: fc.integer({ min: 0, max: headerEnd - 1 }), byte: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 4 }),
        fc.option(fc.integer({ min: 0, max: original.length }), { nil: undefined }),
        (flips, cutAt) => {
          const bytes = Buffer.from(original);
          for (const { at, byte } of flips) bytes[at] = byte;
          writeFileSync(damaged, cutAt === undefined ? bytes : bytes.subarray(0, cutAt));
          try {
            const { tensors } = readSafetensorsHeader(damaged);
            for (const info of tensors.values()) readTensorBytes(info);
          } catch (error) {
            assert.ok(error instanceof CheckpointError, `not a CheckpointError: ${error}`);
            assert.ok(error.message.includes(damaged), error.message);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('a file that shrinks after its header was read fails the data read with SAFETENSORS_TRUNCATED', () => {
    const { file } = checkpointFile();
    const { tensors } = readSafetensorsHeader(file);
    const last = [...tensors.values()].sort((a, b) => b.byteOffset - a.byteOffset)[0];
    truncateSync(file, last.byteOffset + 1);
    throwsCheckpointError(() => readTensorBytes(last), { code: 'SAFETENSORS_TRUNCATED', file, tensor: last.name });
  });

  it('a file that does not exist', () => {
    const file = join(newFolder(), 'nothing.safetensors');
    throwsCheckpointError(() => readSafetensorsHeader(file), { code: 'FILE_NOT_FOUND', file });
  });
});
