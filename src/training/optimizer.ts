// AdamW with decoupled weight decay (Loshchilov & Hutter), the learning-rate schedule (linear
// warm-up, then cosine decay to a floor) and global-norm gradient clipping.
import type { ParameterEntry } from './weights.ts';

export interface AdamWOptions {
  beta1: number;
  beta2: number;
  eps: number;
  /** decoupled: θ ← θ − lr · wd · θ, only for entries with decay = true (matrices) */
  weightDecay: number;
}

export class AdamW {
  /** first and second moments by tensor name */
  readonly expAvg = new Map<string, Float32Array>();
  readonly expAvgSq = new Map<string, Float32Array>();
  /** updates done so far (for the bias correction) */
  step = 0;

  constructor(
    readonly options: AdamWOptions,
    entries: ParameterEntry[],
  ) {
    for (const e of entries) {
      this.expAvg.set(e.name, new Float32Array(e.data.length));
      this.expAvgSq.set(e.name, new Float32Array(e.data.length));
    }
  }

  /** One update of the `params` entries from the matching `grads` entries (same order). */
  update(params: ParameterEntry[], grads: ParameterEntry[], lr: number): void {
    const { beta1, beta2, eps, weightDecay } = this.options;
    this.step++;
    const correction1 = 1 - beta1 ** this.step;
    const correction2 = 1 - beta2 ** this.step;
    for (let e = 0; e < params.length; e++) {
      const { name, data, decay } = params[e];
      const grad = grads[e].data;
      const m = this.expAvg.get(name)!;
      const v = this.expAvgSq.get(name)!;
      const shrink = decay ? 1 - lr * weightDecay : 1;
      for (let i = 0; i < data.length; i++) {
        const g = grad[i];
        m[i] = beta1 * m[i] + (1 - beta1) * g;
        v[i] = beta2 * v[i] + (1 - beta2) * g * g;
        const update = m[i] / correction1 / (Math.sqrt(v[i] / correction2) + eps);
        data[i] = data[i] * shrink - lr * update;
      }
    }
  }
}

/** sqrt(Σ g²) over all entries */
export function globalNorm(grads: ParameterEntry[]): number {
  let sum = 0;
  for (const { data } of grads) for (let i = 0; i < data.length; i++) sum += data[i] * data[i];
  return Math.sqrt(sum);
}

/** Scale all gradients down so their global norm is at most maxNorm; returns the norm before. */
export function clipGradients(grads: ParameterEntry[], maxNorm: number): number {
  const norm = globalNorm(grads);
  if (maxNorm > 0 && norm > maxNorm) {
    const scale = maxNorm / norm;
    for (const { data } of grads) for (let i = 0; i < data.length; i++) data[i] *= scale;
  }
  return norm;
}

export interface Schedule {
  /** peak learning rate */
  lr: number;
  warmupSteps: number;
  totalSteps: number;
  /** the cosine ends at lr · minLrRatio */
  minLrRatio: number;
}

/** The learning rate of update `step` (1-based): linear warm-up to lr, then cosine decay. */
export function learningRate(s: Schedule, step: number): number {
  if (step <= s.warmupSteps) return (s.lr * step) / s.warmupSteps;
  const decaySteps = Math.max(1, s.totalSteps - s.warmupSteps);
  const progress = Math.min(1, (step - s.warmupSteps) / decaySteps);
  const min = s.lr * s.minLrRatio;
  return min + 0.5 * (s.lr - min) * (1 + Math.cos(Math.PI * progress));
}
