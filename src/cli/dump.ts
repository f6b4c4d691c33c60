// `parscale dump`: the oracle export. Other backends compare their logits against this file.
// Output shape (keep the names: other projects read them):
//   prompt_ids      the ids given with --ids
//   prefill_logits  [prompt position][vocab]  from one forward pass over the whole prompt
//   decode_ids      K greedy next tokens, chosen one by one through the KV cache
//   decode_logits   [K][vocab]: the logits each of them was chosen from (the first is the
//                   prompt's last row of prefill_logits)
//   with --hidden:  stream_hidden [position][P][H] (each stream's state after the final norm),
//                   aggregation_weights [position][P] (P > 1), and the same two for the decode
//                   steps as decode_stream_hidden / decode_aggregation_weights
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { ForwardResult, LanguageModel } from '../backend.ts';
import { argmax } from '../generation/sampling.ts';
import { BACKENDS, type BackendName, loadModel } from '../load-model.ts';
import { UsageError, idListOption, numberOption, parseCommandLine, requiredOption } from './args.ts';
import { streamsFrom, weightsFrom } from './common.ts';

export const dumpHelp = `Usage: parscale dump --model DIR --ids 1,2,3 [--decode K] [--hidden] [--backend NAME] [--P N] [--weights stored|int8] --out FILE.json

Write the model's logits for a prompt of token ids, as JSON, for comparing backends.

Options:
  --model DIR       checkpoint folder (config.json + safetensors)
  --ids LIST        prompt token ids, comma-separated
  --decode K        also choose K greedy tokens incrementally with the cache (default 0)
  --hidden          also write each stream's final hidden state and the aggregation weights
  --backend NAME    ${BACKENDS.join(' | ')} (default reference: the oracle)
  --threads N       threads for the wasm backend (default: all cores)
  --P N             streams to run (dynamic P: 1, the model's own P or a stream set)
  --weights W       wasm backend: stored (default) or int8 (matrices quantized at load)
  --out FILE        where to write the JSON ("-" for stdout)
  -h, --help        show this help`;

export interface DumpResult {
  model: string;
  backend: string;
  P: number;
  prompt_ids: number[];
  prefill_logits: number[][];
  decode_ids: number[];
  decode_logits: number[][];
  stream_hidden?: number[][][];
  aggregation_weights?: number[][];
  decode_stream_hidden?: number[][][];
  decode_aggregation_weights?: number[][];
}

const toArrays = (rows: Float32Array[]): number[][] => rows.map((row) => Array.from(row));
const splitStreams = (rows: Float32Array[], P: number, H: number): number[][][] =>
  rows.map((row) => Array.from({ length: P }, (_, p) => Array.from(row.subarray(p * H, (p + 1) * H))));

/** Prefill the prompt, then decode K greedy tokens one at a time. */
export function dumpModel(model: LanguageModel, modelDir: string, ids: number[], decode: number, hidden: boolean): DumpResult {
  const { parscaleN: P, hiddenSize: H } = model.config;
  const sequence = model.newSequence();
  const prefill = model.forward(sequence, ids, { allLogits: true, hidden });
  const result: DumpResult = {
    model: modelDir,
    backend: model.backend,
    P,
    prompt_ids: ids,
    prefill_logits: toArrays(prefill.logits),
    decode_ids: [],
    decode_logits: [],
  };
  if (hidden) {
    result.stream_hidden = splitStreams(prefill.streamHidden!, P, H);
    if (P > 1) result.aggregation_weights = toArrays(prefill.aggregationWeights!);
    result.decode_stream_hidden = [];
    if (P > 1) result.decode_aggregation_weights = [];
  }
  let last: ForwardResult = prefill;
  for (let step = 0; step < decode; step++) {
    const logits = last.logits[last.logits.length - 1];
    const next = argmax(logits);
    result.decode_ids.push(next);
    result.decode_logits.push(Array.from(logits));
    if (step + 1 === decode) break; // the last chosen token need not be fed
    last = model.forward(sequence, [next], { hidden });
    if (hidden) {
      result.decode_stream_hidden!.push(...splitStreams(last.streamHidden!, P, H));
      if (P > 1) result.decode_aggregation_weights!.push(...toArrays(last.aggregationWeights!));
    }
  }
  return result;
}

export async function dumpCommand(args: string[]): Promise<number> {
  const { values } = parseCommandLine(args, {
    model: { type: 'string' },
    ids: { type: 'string' },
    decode: { type: 'string' },
    hidden: { type: 'boolean' },
    backend: { type: 'string' },
    threads: { type: 'string' },
    P: { type: 'string' },
    weights: { type: 'string' },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    console.log(dumpHelp);
    return 0;
  }
  const modelDir = resolve(requiredOption('model', values.model));
  const ids = idListOption('ids', values.ids);
  const decode = numberOption('decode', values.decode, 0, { integer: true, min: 0 });
  const out = requiredOption('out', values.out);
  const backend = (values.backend ?? 'reference') as BackendName;
  if (!BACKENDS.includes(backend)) throw new UsageError(`--backend must be one of ${BACKENDS.join(', ')}, got "${backend}"`);

  const threads = values.threads === undefined ? undefined : numberOption('threads', values.threads, 1, { integer: true, min: 1 });
  const weights = weightsFrom(values, backend);
  const model = await loadModel(modelDir, { backend, threads, P: streamsFrom(values), weights });
  try {
    const vocab = model.config.vocabSize;
    const bad = ids.find((id) => id >= vocab);
    if (bad !== undefined) throw new UsageError(`--ids: token id ${bad} is outside the vocabulary [0, ${vocab})`);
    const limit = model.config.maxPositionEmbeddings;
    if (ids.length + decode > limit) {
      throw new UsageError(`prompt (${ids.length}) + --decode (${decode}) exceeds max_position_embeddings (${limit})`);
    }
    const json = JSON.stringify(dumpModel(model, modelDir, ids, decode, values.hidden ?? false));
    if (out === '-') process.stdout.write(json + '\n');
    else writeFileSync(out, json + '\n');
  } finally {
    model.dispose();
  }
  return 0;
}
