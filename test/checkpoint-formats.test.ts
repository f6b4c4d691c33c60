// The number formats of stored weights: bf16 and f16 against slow scalar oracles written from
// the IEEE definitions (test/helpers/float-oracles.ts), exhaustively where 2^16 patterns allow.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { type DType, bytesToFloat32, f16ToFloat, float32ToBytes, floatToF16 } from '../src/checkpoint/safetensors.ts';
import { float32FromBits, slowBf16Value, slowF16Value, slowNearestBf16, slowNearestF16 } from './helpers/float-oracles.ts';

/** Encode one float32 (given as bits, so NaN payloads and -0 are exact) and return the 16-bit pattern. */
function encode16(bits: number, dtype: 'F16' | 'BF16'): number {
  const bytes = float32ToBytes(new Float32Array(Uint32Array.of(bits).buffer), dtype);
  return bytes[0] | (bytes[1] << 8);
}

/** Decode one 16-bit pattern to float32 bits. */
function decode16(h: number, dtype: 'F16' | 'BF16'): number {
  return new Uint32Array(bytesToFloat32(Uint8Array.of(h & 0xff, h >> 8), dtype).buffer)[0];
}

const sameValue = (a: number, b: number) => Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b));
const hex = (h: number) => `0x${h.toString(16).padStart(4, '0')}`;

describe('f16 (IEEE half)', () => {
  it('known bit patterns', () => {
    const cases: [number, number][] = [
      [1, 0x3c00],
      [65504, 0x7bff], // largest finite
      [2 ** -24, 0x0001], // smallest subnormal
      [-2, 0xc000],
      [0, 0x0000],
      [-0, 0x8000],
      [2 ** -14, 0x0400], // smallest normal
      [2 ** -14 - 2 ** -24, 0x03ff], // largest subnormal
      [Infinity, 0x7c00],
      [-Infinity, 0xfc00],
      [1e6, 0x7c00], // overflow → inf
      [65519, 0x7bff], // below the halfway point to 65536 → largest finite
      [65520, 0x7c00], // exactly halfway: ties to even, and the even neighbour is inf
      [2 ** -25, 0x0000], // halfway between 0 and 2^-24: ties to even (0)
      [1.5 * 2 ** -24, 0x0002], // halfway between 1 and 2 (× 2^-24): ties to even (2)
      [1 + 2 ** -11, 0x3c00], // halfway between 1 and the next half: ties to even
      [1 + 3 * 2 ** -11, 0x3c02],
      [1 / 3, 0x3555],
      [0.1, 0x2e66],
    ];
    for (const [value, bits] of cases) {
      assert.equal(floatToF16(value), bits, `${value} → ${hex(floatToF16(value))}, expected ${hex(bits)}`);
      assert.equal(encode16(new Uint32Array(Float32Array.of(value).buffer)[0], 'F16'), bits, `float32ToBytes(${value})`);
    }
    assert.equal(f16ToFloat(0x3555), 0.333251953125);
    assert.ok(Number.isNaN(f16ToFloat(0x7e00)));
    assert.equal(floatToF16(NaN) & 0x7c00, 0x7c00);
    assert.notEqual(floatToF16(NaN) & 0x3ff, 0, 'NaN stays NaN');
  });

  it('decoding agrees with the bit-by-bit oracle for all 65536 patterns', () => {
    for (let h = 0; h < 65536; h++) {
      const expected = slowF16Value(h);
      assert.ok(sameValue(float32FromBits(decode16(h, 'F16')), expected), `${hex(h)} → ${float32FromBits(decode16(h, 'F16'))}, expected ${expected}`);
      assert.ok(sameValue(f16ToFloat(h), expected), `f16ToFloat(${hex(h)})`);
    }
  });

  it('every pattern survives decode → encode, NaNs included', () => {
    for (let h = 0; h < 65536; h++) {
      const isSignalingNaN = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0 && (h & 0x200) === 0;
      // a signalling NaN comes back quieted (the quiet bit set), as hardware converts it
      assert.equal(encode16(decode16(h, 'F16'), 'F16'), isSignalingNaN ? h | 0x200 : h, hex(h));
    }
  });

  it('ties go to even at every midpoint between neighbouring halves, and one float32 step either side decides', () => {
    for (let h = 0; h < 0x7bff; h++) {
      const midpoint = (slowF16Value(h) + slowF16Value(h + 1)) / 2; // exact in float32: 12 significant bits
      const bits = new Uint32Array(Float32Array.of(midpoint).buffer)[0];
      assert.equal(float32FromBits(bits), midpoint);
      const even = h % 2 === 0 ? h : h + 1;
      assert.equal(encode16(bits, 'F16'), even, `midpoint after ${hex(h)}`);
      assert.equal(encode16(bits - 1, 'F16'), h, `just below the midpoint after ${hex(h)}`);
      assert.equal(encode16(bits + 1, 'F16'), h + 1, `just above the midpoint after ${hex(h)}`);
      assert.equal(encode16((bits | 0x80000000) >>> 0, 'F16'), even | 0x8000, `negative midpoint after ${hex(h)}`);
    }
  });

  it('encoding any float32 gives the nearest half, ties to even (random bit patterns)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), (bits) => {
        const x = float32FromBits(bits);
        fc.pre(!Number.isNaN(x));
        assert.equal(encode16(bits, 'F16'), slowNearestF16(x), `${x}`);
      }),
      { numRuns: 5000 },
    );
  });
});

describe('bf16 (bfloat16)', () => {
  it('known bit patterns', () => {
    const cases: [number, number][] = [
      [1, 0x3f80],
      [-2, 0xc000],
      [0, 0x0000],
      [-0, 0x8000],
      [Infinity, 0x7f80],
      [-Infinity, 0xff80],
      [1 + 2 ** -8, 0x3f80], // halfway between 1 and 1 + 2^-7: ties to even (1)
      [1 + 3 * 2 ** -8, 0x3f82], // halfway between 1 + 2^-7 (odd) and 1 + 2^-6: ties to even
      [1 + 2 ** -8 + 2 ** -20, 0x3f81], // just above halfway rounds up
      [3.4028234663852886e38, 0x7f80], // float32 max rounds past the largest bf16 to inf
      [3.3895313892515355e38, 0x7f7f], // the largest bf16 itself
      [2 ** -133, 0x0001], // smallest bf16 subnormal
    ];
    for (const [value, bits] of cases) {
      const got = encode16(new Uint32Array(Float32Array.of(value).buffer)[0], 'BF16');
      assert.equal(got, bits, `${value} → ${hex(got)}, expected ${hex(bits)}`);
    }
    const nan = encode16(0x7fc00000, 'BF16');
    assert.ok((nan & 0x7f80) === 0x7f80 && (nan & 0x7f) !== 0, 'NaN stays NaN');
    assert.ok((encode16(0x7f800001, 'BF16') & 0x7f) !== 0, 'a NaN whose payload is all in the dropped bits stays NaN (not inf)');
  });

  it('decoding is exact: the 16 bits become the high half of a float32, for all 65536 patterns', () => {
    for (let h = 0; h < 65536; h++) {
      assert.equal(decode16(h, 'BF16'), (h * 65536) >>> 0, hex(h));
      assert.ok(sameValue(float32FromBits(decode16(h, 'BF16')), slowBf16Value(h)), hex(h));
    }
  });

  it('ties go to even at every midpoint between neighbouring bf16 values', () => {
    for (let h = 0; h < 0x7f7f; h++) {
      const bits = (h * 65536 + 0x8000) >>> 0; // the float32 exactly halfway between h and h + 1
      assert.equal(float32FromBits(bits), (slowBf16Value(h) + slowBf16Value(h + 1)) / 2);
      assert.equal(encode16(bits, 'BF16'), h % 2 === 0 ? h : h + 1, `midpoint after ${hex(h)}`);
      assert.equal(encode16(bits - 1, 'BF16'), h, `just below the midpoint after ${hex(h)}`);
      assert.equal(encode16(bits + 1, 'BF16'), h + 1, `just above the midpoint after ${hex(h)}`);
    }
  });

  it('encoding any float32 gives the nearest bf16, ties to even (random bit patterns)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), (bits) => {
        const x = float32FromBits(bits);
        fc.pre(!Number.isNaN(x));
        assert.equal(encode16(bits, 'BF16'), slowNearestBf16(x), `${x}`);
      }),
      { numRuns: 5000 },
    );
  });
});

describe('buffers', () => {
  const dtypes: DType[] = ['F32', 'F16', 'BF16'];

  it('decodes bytes at any offset in their buffer (unaligned views are copied, not misread)', () => {
    fc.assert(
      fc.property(fc.constantFrom(...dtypes), fc.integer({ min: 0, max: 7 }), fc.float32Array({ maxLength: 20 }), (dtype, shift, values) => {
        const bytes = float32ToBytes(values, dtype);
        const padded = new Uint8Array(bytes.length + shift);
        padded.set(bytes, shift);
        assert.deepEqual(bytesToFloat32(padded.subarray(shift), dtype), bytesToFloat32(bytes, dtype));
      }),
    );
  });

  it('encodes a Float32Array that is a view into a larger buffer', () => {
    const all = Float32Array.of(9, 1.5, -2.25, 9);
    for (const dtype of dtypes) {
      assert.deepEqual(Array.from(bytesToFloat32(float32ToBytes(all.subarray(1, 3), dtype), dtype)), [1.5, -2.25]);
    }
  });

  it('decoding returns a fresh array that does not alias the stored bytes', () => {
    for (const dtype of dtypes) {
      const bytes = float32ToBytes(Float32Array.of(1, 2), dtype);
      const values = bytesToFloat32(bytes, dtype);
      values[0] = 7;
      assert.deepEqual(Array.from(bytesToFloat32(bytes, dtype)), [1, 2]);
    }
  });

  it('refuses a byte count that is not a whole number of values', () => {
    assert.throws(() => bytesToFloat32(new Uint8Array(3), 'BF16'), RangeError);
    assert.throws(() => bytesToFloat32(new Uint8Array(6), 'F32'), RangeError);
  });
});
