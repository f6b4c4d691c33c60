// `parscale train`: the command-line entry of the training loop (src/training/train.ts).
import { parseArgs } from 'node:util';
import { UsageError } from '../cli/args.ts';
import { readTrainerState } from './checkpoint.ts';
import { trainStreamSets } from './stream-sets.ts';
import { DEFAULT_OPTIONS, type TrainOptions, train } from './train.ts';
import { KERNEL_CHOICES, type KernelChoice } from './wasm-products.ts';

export const trainHelp = `parscale train --data FILE.txt --out DIR [options]

Train a Qwen2-ParScale model on a text file on the CPU; writes a Hugging Face model folder
(config.json, model.safetensors, tokenizer.json, ...) that also holds the state to --resume.

  --data FILE.txt        training text (UTF-8)
  --out DIR              output model folder
  --val FILE.txt         validation text (default: the last 2% of --data)
  --init DIR             start from this model (ParScale stage 2): keep its weights and
                         tokenizer, add --P streams (new prefixes and aggregation layer)
  --freeze-backbone      with --init: train only the prefixes and the aggregation layer
  --resume DIR           continue the run saved in DIR (same options; --steps may grow)
  --P N                  parallel streams (default ${DEFAULT_OPTIONS.P})
  --P 2,4,8              with --init and --freeze-backbone: dynamic P, one stream set per P
                         trained on the same frozen backbone, one after another; --out gets the
                         backbone's files unchanged plus streams-P{N}.safetensors per set, named
                         in config.json "parscale_stream_sets" (docs/training.md)
  --stream-sets          write stream sets as above even for a single --P N; with --out equal
                         to --init this adds a set to an existing (dynamic) folder in place
  --prefix-tokens N      prefix entries per stream and layer (default ${DEFAULT_OPTIONS.prefixTokens})
  --attn-smooth X        aggregation smoothing (default ${DEFAULT_OPTIONS.attnSmooth})
  --steps N              optimizer updates (default ${DEFAULT_OPTIONS.steps})
  --batch N              sequences per micro-batch (default ${DEFAULT_OPTIONS.batch})
  --accumulate N         micro-batches per update (default ${DEFAULT_OPTIONS.accumulate})
  --context N            tokens per sequence (default ${DEFAULT_OPTIONS.context})
  --lr X                 peak learning rate (default ${DEFAULT_OPTIONS.lr}); warm-up, then cosine
  --warmup N             warm-up updates (default 5% of --steps)
  --weight-decay X       AdamW decoupled weight decay on matrices (default ${DEFAULT_OPTIONS.weightDecay})
  --clip X               global gradient-norm clip, 0 = none (default ${DEFAULT_OPTIONS.clip})
  --seed N               seed of the init and the data order (default ${DEFAULT_OPTIONS.seed})
  --log FILE.jsonl       one JSON object per update (step, loss, tokens_per_s, ...)
  --eval-every N         validation loss every N updates (default ${DEFAULT_OPTIONS.evalEvery})
  --save-every N         resumable checkpoint every N updates (default ${DEFAULT_OPTIONS.saveEvery})
  --dtype f32|bf16       model.safetensors dtype (default f32)
  --layers N --hidden N --heads N --kv-heads N --intermediate N
                         shape of a new model (default ${DEFAULT_OPTIONS.layers}, ${DEFAULT_OPTIONS.hidden}, ${DEFAULT_OPTIONS.heads}, ${DEFAULT_OPTIONS.kvHeads}, ${DEFAULT_OPTIONS.intermediate})
  --vocab-size N         new byte-level BPE tokenizer: 257 = bytes only (default ${DEFAULT_OPTIONS.vocabSize})
  --untied               separate lm_head (default: tied to the embedding)
  --threads N            threads computing gradients (default ${DEFAULT_OPTIONS.threads})
  --kernels wasm|ts      matrix products in WebAssembly SIMD or in TypeScript (default
                         ${DEFAULT_OPTIONS.kernels}); saved with the run, --resume keeps it
  --quiet                no progress on stderr
`;

/** The CLI's UsageError (name 'UsageError'): src/cli/main.ts prints "parscale train: <message>". */
function usageError(message: string): Error {
  return new UsageError(message);
}

const numberFlags = {
  P: 'P',
  'prefix-tokens': 'prefixTokens',
  'attn-smooth': 'attnSmooth',
  steps: 'steps',
  batch: 'batch',
  accumulate: 'accumulate',
  context: 'context',
  lr: 'lr',
  warmup: 'warmup',
  'weight-decay': 'weightDecay',
  clip: 'clip',
  seed: 'seed',
  'eval-every': 'evalEvery',
  'save-every': 'saveEvery',
  layers: 'layers',
  hidden: 'hidden',
  heads: 'heads',
  'kv-heads': 'kvHeads',
  intermediate: 'intermediate',
  'vocab-size': 'vocabSize',
  threads: 'threads',
} as const satisfies Record<string, keyof TrainOptions>;

/** Integer-valued flags; the others (lr, attn-smooth, weight-decay, clip) may be fractions. */
const integerFlags = new Set(Object.keys(numberFlags).filter((f) => !['lr', 'attn-smooth', 'weight-decay', 'clip'].includes(f)));

/** Parse `parscale train` arguments into TrainOptions; bad flags throw a UsageError. */
export function parseTrainArgs(args: string[]): TrainOptions | 'help' {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        data: { type: 'string' },
        out: { type: 'string' },
        val: { type: 'string' },
        init: { type: 'string' },
        resume: { type: 'string' },
        log: { type: 'string' },
        dtype: { type: 'string' },
        kernels: { type: 'string' },
        'freeze-backbone': { type: 'boolean' },
        'stream-sets': { type: 'boolean' },
        untied: { type: 'boolean' },
        quiet: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
        ...Object.fromEntries(Object.keys(numberFlags).map((flag) => [flag, { type: 'string' as const }])),
      },
    });
  } catch (error) {
    throw usageError(`${(error as Error).message.split('\n')[0]}`);
  }
  const v = parsed.values as Record<string, string | boolean | undefined>;
  if (v.help === true) return 'help';
  if (typeof v.out !== 'string') throw usageError('--out DIR is required');
  if (typeof v.data !== 'string' && typeof v.resume !== 'string') throw usageError('--data FILE.txt is required');
  if (v.init !== undefined && v.resume !== undefined) throw usageError('--init and --resume exclude each other');
  if (v['freeze-backbone'] === true && v.init === undefined && v.resume === undefined) {
    throw usageError('--freeze-backbone needs --init DIR (a backbone to freeze)');
  }
  const options: TrainOptions = { ...DEFAULT_OPTIONS, data: (v.data as string) ?? '', out: v.out };
  // dynamic P: a comma list of stream counts, or --stream-sets with one
  const list = typeof v.P === 'string' && v.P.includes(',');
  if (list || v['stream-sets'] === true) {
    const parts = String(v.P ?? '').split(',');
    const counts = parts.map((part) => Number(part.trim()));
    if (v.P === undefined || parts.some((part, i) => part.trim() === '' || !Number.isInteger(counts[i]) || counts[i] < 2)) {
      throw usageError(`--P expects stream counts ≥ 2 for stream sets, e.g. --P 2,4,8; got "${v.P ?? ''}"`);
    }
    if (new Set(counts).size !== counts.length) throw usageError(`--P lists a stream count twice: "${v.P}"`);
    if (v.init === undefined || v['freeze-backbone'] !== true) throw usageError('stream sets (--P 2,4,8 or --stream-sets) need --init DIR and --freeze-backbone');
    options.streamSets = counts;
    delete v.P;
  }
  for (const [flag, key] of Object.entries(numberFlags)) {
    const raw = v[flag];
    if (raw === undefined) continue;
    const value = Number(raw);
    const integer = integerFlags.has(flag);
    const ok = Number.isFinite(value) && (integer ? Number.isInteger(value) && value >= 0 : value >= 0);
    if (!ok || raw === '') throw usageError(`--${flag} expects a ${integer ? 'whole number' : 'number'} ≥ 0, got "${raw}"`);
    (options as unknown as Record<string, number>)[key] = value;
  }
  for (const flag of ['P', 'threads', 'steps', 'batch', 'accumulate', 'context', 'layers', 'hidden', 'heads', 'kv-heads', 'intermediate'] as const) {
    if (v[flag] !== undefined && Number(v[flag]) < 1) throw usageError(`--${flag} must be at least 1, got ${v[flag]}`);
  }
  if (v['vocab-size'] !== undefined && options.vocabSize < 257) {
    throw usageError(`--vocab-size must be at least 257 (256 bytes + <|endoftext|>), got ${options.vocabSize}`);
  }
  if (v.dtype !== undefined) {
    const dtype = String(v.dtype).toLowerCase();
    if (dtype !== 'f32' && dtype !== 'bf16') throw usageError(`--dtype expects f32 or bf16, got "${v.dtype}"`);
    options.dtype = dtype === 'f32' ? 'F32' : 'BF16';
  }
  if (v.kernels !== undefined) {
    if (v.resume !== undefined) throw usageError('--kernels cannot change on --resume (the run keeps the kernels it was saved with)');
    const kernels = String(v.kernels).toLowerCase();
    if (!(KERNEL_CHOICES as readonly string[]).includes(kernels)) {
      throw usageError(`--kernels expects ${KERNEL_CHOICES.join(' or ')}, got "${v.kernels}"`);
    }
    options.kernels = kernels as KernelChoice;
  }
  if (typeof v.val === 'string') options.val = v.val;
  if (typeof v.init === 'string') options.init = v.init;
  if (typeof v.resume === 'string') {
    options.resume = v.resume;
    // the saved run's length, unless --steps extends it
    if (v.steps === undefined) options.steps = readTrainerState(v.resume).options.steps as number;
  }
  if (typeof v.log === 'string') options.log = v.log;
  options.freezeBackbone = v['freeze-backbone'] === true;
  options.tied = v.untied !== true;
  options.quiet = v.quiet === true;
  return options;
}

/** `parscale train ...`: returns the process exit code. */
export async function trainCommand(args: string[]): Promise<number> {
  const options = parseTrainArgs(args);
  if (options === 'help') {
    process.stdout.write(trainHelp);
    return 0;
  }
  if (options.streamSets !== undefined) {
    const { dir, results } = await trainStreamSets(options);
    for (const { P, file, result } of results) {
      const last = result.logs.at(-1);
      process.stderr.write(
        `P = ${P}: saved ${file}` +
          (last !== undefined ? ` after step ${last.step} (loss ${last.loss.toFixed(4)}` : '') +
          (result.finalValLoss !== null ? `, validation loss ${result.finalValLoss.toFixed(4)})` : last !== undefined ? ')' : '') +
          '\n',
      );
    }
    process.stderr.write(`saved ${dir}: one backbone, stream sets P = ${results.map((r) => r.P).join(', ')}\n`);
    return 0;
  }
  const result = await train(options);
  const last = result.logs.at(-1);
  process.stderr.write(
    `saved ${options.out}` +
      (last !== undefined ? ` after step ${last.step} (loss ${last.loss.toFixed(4)}` : '') +
      (result.finalValLoss !== null ? `, validation loss ${result.finalValLoss.toFixed(4)})` : last !== undefined ? ')' : '') +
      '\n',
  );
  return 0;
}
