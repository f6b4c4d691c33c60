// Dynamic P: train several stream sets (prefixes + aggregation layer, e.g. P = 2, 4, 8) on one
// frozen backbone and store them next to it (the format: src/checkpoint/stream-sets.ts), as the
// paper did for ParScale-Qwen-3B-P{2,4,8}-Python. Each P is an ordinary frozen-backbone run of
// train() with the same data and options, one after another; only its stream set is written.
//
// The output folder is the input folder's files copied byte for byte (config.json gains the
// "parscale_stream_sets" entries), so the backbone tensors are bit-identical by construction.
// With --out equal to --init the sets are added to that folder in place.
import { copyFileSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { readConfig } from '../checkpoint/config.ts';
import { availableStreamCounts, readStreamSetSpecs } from '../checkpoint/stream-sets.ts';
import { addStreamSetToConfig, saveStreamSet } from './checkpoint.ts';
import { type TrainOptions, type TrainResult, train } from './train.ts';

/** Files of a training folder that belong to a run, not to the model: never copied. */
const RUN_FILES = new Set(['trainer_state.json', 'optimizer.safetensors']);

export interface StreamSetsResult {
  /** the output folder (absolute) */
  dir: string;
  /** every set trained, in the order asked */
  results: { P: number; file: string; result: TrainResult }[];
}

/** Train one stream set per P of options.streamSets on the frozen backbone options.init; write them to options.out. */
export async function trainStreamSets(options: TrainOptions): Promise<StreamSetsResult> {
  const counts = options.streamSets ?? [];
  if (options.init === undefined || !options.freezeBackbone) {
    throw new Error('stream sets are trained on a frozen backbone: they need --init DIR and --freeze-backbone');
  }
  if (options.resume !== undefined) throw new Error('stream-set runs cannot be resumed (--resume); run the missing P again');
  if (counts.length === 0) throw new Error('no stream counts given (--P 2,4,8)');
  const init = resolve(options.init);
  const out = resolve(options.out);
  const config = readConfig(init);
  const have = availableStreamCounts(config, readStreamSetSpecs(init, config));
  for (const [i, P] of counts.entries()) {
    if (!Number.isInteger(P) || P < 2) throw new Error(`a stream set needs P ≥ 2 (P = 1 is the backbone alone), got ${P}`);
    if (counts.indexOf(P) !== i) throw new Error(`P = ${P} is listed twice`);
    if (have.includes(P)) throw new Error(`${init} already has streams for P = ${P} (it has P = ${have.join(', ')}); leave P = ${P} out`);
  }

  if (out !== init) copyModelFolder(init, out);
  const results: StreamSetsResult['results'] = [];
  for (const P of counts) {
    let file = '';
    // the backbone is read from --init each time: every set starts from the same frozen weights
    const result = await train(
      { ...options, P, init, out, saveEvery: 0, streamSets: undefined },
      {
        save: async (_step, setConfig, params) => {
          file = saveStreamSet(out, setConfig, params, options.dtype);
          // config.json names the set only once its file is complete
          addStreamSetToConfig(out, setConfig, file);
        },
      },
    );
    results.push({ P, file: join(out, file), result });
  }
  return { dir: out, results };
}

/** Copy a model folder's files (not its training-run state) byte for byte. */
function copyModelFolder(from: string, to: string): void {
  mkdirSync(to, { recursive: true });
  for (const name of readdirSync(from)) {
    const source = join(from, name);
    if (RUN_FILES.has(name) || !statSync(source).isFile()) continue;
    copyFileSync(source, join(to, name));
  }
}
