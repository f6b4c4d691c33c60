// Slow, obviously-correct scalar versions of the bf16 and f16 formats, written from the IEEE
// definitions with plain arithmetic (no bit tricks shared with src/checkpoint/safetensors.ts),
// to check the fast conversions against.

/** The value of a half-precision bit pattern, bit by bit. */
export function slowF16Value(h: number): number {
  return slowValue(h, 5, 10);
}

/** The value of a bfloat16 bit pattern, bit by bit. */
export function slowBf16Value(h: number): number {
  return slowValue(h, 8, 7);
}

function slowValue(bits: number, exponentBits: number, fractionBits: number): number {
  const sign = Math.floor(bits / 2 ** (exponentBits + fractionBits)) % 2 === 1 ? -1 : 1;
  const exponentField = Math.floor(bits / 2 ** fractionBits) % 2 ** exponentBits;
  let fraction = 0;
  for (let bit = 0; bit < fractionBits; bit++) {
    if (Math.floor(bits / 2 ** bit) % 2 === 1) fraction += 2 ** (bit - fractionBits);
  }
  const bias = 2 ** (exponentBits - 1) - 1;
  if (exponentField === 2 ** exponentBits - 1) return fraction === 0 ? sign * Infinity : NaN;
  if (exponentField === 0) return sign * fraction * 2 ** (1 - bias); // zero and subnormals
  return sign * (1 + fraction) * 2 ** (exponentField - bias);
}

/**
 * The pattern nearest to x among the finite non-negative patterns 0…maxFinite (whose values
 * increase with the pattern), ties to the even pattern, or infinity when |x| is at least the
 * halfway point past the largest finite value. Binary search, then compare the two neighbours.
 */
function slowNearest(x: number, value: (h: number) => number, maxFinite: number, infinity: number, signBit: number): number {
  if (Number.isNaN(x)) throw new RangeError('NaN has no nearest value');
  const sign = x < 0 || Object.is(x, -0) ? signBit : 0;
  const a = Math.abs(x);
  const largest = value(maxFinite);
  const overflowAt = largest + (largest - value(maxFinite - 1)) / 2;
  if (a >= overflowAt) return sign | infinity;
  let lo = 0;
  let hi = maxFinite;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (value(mid) <= a) lo = mid;
    else hi = mid;
  }
  // now value(lo) <= a <= value(hi) (or a beyond largest but below the overflow point: hi = lo)
  const below = a - value(lo);
  const above = value(hi) - a;
  let nearest: number;
  if (below < above) nearest = lo;
  else if (above < below) nearest = hi;
  else nearest = lo % 2 === 0 ? lo : hi;
  return sign | nearest;
}

export function slowNearestF16(x: number): number {
  return slowNearest(x, slowF16Value, 0x7bff, 0x7c00, 0x8000);
}

export function slowNearestBf16(x: number): number {
  return slowNearest(x, slowBf16Value, 0x7f7f, 0x7f80, 0x8000);
}

/** The float32 whose bits are `bits`, as a number. */
export function float32FromBits(bits: number): number {
  const view = new DataView(new ArrayBuffer(4));
  view.setUint32(0, bits >>> 0);
  return view.getFloat32(0);
}
