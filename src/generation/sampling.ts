// Choosing the next token from logits: repetition penalty, temperature, top-k, top-p, then a
// draw from a seeded generator — in that order, as transformers applies them.

export interface SamplingOptions {
  /** 0 picks the most likely token (greedy). Default 0. */
  temperature?: number;
  /** Keep only the k most likely tokens (0 or undefined: no limit). */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches p, in (0, 1]. */
  topP?: number;
  /** > 1 makes tokens already in the prompt or output less likely (1: off). */
  repetitionPenalty?: number;
  /** Seed of the random generator: the same seed gives the same tokens. */
  seed?: number;
}

/**
 * mulberry32: a 32-bit seeded generator (Tommy Ettinger's), uniform in [0, 1). Small, fast and
 * good enough for sampling; Math.random cannot be seeded.
 */
export function createRng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function validateSamplingOptions(options: SamplingOptions): void {
  const { temperature = 0, topK = 0, topP = 1, repetitionPenalty = 1, seed = 0 } = options;
  if (!(temperature >= 0) || !Number.isFinite(temperature)) throw new RangeError(`temperature must be ≥ 0, got ${temperature}`);
  if (!Number.isInteger(topK) || topK < 0) throw new RangeError(`topK must be a non-negative integer, got ${topK}`);
  if (!(topP > 0 && topP <= 1)) throw new RangeError(`topP must be in (0, 1], got ${topP}`);
  if (!(repetitionPenalty > 0) || !Number.isFinite(repetitionPenalty)) throw new RangeError(`repetitionPenalty must be > 0, got ${repetitionPenalty}`);
  if (!Number.isInteger(seed)) throw new RangeError(`seed must be an integer, got ${seed}`);
}

export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

export class Sampler {
  private readonly random: () => number;
  private readonly temperature: number;
  private readonly topK: number;
  private readonly topP: number;
  private readonly repetitionPenalty: number;

  constructor(options: SamplingOptions = {}) {
    validateSamplingOptions(options);
    this.temperature = options.temperature ?? 0;
    this.topK = options.topK ?? 0;
    this.topP = options.topP ?? 1;
    this.repetitionPenalty = options.repetitionPenalty ?? 1;
    this.random = createRng(options.seed ?? Date.now());
  }

  /** Pick the next token. `logits` is not modified. */
  sample(logits: Float32Array, previousIds: readonly number[] = []): number {
    const scores = this.penalize(logits, previousIds);
    if (this.temperature === 0) return argmax(scores);

    const t = this.temperature;
    const max = scores[argmax(scores)];
    const weight = (id: number) => Math.exp((scores[id] - max) / t); // softmax numerator
    let candidates: number[]; // token ids that may be drawn
    if (this.topK > 0) {
      // top-k first; top-p then works on the renormalised k best, as in transformers
      candidates = bestIndices(scores, Math.min(this.topK, scores.length));
      if (this.topP < 1) candidates = candidates.slice(0, nucleusSize(candidates.map(weight), this.topP));
    } else if (this.topP < 1) {
      candidates = nucleus(scores, t, this.topP);
    } else {
      candidates = Array.from(scores.keys());
    }
    let kept = 0;
    for (const id of candidates) kept += weight(id);
    let r = this.random() * kept;
    for (const id of candidates) {
      r -= weight(id);
      if (r < 0) return id;
    }
    return candidates[candidates.length - 1]; // r landed on the rounding error at the very end
  }

  /** transformers' repetition penalty: positive logits divided by it, negative multiplied. */
  private penalize(logits: Float32Array, previousIds: readonly number[]): Float32Array {
    if (this.repetitionPenalty === 1 || previousIds.length === 0) return logits;
    const scores = logits.slice();
    for (const id of new Set(previousIds)) {
      const value = logits[id];
      scores[id] = value > 0 ? value / this.repetitionPenalty : value * this.repetitionPenalty;
    }
    return scores;
  }
}

/** How many of these weights, sorted largest first, it takes to reach `topP` of their sum. */
function nucleusSize(sortedWeights: number[], topP: number): number {
  const total = sortedWeights.reduce((a, b) => a + b, 0);
  let mass = 0;
  for (let i = 0; i < sortedWeights.length; i++) {
    mass += sortedWeights[i];
    if (mass >= topP * total) return i + 1;
  }
  return sortedWeights.length;
}

/**
 * The top-p set over the whole vocabulary: the most likely tokens whose probability reaches
 * topP. Instead of sorting 150k token ids with a comparator (too slow per token), we sort a copy
 * of the scores natively, find the score of the last token the set needs, and keep every token
 * scoring at least that. With no ties at that score this is exactly the smallest such set; with
 * ties, all tied tokens are kept (none is more deserving than another).
 */
export function nucleus(scores: Float32Array, temperature: number, topP: number): number[] {
  const sorted = Float32Array.from(scores).sort(); // ascending
  const max = sorted[sorted.length - 1];
  let total = 0;
  for (let i = 0; i < sorted.length; i++) total += Math.exp((sorted[i] - max) / temperature);
  let mass = 0;
  let threshold = max;
  for (let i = sorted.length - 1; i >= 0; i--) {
    mass += Math.exp((sorted[i] - max) / temperature);
    threshold = sorted[i];
    if (mass >= topP * total) break;
  }
  const ids: number[] = [];
  for (let id = 0; id < scores.length; id++) if (scores[id] >= threshold) ids.push(id);
  return ids;
}

/** Indices of the k largest scores, largest first. */
export function bestIndices(scores: Float32Array, k: number): number[] {
  if (k > 256) {
    // a full sort, O(V log V), beats the insertion list below once k is large
    return Array.from(scores.keys()).sort((a, b) => scores[b] - scores[a] || a - b).slice(0, k);
  }
  // keep a small sorted list: O(V · k) in the worst case, O(V) typically, for k ≪ V
  const best: number[] = [];
  for (let i = 0; i < scores.length; i++) {
    if (best.length === k && scores[i] <= scores[best[k - 1]]) continue;
    let at = best.length === k ? k - 1 : best.length;
    while (at > 0 && scores[best[at - 1]] < scores[i]) at--;
    best.splice(at, 0, i);
    if (best.length > k) best.pop();
  }
  return best;
}
