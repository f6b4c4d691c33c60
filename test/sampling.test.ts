// Properties of the sampler, each checked against a direct computation in the test.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Sampler, argmax } from '../src/generation/sampling.ts';

const logitArrays = fc.array(fc.float({ min: -20, max: 20, noNaN: true }), { minLength: 1, maxLength: 60 }).map((a) => Float32Array.from(a));

/** The smallest set of most likely tokens whose probability reaches p (ties: all tied tokens). */
function nucleusSet(logits: Float32Array, temperature: number, p: number): Set<number> {
  const ids = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]);
  const max = logits[ids[0]];
  const w = ids.map((id) => Math.exp((logits[id] - max) / temperature));
  const total = w.reduce((a, b) => a + b, 0);
  let mass = 0;
  let threshold = logits[ids[0]];
  for (let i = 0; i < ids.length; i++) {
    mass += w[i];
    threshold = logits[ids[i]];
    if (mass >= p * total - 1e-12 * total) break;
  }
  return new Set(ids.filter((id) => logits[id] >= threshold));
}

describe('Sampler', () => {
  it('top-k never returns a token outside the k best', () => {
    fc.assert(
      fc.property(logitArrays, fc.integer({ min: 1, max: 10 }), fc.integer(), (logits, k, seed) => {
        const sampler = new Sampler({ temperature: 1.5, topK: k, seed });
        const kth = Array.from(logits).sort((a, b) => b - a)[Math.min(k, logits.length) - 1];
        for (let i = 0; i < 20; i++) assert.ok(logits[sampler.sample(logits)] >= kth);
      }),
    );
  });

  it('top-p returns a token of the smallest set whose mass reaches p', () => {
    fc.assert(
      fc.property(logitArrays, fc.double({ min: 0.05, max: 1, noNaN: true }), fc.double({ min: 0.2, max: 3, noNaN: true }), fc.integer(), (logits, p, t, seed) => {
        const allowed = nucleusSet(logits, t, p);
        const sampler = new Sampler({ temperature: t, topP: p, seed });
        for (let i = 0; i < 20; i++) {
          const id = sampler.sample(logits);
          assert.ok(allowed.has(id), `token ${id} (logit ${logits[id]}) outside the nucleus`);
        }
      }),
    );
  });

  it('temperature 0 is greedy, and a tiny temperature agrees with it when the best token leads clearly', () => {
    fc.assert(
      fc.property(logitArrays, fc.integer(), (logits, seed) => {
        const best = argmax(logits);
        assert.equal(new Sampler({ temperature: 0 }).sample(logits), best);
        const sorted = Array.from(logits).sort((a, b) => b - a);
        if (sorted.length > 1 && sorted[0] - sorted[1] > 0.01) {
          assert.equal(new Sampler({ temperature: 1e-4, seed }).sample(logits), best);
        }
      }),
    );
  });

  it('the same seed gives the same tokens; different seeds do not always', () => {
    const logits = Float32Array.from({ length: 50 }, (_, i) => Math.sin(i));
    const run = (seed: number) => {
      const sampler = new Sampler({ temperature: 1, seed });
      return Array.from({ length: 30 }, () => sampler.sample(logits));
    };
    fc.assert(fc.property(fc.integer(), (seed) => assert.deepEqual(run(seed), run(seed))));
    assert.notDeepEqual(run(1), run(2));
  });

  it('a repetition penalty above 1 lowers how often seen tokens are drawn', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 9 }), fc.integer(), (seen, seed) => {
        const logits = Float32Array.from({ length: 10 }, (_, i) => (i === seen ? 1 : 0.5));
        const count = (penalty: number) => {
          const sampler = new Sampler({ temperature: 1, repetitionPenalty: penalty, seed });
          let n = 0;
          for (let i = 0; i < 400; i++) if (sampler.sample(logits, [seen]) === seen) n++;
          return n;
        };
        // p(seen) ≈ 0.16 without penalty, ≈ 0.10 with penalty 2 (logit 1 → 0.5)
        assert.ok(count(2) < count(1));
      }),
      { numRuns: 20 },
    );
  });

  it('does not modify the logits it is given', () => {
    const logits = Float32Array.from([1, -2, 3]);
    new Sampler({ temperature: 1, repetitionPenalty: 1.5, seed: 1 }).sample(logits, [0, 1, 2]);
    assert.deepEqual(Array.from(logits), [1, -2, 3]);
  });

  it('rejects invalid options with a RangeError', () => {
    assert.throws(() => new Sampler({ temperature: -1 }), RangeError);
    assert.throws(() => new Sampler({ topP: 0 }), RangeError);
    assert.throws(() => new Sampler({ topP: 1.5 }), RangeError);
    assert.throws(() => new Sampler({ topK: 2.5 }), RangeError);
    assert.throws(() => new Sampler({ repetitionPenalty: 0 }), RangeError);
  });
});
