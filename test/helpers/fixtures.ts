// The PyTorch fixtures in test/fixtures and the comparison every backend's test uses.
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DumpResult } from '../../src/cli/dump.ts';

export const fixturesDir = fileURLToPath(new URL('../fixtures/', import.meta.url));
export const fixtureNames = existsSync(fixturesDir)
  ? readdirSync(fixturesDir).filter((name) => existsSync(join(fixturesDir, name, 'expected.json')))
  : [];

export interface Expected extends DumpResult {
  stream_hidden: number[][][];
  aggregation_weights?: number[][];
}

/**
 * Tolerance: both sides compute in float32 from the same stored weights, but PyTorch accumulates
 * dot products in float32 (in its own order) while the oracle accumulates in float64, and
 * exp/cos/sin differ in the last bits. Over two layers of these tiny models that is ~1e-6
 * relative; we allow 1e-4 of the row's largest magnitude (plus 1e-5 absolute) so a real
 * semantic error (wrong RoPE pairing, stream order, prefix rotation …) — which moves logits by
 * O(0.1..1) — cannot hide.
 */
export function compareRows(name: string, actual: ArrayLike<number>[], expected: ArrayLike<number>[]): number {
  assert.equal(actual.length, expected.length, `${name}: number of rows`);
  let worst = 0;
  actual.forEach((row, r) => {
    const want = expected[r];
    assert.equal(row.length, want.length, `${name}[${r}]: row length`);
    let scale = 0;
    for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]));
    for (let i = 0; i < want.length; i++) {
      const error = Math.abs(row[i] - want[i]);
      worst = Math.max(worst, error / Math.max(scale, 1));
      if (error > 1e-4 * scale + 1e-5) {
        assert.fail(`${name}[${r}][${i}]: got ${row[i]}, PyTorch ${want[i]} (|diff| ${error.toExponential(2)}, row scale ${scale.toFixed(3)})`);
      }
    }
  });
  return worst;
}
