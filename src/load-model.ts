// Load a checkpoint folder into a runnable model, on the backend the caller chooses.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { LanguageModel } from './backend.ts';
import { readConfig } from './checkpoint/config.ts';
import { type LoadOptions, loadCheckpoint } from './checkpoint/load.ts';
import { availableStreamCounts, checkStreamCount, defaultStreamCount, readStreamSetSpecs } from './checkpoint/stream-sets.ts';
import { ReferenceModel } from './reference/model.ts';
import { WasmModel, type WasmModelOptions } from './wasm-bridge/model.ts';

/** "wasm": the WebAssembly SIMD kernels on worker threads; "reference": the readable oracle. */
export const BACKENDS = ['wasm', 'reference'] as const;
export type BackendName = (typeof BACKENDS)[number];
export const DEFAULT_BACKEND: BackendName = 'wasm';

export interface LoadModelOptions extends LoadOptions, WasmModelOptions {
  /** Which implementation runs the forward pass (default "wasm"). */
  backend?: BackendName;
  /**
   * Streams to run (dynamic P): 1 (the backbone alone), the folder's own parscale_n, or one of its
   * stream sets. Default: its own parscale_n when it is > 1, else its largest stream set, else 1.
   * Every stream set is loaded either way, so `withStreams(P)` on the model switches without
   * reloading anything.
   */
  P?: number;
}

export async function loadModel(dir: string, options: LoadModelOptions = {}): Promise<LanguageModel> {
  const backend = options.backend ?? DEFAULT_BACKEND;
  if (!BACKENDS.includes(backend)) {
    throw new RangeError(`unknown backend "${backend}" (expected one of: ${BACKENDS.join(', ')})`);
  }
  // an unknown P fails before any weights are read (the loaders report a broken folder themselves)
  const P = options.P;
  if (P !== undefined && existsSync(join(dir, 'config.json'))) {
    const config = readConfig(dir);
    checkStreamCount(dir, P, availableStreamCounts(config, readStreamSetSpecs(dir, config)));
  }
  let model: LanguageModel;
  if (backend === 'reference') {
    if (options.weights !== undefined && options.weights !== 'stored') {
      throw new RangeError(`weights "${options.weights}" is an option of the wasm backend; the reference backend always computes with the stored weights in float32`);
    }
    model = ReferenceModel.fromCheckpoint(await loadCheckpoint(dir, options));
  } else {
    // straight from the files into the WebAssembly memory (every stream set too): no second copy of the weights
    model = await WasmModel.load(dir, options);
  }
  // the loaded model is the folder's own P; streamSets lists 1, parscale_n and every stream set
  return model.withStreams(P ?? defaultStreamCount(model.config, model.streamSets.map((n) => ({ P: n }))));
}
