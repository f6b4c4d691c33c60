// Data-parallel gradients on several cores: the sequences of a micro-batch are split between the
// main thread and `threads − 1` worker threads. The weights live in one SharedArrayBuffer that
// every thread reads (the optimizer updates it in place between steps); each worker writes its
// gradients into its own SharedArrayBuffer and the main thread adds them up in a fixed order, so
// a run is deterministic for a given thread count (different counts differ only by float
// rounding of the sums).
import { Worker } from 'node:worker_threads';
import type { ModelConfig } from '../checkpoint/config.ts';
import { type BackwardOptions, type Batch, trainingBackward, trainingForward } from './model.ts';
import { type Gradients, type ModelParams, mapParams, parameterEntries } from './weights.ts';

/** Copies of the tensors of `params`, all in one SharedArrayBuffer (visit order of mapParams). */
export function shareParams(params: ModelParams): { params: ModelParams; buffer: SharedArrayBuffer } {
  let total = 0;
  mapParams(params, (t) => {
    total += t.length;
    return t;
  });
  const buffer = new SharedArrayBuffer(total * 4);
  return { params: viewParams(params, buffer, true), buffer };
}

/** A structure like `template` whose tensors are consecutive views into `buffer`. */
export function viewParams(template: ModelParams, buffer: SharedArrayBuffer, copy: boolean): ModelParams {
  let offset = 0;
  return mapParams(template, (t) => {
    const view = new Float32Array(buffer, offset * 4, t.length);
    if (copy) view.set(t);
    offset += t.length;
    return view;
  });
}

interface StepMessage {
  inputs: Int32Array;
  targets: Int32Array;
  batchSize: number;
  length: number;
  options: BackwardOptions;
}

/** Split a batch by sequences into `parts` nearly equal batches (the first ones get the extra). */
function splitBatch(batch: Batch, parts: number): Batch[] {
  const out: Batch[] = [];
  let start = 0;
  for (let i = 0; i < parts; i++) {
    const B = Math.floor(batch.batchSize / parts) + (i < batch.batchSize % parts ? 1 : 0);
    if (B === 0) continue;
    const n = batch.length;
    out.push({
      inputs: batch.inputs.slice(start * n, (start + B) * n),
      targets: batch.targets.slice(start * n, (start + B) * n),
      batchSize: B,
      length: n,
    });
    start += B;
  }
  return out;
}

const counted = (b: Batch) => b.targets.reduce((s, t) => s + (t >= 0 ? 1 : 0), 0);

export class ParallelGradients {
  private readonly workers: Worker[] = [];
  private readonly workerGrads: Gradients[] = [];

  private constructor(
    private readonly config: ModelConfig,
    private readonly params: ModelParams,
  ) {}

  /**
   * `params` must come from shareParams (the workers read the same memory). With threads = 1
   * everything runs on the calling thread.
   */
  static async create(config: ModelConfig, params: ModelParams, buffer: SharedArrayBuffer, threads: number): Promise<ParallelGradients> {
    const pg = new ParallelGradients(config, params);
    const api = import.meta.resolve('tsx/esm/api');
    const url = new URL('./parallel-worker.ts', import.meta.url).href;
    for (let i = 1; i < threads; i++) {
      const gradBuffer = new SharedArrayBuffer(buffer.byteLength);
      // Workers do not inherit tsx's loader hooks: register them, then load the worker module.
      const worker = new Worker(
        `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(url)}); });`,
        { eval: true, workerData: { config, buffer, gradBuffer } },
      );
      worker.unref();
      await new Promise<void>((resolve, reject) => {
        worker.once('message', () => resolve());
        worker.once('error', reject);
      });
      pg.workers.push(worker);
      pg.workerGrads.push(viewParams(params, gradBuffer, false));
    }
    return pg;
  }

  /** Forward + backward of `batch`, adding into `grads` (like trainingBackward's `into`). Returns the loss. */
  async lossAndGradients(batch: Batch, grads: Gradients, options: BackwardOptions): Promise<number> {
    const parts = splitBatch(batch, this.workers.length + 1);
    const total = Math.max(1, counted(batch));
    const scaleOf = (part: Batch) => ((options.lossScale ?? 1) * counted(part)) / total;
    const pending = parts.slice(1).map(
      (part, i) =>
        new Promise<number>((resolve, reject) => {
          const worker = this.workers[i];
          const onError = (error: Error) => reject(error);
          worker.once('error', onError);
          worker.once('message', (loss: number) => {
            worker.off('error', onError);
            resolve(loss);
          });
          const message: StepMessage = {
            ...part,
            options: { freezeBackbone: options.freezeBackbone, lossScale: scaleOf(part), kernels: options.kernels },
          };
          worker.postMessage(message);
        }),
    );
    const own = parts[0];
    const acts = trainingForward(this.config, this.params, own, options);
    trainingBackward(this.config, this.params, acts, { ...options, into: grads, lossScale: scaleOf(own) });
    let loss = (acts.loss * counted(own)) / total;
    const losses = await Promise.all(pending);
    const into = parameterEntries(this.config, grads);
    for (let i = 0; i < losses.length; i++) {
      loss += (losses[i] * counted(parts[i + 1])) / total;
      const theirs = parameterEntries(this.config, this.workerGrads[i]);
      for (let e = 0; e < into.length; e++) {
        const a = into[e].data;
        const b = theirs[e].data;
        for (let j = 0; j < a.length; j++) a[j] += b[j];
      }
    }
    return loss;
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

export type { StepMessage };
