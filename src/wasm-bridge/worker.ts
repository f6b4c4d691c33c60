// One kernel-pool worker (see pool.ts): instantiate the kernels on the shared memory, say ready,
// then serve jobs from the control block until told to exit.
import { parentPort, workerData } from 'node:worker_threads';
import { instantiateKernels } from './kernels.ts';
import { serveJobs, type WorkerData } from './pool.ts';

const data = workerData as WorkerData;
const kernels = instantiateKernels(data.memory, data.module);
parentPort!.postMessage('ready');
serveJobs(kernels, data);
