// `parscale bench`: whole-model speed and memory, as figures with the machine's own rooflines
// measured in the same run. Speed is never asserted in tests; it is measured here.
import { resolve } from 'node:path';
import { argmax } from '../generation/sampling.ts';
import { BACKENDS, type BackendName, DEFAULT_BACKEND, loadModel } from '../load-model.ts';
import { WasmModel } from '../wasm-bridge/model.ts';
import { UsageError, numberOption, parseCommandLine, requiredOption } from './args.ts';
import { streamsFrom, weightsFrom } from './common.ts';

export const benchHelp = `Usage: parscale bench --model DIR [--backend wasm|reference] [--threads N] [--P N] [--weights stored|int8] [--prompt-tokens N] [--new-tokens N] [--runs N] [--json]

Measure prefill and decode speed and peak memory on random token ids (greedy decoding).
Reports medians over --runs runs. With the wasm backend it also measures, in the same run, a
plain SIMD read of the model's weight bytes and the SIMD multiply-add peak (mul then add, and the
kernels' own multiply-add: fused in the relaxed-SIMD build), on one thread and on all threads at
once, and prints decode and prefill as shares of those limits.

Options:
  -m, --model DIR        checkpoint folder
      --backend NAME     ${BACKENDS.join(' | ')} (default ${DEFAULT_BACKEND})
      --threads N        threads for the wasm backend (default: all cores)
      --P N              streams to run (dynamic P: 1, the model's own P or a stream set)
      --weights W        wasm backend: stored (default) or int8 (matrices quantized at load)
      --prompt-tokens N  prompt length (default 64)
      --new-tokens N     tokens to decode (default 64)
      --runs N           repetitions; medians are reported (default 3)
      --json             one JSON object on stdout
  -h, --help             show this help`;

/**
 * Multiply-adds of the matrix products in one forward position with P streams: every layer's
 * q, k, v, o, gate, up and down for each stream, then the LM head once (after the aggregation).
 * Attention, norms and the aggregation layer are left out (well under 1 % at the shapes of
 * docs/performance.md), so shares of the peak computed from it are slight underestimates.
 */
export function productMultiplyAdds(config: { hiddenSize: number; intermediateSize: number; numLayers: number; numHeads: number; numKvHeads: number; headDim: number; vocabSize: number }, P: number): number {
  const { hiddenSize: H, intermediateSize: I, numLayers, numHeads, numKvHeads, headDim, vocabSize } = config;
  const qDim = numHeads * headDim;
  const kvDim = numKvHeads * headDim;
  const perLayer = H * qDim + 2 * H * kvDim + qDim * H + 3 * H * I;
  return P * numLayers * perLayer + vocabSize * H;
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};

export async function benchCommand(args: string[]): Promise<number> {
  const { values } = parseCommandLine(args, {
    model: { type: 'string', short: 'm' },
    backend: { type: 'string' },
    threads: { type: 'string' },
    P: { type: 'string' },
    weights: { type: 'string' },
    'prompt-tokens': { type: 'string' },
    'new-tokens': { type: 'string' },
    runs: { type: 'string' },
    json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    console.log(benchHelp);
    return 0;
  }
  const dir = resolve(requiredOption('model', values.model));
  const backend = (values.backend ?? DEFAULT_BACKEND) as BackendName;
  if (!BACKENDS.includes(backend)) throw new UsageError(`--backend must be one of ${BACKENDS.join(', ')}, got "${backend}"`);
  const threads = values.threads === undefined ? undefined : numberOption('threads', values.threads, 1, { integer: true, min: 1 });
  const promptTokens = numberOption('prompt-tokens', values['prompt-tokens'], 64, { integer: true, min: 1 });
  const newTokens = numberOption('new-tokens', values['new-tokens'], 64, { integer: true, min: 1 });
  const runs = numberOption('runs', values.runs, 3, { integer: true, min: 1 });

  const weights = weightsFrom(values, backend);
  const loadStarted = performance.now();
  const model = await loadModel(dir, { backend, threads, P: streamsFrom(values), weights, maxContext: promptTokens + newTokens });
  const loadSeconds = (performance.now() - loadStarted) / 1000;
  try {
    const { vocabSize, parscaleN: P } = model.config;
    // a fixed pseudo-random prompt, the same for every run and backend
    const prompt = Array.from({ length: promptTokens }, (_, i) => (i * 7919 + 13) % vocabSize);
    const prefillSeconds: number[] = [];
    const decodeStepMs: number[] = [];
    const decodeSeconds: number[] = [];
    for (let run = 0; run < runs; run++) {
      const sequence = model.newSequence();
      let started = performance.now();
      let logits = model.forward(sequence, prompt).logits[0];
      prefillSeconds.push((performance.now() - started) / 1000);
      const steps: number[] = [];
      for (let i = 0; i < newTokens; i++) {
        started = performance.now();
        logits = model.forward(sequence, [argmax(logits)]).logits[0];
        steps.push(performance.now() - started);
      }
      decodeStepMs.push(median(steps));
      decodeSeconds.push(steps.reduce((a, b) => a + b, 0) / 1000);
    }
    const msPerToken = median(decodeStepMs);
    const weightBytes = model instanceof WasmModel ? model.weightBytes : null;
    const report: Record<string, number | string | null> = {
      model: dir,
      backend: model.backend,
      P,
      threads: model instanceof WasmModel ? model.threads : 1,
      weights: model instanceof WasmModel ? model.weights : 'stored',
      load_seconds: loadSeconds,
      prompt_tokens: promptTokens,
      new_tokens: newTokens,
      runs,
      prefill_tokens_per_s: promptTokens / median(prefillSeconds),
      decode_tokens_per_s: newTokens / median(decodeSeconds),
      decode_ms_per_token: msPerToken,
      peak_rss_bytes: process.resourceUsage().maxRSS * 1024,
      weight_bytes: weightBytes,
    };
    if (model instanceof WasmModel) {
      const roof = model.measureRooflines();
      const bytesPerSecond = model.weightBytes / (msPerToken / 1000);
      report.wasm_memory_bytes = model.memoryBytes;
      report.decode_weight_bytes_per_s = bytesPerSecond;
      report.read_loop_bytes_per_s_1_thread = roof.readBytesPerSecond;
      report.read_loop_bytes_per_s_all_threads = roof.readBytesPerSecondAllThreads;
      report.madd_peak_per_s_1_thread = roof.maddPerSecond;
      report.madd_peak_per_s_all_threads = roof.maddPerSecondAllThreads;
      // the multiply-add the products use: fused in the relaxed-SIMD build, else the same loop
      report.kernel_build = roof.kernelBuild;
      report.fma_peak_per_s_1_thread = roof.fmaPerSecond;
      report.fma_peak_per_s_all_threads = roof.fmaPerSecondAllThreads;
      // the fast-path targets as shares of those limits (multiply-adds: productMultiplyAdds)
      const decodeMadds = productMultiplyAdds(model.config, P) / (msPerToken / 1000);
      // prefill: every prompt position in every stream, the LM head once
      const prefillMadds = (productMultiplyAdds(model.config, P) * promptTokens - (promptTokens - 1) * model.config.vocabSize * model.config.hiddenSize) / median(prefillSeconds);
      report.decode_read_share_of_read_loop_all_threads = bytesPerSecond / roof.readBytesPerSecondAllThreads;
      report.decode_madd_per_s = decodeMadds;
      report.decode_madd_share_of_madd_peak_all_threads = decodeMadds / roof.maddPerSecondAllThreads;
      report.decode_madd_share_of_fma_peak_all_threads = decodeMadds / roof.fmaPerSecondAllThreads;
      report.prefill_madd_per_s = prefillMadds;
      report.prefill_madd_share_of_madd_peak_all_threads = prefillMadds / roof.maddPerSecondAllThreads;
      report.prefill_madd_share_of_fma_peak_all_threads = prefillMadds / roof.fmaPerSecondAllThreads;
    }
    if (values.json) {
      console.log(JSON.stringify(report));
    } else {
      for (const [key, value] of Object.entries(report)) {
        const text = typeof value === 'number' && !Number.isInteger(value) ? value.toPrecision(4) : String(value);
        console.log(`${key.padEnd(32)} ${text}`);
      }
    }
  } finally {
    model.dispose();
  }
  return 0;
}
