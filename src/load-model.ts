// Load a checkpoint folder into a runnable model, on the backend the caller chooses.
import type { LanguageModel } from './backend.ts';
import { type LoadOptions, loadCheckpoint } from './checkpoint/load.ts';
import { ReferenceModel } from './reference/model.ts';
import { WasmModel, type WasmModelOptions } from './wasm-bridge/model.ts';

/** "wasm": the WebAssembly SIMD kernels on worker threads; "reference": the readable oracle. */
export const BACKENDS = ['wasm', 'reference'] as const;
export type BackendName = (typeof BACKENDS)[number];
export const DEFAULT_BACKEND: BackendName = 'wasm';

export interface LoadModelOptions extends LoadOptions, WasmModelOptions {
  /** Which implementation runs the forward pass (default "wasm"). */
  backend?: BackendName;
}

export async function loadModel(dir: string, options: LoadModelOptions = {}): Promise<LanguageModel> {
  const backend = options.backend ?? DEFAULT_BACKEND;
  if (!BACKENDS.includes(backend)) {
    throw new RangeError(`unknown backend "${backend}" (expected one of: ${BACKENDS.join(', ')})`);
  }
  if (backend === 'reference') {
    if (options.weights !== undefined && options.weights !== 'stored') {
      throw new RangeError(`weights "${options.weights}" is an option of the wasm backend; the reference backend always computes with the stored weights in float32`);
    }
    return ReferenceModel.fromCheckpoint(await loadCheckpoint(dir, options));
  }
  // straight from the files into the WebAssembly memory: no second copy of the weights
  return WasmModel.load(dir, options);
}
