// Load a checkpoint folder into a runnable model, on the backend the caller chooses.
import type { LanguageModel } from './backend.ts';
import { type LoadOptions, loadCheckpoint } from './checkpoint/load.ts';
import { ReferenceModel } from './reference/model.ts';

export const BACKENDS = ['reference'] as const;
export type BackendName = (typeof BACKENDS)[number];

export interface LoadModelOptions extends LoadOptions {
  /** Which implementation runs the forward pass (default "reference"). */
  backend?: BackendName;
}

export async function loadModel(dir: string, options: LoadModelOptions = {}): Promise<LanguageModel> {
  const backend = options.backend ?? 'reference';
  if (!BACKENDS.includes(backend)) {
    throw new RangeError(`unknown backend "${backend}" (expected one of: ${BACKENDS.join(', ')})`);
  }
  const checkpoint = await loadCheckpoint(dir, options);
  return ReferenceModel.fromCheckpoint(checkpoint);
}
