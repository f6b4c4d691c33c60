// A gradient worker thread of ParallelGradients (parallel.ts): reads the shared weights, computes
// forward + backward of the sequences it is sent, writes the gradients into its shared buffer.
import { parentPort, workerData } from 'node:worker_threads';
import type { ModelConfig } from '../checkpoint/config.ts';
import { trainingBackward, trainingForward } from './model.ts';
import { type StepMessage, viewParams } from './parallel.ts';
import { initParams, parameterEntries } from './weights.ts';

const { config, buffer, gradBuffer } = workerData as {
  config: ModelConfig;
  buffer: SharedArrayBuffer;
  gradBuffer: SharedArrayBuffer;
};
// initParams only provides the structure (which tensors exist, their sizes) for the views
const template = initParams(config, 0);
const params = viewParams(template, buffer, false);
const grads = viewParams(template, gradBuffer, false);
const gradEntries = parameterEntries(config, grads);

parentPort!.on('message', (m: StepMessage) => {
  for (const e of gradEntries) e.data.fill(0);
  const batch = { inputs: m.inputs, targets: m.targets, batchSize: m.batchSize, length: m.length };
  // with kernels 'wasm' the products run on this thread's own wasm instance (wasm-products.ts)
  const acts = trainingForward(config, params, batch, m.options);
  trainingBackward(config, params, acts, { ...m.options, into: grads });
  parentPort!.postMessage(acts.loss);
});
parentPort!.postMessage('ready');
