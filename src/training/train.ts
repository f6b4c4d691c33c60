// The training loop: AdamW, warm-up + cosine schedule, gradient clipping and accumulation,
// periodic validation, resumable checkpoints, a JSONL log. Three ways to start:
//   from scratch        a new model of any P (the paper's stage 1 when P = 1)
//   --init DIR          stage 2 / recycling: an existing model gets P streams (new prefixes and a
//                       new aggregation layer); with freezeBackbone only those new parts train
//   --resume DIR        continue a run saved by this loop, exactly where it stopped
// Everything random (init, data order) comes from the seed; the data RNG state is checkpointed,
// so a resumed run computes the same losses as an uninterrupted one.
import { appendFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ModelConfig } from '../checkpoint/config.ts';
import {
  type SaveDType,
  loadModelParams,
  readTrainerState,
  restoreOptimizer,
  saveModel,
  saveTrainerState,
} from './checkpoint.ts';
import { sampleBatch, tokenizeText, validationBatches } from './data.ts';
import { batchLoss } from './model.ts';
import { AdamW, clipGradients, learningRate } from './optimizer.ts';
import { ParallelGradients, shareParams } from './parallel.ts';
import { learnBpe, tokenizerConfigJson, tokenizerJson } from './tokenizer.ts';
import { KERNEL_CHOICES, type KernelChoice } from './wasm-products.ts';
import { type ModelParams, Rng, addStreams, initParams, parameterEntries, zerosLike } from './weights.ts';

export interface TrainOptions {
  /** training text (UTF-8) */
  data: string;
  /** validation text; default: the last 2% of the training text's tokens (then not trained on) */
  val?: string;
  /** output folder: the Hugging Face model plus the trainer state */
  out: string;
  /** start from this model folder (stage 2 / recycling) */
  init?: string;
  /** continue the run saved in this folder */
  resume?: string;
  /** streams P */
  P: number;
  /** prefix entries per stream, layer and KV head (parscale_n_tokens) */
  prefixTokens: number;
  /** parscale_attn_smooth */
  attnSmooth: number;
  /** train only the prefixes and the aggregation layer; all other weights stay bit-identical */
  freezeBackbone: boolean;
  /** total optimizer updates of the run */
  steps: number;
  /** sequences per micro-batch */
  batch: number;
  /** micro-batches per update (gradient accumulation) */
  accumulate: number;
  /** tokens per training sequence */
  context: number;
  /** peak learning rate */
  lr: number;
  /** cosine floor as a fraction of lr */
  minLrRatio: number;
  /** warm-up updates (default: 5% of steps, at least 1) */
  warmup?: number;
  weightDecay: number;
  /** global gradient-norm clip (0: none) */
  clip: number;
  beta1: number;
  beta2: number;
  seed: number;
  log?: string;
  /** validate every N updates (and at the end); 0: only at the end */
  evalEvery: number;
  /** validation windows of `context` tokens */
  evalWindows: number;
  /** write a resumable checkpoint every N updates (and at the end); 0: only at the end */
  saveEvery: number;
  /** model.safetensors dtype */
  dtype: SaveDType;
  // shape of a model from scratch
  layers: number;
  hidden: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
  /** vocabulary size of a new byte-level BPE tokenizer: 257 = bytes only, more = learned merges */
  vocabSize: number;
  ropeTheta: number;
  tied: boolean;
  /** stop (with a resumable checkpoint) after this update, as if interrupted; for tests */
  stopAfter?: number;
  /** no progress lines on stderr */
  quiet: boolean;
  /** threads computing gradients (data parallel; 1 = only the calling thread) */
  threads: number;
  /**
   * kernels of the matrix products: 'wasm' (WebAssembly SIMD, src/training/wasm-products.ts) or
   * 'ts' (the TypeScript kernels). They differ by f32 rounding only; saved with the run, so a
   * resumed run uses the kernels it started with.
   */
  kernels: KernelChoice;
  /**
   * Dynamic P (src/training/stream-sets.ts): with init and freezeBackbone, train one stream set
   * per P listed here and store each next to the backbone in `out`, instead of one model of P.
   */
  streamSets?: number[];
}

/** Ways for a caller to take over part of the loop (dynamic P writes only the stream sets). */
export interface TrainHooks {
  /** Called instead of writing the model folder and trainer state to options.out. */
  save?: (step: number, config: ModelConfig, params: ModelParams) => Promise<void>;
}

export const DEFAULT_OPTIONS: Omit<TrainOptions, 'data' | 'out'> = {
  P: 1,
  prefixTokens: 16,
  attnSmooth: 0.01,
  freezeBackbone: false,
  steps: 1000,
  batch: 8,
  accumulate: 1,
  context: 128,
  lr: 3e-3,
  minLrRatio: 0.1,
  weightDecay: 0.1,
  clip: 1.0,
  beta1: 0.9,
  beta2: 0.95,
  seed: 1,
  evalEvery: 100,
  evalWindows: 32,
  saveEvery: 200,
  dtype: 'F32',
  layers: 4,
  hidden: 128,
  heads: 4,
  kvHeads: 2,
  intermediate: 384,
  vocabSize: 1024,
  ropeTheta: 10000,
  tied: true,
  quiet: false,
  threads: 1,
  kernels: 'wasm',
};

export interface StepLog {
  step: number;
  loss: number;
  lr: number;
  grad_norm: number;
  tokens: number;
  tokens_per_s: number;
  elapsed_s: number;
  val_loss?: number;
}

export interface TrainResult {
  config: ModelConfig;
  params: ModelParams;
  logs: StepLog[];
  finalValLoss: number | null;
}

function configFor(o: TrainOptions, vocabSize: number): ModelConfig {
  if (o.hidden % o.heads !== 0) throw new Error(`--hidden ${o.hidden} is not a multiple of --heads ${o.heads}`);
  if (o.heads % o.kvHeads !== 0) throw new Error(`--heads ${o.heads} is not a multiple of --kv-heads ${o.kvHeads}`);
  if ((o.hidden / o.heads) % 2 !== 0) throw new Error(`head dim ${o.hidden / o.heads} must be even (RoPE)`);
  return {
    modelType: 'qwen2_parscale',
    hiddenSize: o.hidden,
    intermediateSize: o.intermediate,
    numLayers: o.layers,
    numHeads: o.heads,
    numKvHeads: o.kvHeads,
    headDim: o.hidden / o.heads,
    vocabSize,
    rmsNormEps: 1e-6,
    ropeTheta: o.ropeTheta,
    maxPositionEmbeddings: Math.max(2048, o.context),
    tieWordEmbeddings: o.tied,
    torchDtype: 'float32',
    bosTokenId: null,
    eosTokenIds: [vocabSize - 1], // <|endoftext|>
    parscaleN: o.P,
    parscaleNTokens: o.prefixTokens,
    parscaleAttnSmooth: o.attnSmooth,
  };
}

function readJson(file: string): Record<string, unknown> {
  if (!existsSync(file)) throw new Error(`${file}: not found`);
  return JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
}

/** Run (or continue) a training run; writes the model and trainer state to options.out. */
export async function train(input: TrainOptions, hooks: TrainHooks = {}): Promise<TrainResult> {
  let options = input;
  let config: ModelConfig;
  let params: ModelParams;
  let tokJson: Record<string, unknown>;
  let tokConfig: Record<string, unknown>;
  let startStep = 0;
  let tokensSeen = 0;
  const dataRng = new Rng(options.seed ^ 0x9e3779b9);
  let resumeDir: string | null = null;

  if (options.resume !== undefined) {
    // continue with the saved options; only where to write, how far to go and logging may change
    resumeDir = options.resume;
    const state = readTrainerState(resumeDir);
    const saved = state.options as unknown as TrainOptions;
    options = {
      ...saved,
      // runs saved before the kernels option existed computed every product in TypeScript
      kernels: saved.kernels ?? 'ts',
      out: input.out,
      steps: input.steps,
      log: input.log,
      stopAfter: input.stopAfter,
      quiet: input.quiet,
      threads: input.threads,
      resume: input.resume,
    };
    ({ config, params } = await loadModelParams(resumeDir));
    tokJson = readJson(join(resumeDir, 'tokenizer.json'));
    tokConfig = readJson(join(resumeDir, 'tokenizer_config.json'));
    startStep = state.step;
    tokensSeen = state.tokensSeen;
    dataRng.state = state.rngState;
  } else if (options.init !== undefined) {
    // ParScale stage 2 / recycling: keep the backbone, add P streams
    const loaded = await loadModelParams(options.init);
    params = loaded.params;
    const sameStreams =
      loaded.config.parscaleN === options.P && (options.P === 1 || loaded.config.parscaleNTokens === options.prefixTokens);
    config = {
      ...loaded.config,
      modelType: 'qwen2_parscale',
      parscaleN: options.P,
      parscaleNTokens: options.prefixTokens,
      parscaleAttnSmooth: options.attnSmooth,
    };
    if (!sameStreams) {
      if (options.P > 1) addStreams(params, config, new Rng(options.seed), 0.02);
      else {
        for (const layer of params.layers) layer.prefixKeys = layer.prefixValues = null;
        params.aggregation = null;
      }
    }
    tokJson = readJson(join(options.init, 'tokenizer.json'));
    const tokConfigFile = join(options.init, 'tokenizer_config.json');
    tokConfig = existsSync(tokConfigFile) ? readJson(tokConfigFile) : {};
  } else {
    const text = readFileSync(options.data, 'utf8');
    const vocabulary = learnBpe(text, Math.max(0, options.vocabSize - 257));
    tokJson = tokenizerJson(vocabulary);
    tokConfig = tokenizerConfigJson(vocabulary, Math.max(2048, options.context));
    config = configFor(options, vocabulary.tokens.length);
    params = initParams(config, options.seed);
  }
  if (!KERNEL_CHOICES.includes(options.kernels)) {
    throw new Error(`kernels: expected one of ${KERNEL_CHOICES.join(', ')}, got ${JSON.stringify(options.kernels)}`);
  }
  if (options.freezeBackbone && config.parscaleN === 1) {
    throw new Error('--freeze-backbone leaves nothing to train with P = 1 (no prefixes, no aggregation layer)');
  }

  // data
  let trainTokens = tokenizeText(readFileSync(options.data, 'utf8'), tokJson, tokConfig);
  let valTokens: Int32Array;
  if (options.val !== undefined) {
    valTokens = tokenizeText(readFileSync(options.val, 'utf8'), tokJson, tokConfig);
  } else {
    const cut = Math.floor(trainTokens.length * 0.98);
    valTokens = trainTokens.slice(cut);
    trainTokens = trainTokens.subarray(0, cut);
  }
  for (const tokens of [trainTokens, valTokens]) {
    for (const id of tokens) if (id >= config.vocabSize) throw new Error(`token id ${id} ≥ vocab_size ${config.vocabSize}`);
  }
  const valBatches = validationBatches(valTokens, options.evalWindows, options.batch, options.context);

  // the weights go to shared memory, where gradient worker threads can read them
  const shared = shareParams(params);
  params = shared.params;
  const workers = await ParallelGradients.create(config, params, shared.buffer, Math.max(1, options.threads));

  // optimizer: every tensor has moments; frozen ones are never updated
  const entries = parameterEntries(config, params);
  const grads = zerosLike(params);
  const gradEntries = parameterEntries(config, grads);
  const trainable = entries.map((e) => !options.freezeBackbone || e.role !== 'backbone');
  const trainParams = entries.filter((_, i) => trainable[i]);
  const trainGrads = gradEntries.filter((_, i) => trainable[i]);
  const optimizer = new AdamW({ beta1: options.beta1, beta2: options.beta2, eps: 1e-8, weightDecay: options.weightDecay }, entries);
  if (resumeDir !== null) restoreOptimizer(resumeDir, config, params, optimizer, startStep);
  const schedule = {
    lr: options.lr,
    warmupSteps: options.warmup ?? Math.max(1, Math.round(options.steps * 0.05)),
    totalSteps: options.steps,
    minLrRatio: options.minLrRatio,
  };

  const saveFolder = async (step: number): Promise<void> => {
    const vocabSize = config.vocabSize;
    await saveModel(options.out, config, params, {
      dtype: options.dtype,
      tokenizerJson: tokJson,
      tokenizerConfigJson: tokConfig,
      generationConfig: {
        bos_token_id: config.bosTokenId,
        eos_token_id: vocabSize - 1,
        do_sample: true,
        temperature: 0.8,
        top_k: 40,
        max_new_tokens: 200,
        transformers_version: '4.47.0',
      },
    });
    const saved: Record<string, unknown> = { ...options };
    delete saved.resume;
    delete saved.stopAfter;
    await saveTrainerState(
      options.out,
      config,
      params,
      optimizer,
      { step, rngState: dataRng.state, tokensSeen, options: saved },
      options.dtype,
    );
  };

  const save = hooks.save === undefined ? saveFolder : (step: number) => hooks.save!(step, config, params);

  const validate = (): number => {
    let sum = 0;
    let count = 0;
    for (const batch of valBatches) {
      const n = batch.batchSize * batch.length;
      sum += batchLoss(config, params, batch, { kernels: options.kernels }) * n;
      count += n;
    }
    return count === 0 ? NaN : sum / count;
  };

  const log = (entry: StepLog): void => {
    if (options.log !== undefined) appendFileSync(options.log, JSON.stringify(entry) + '\n');
  };
  if (options.log !== undefined && resumeDir === null) writeFileSync(options.log, '');

  if (!options.quiet) {
    const count = trainParams.reduce((s, e) => s + e.data.length, 0);
    const total = entries.reduce((s, e) => s + e.data.length, 0);
    process.stderr.write(
      `training P=${config.parscaleN} L=${config.numLayers} H=${config.hiddenSize} I=${config.intermediateSize} ` +
        `heads=${config.numHeads}/${config.numKvHeads} V=${config.vocabSize} kernels=${options.kernels}: ` +
        `${count} of ${total} parameters trainable; ` +
        `${trainTokens.length} training tokens, ${valTokens.length} validation tokens\n`,
    );
  }

  const logs: StepLog[] = [];
  const lastStep = Math.min(options.steps, options.stopAfter ?? options.steps);
  const started = performance.now();
  let finalValLoss: number | null = null;
  for (let step = startStep + 1; step <= lastStep; step++) {
    const t0 = performance.now();
    for (const e of gradEntries) e.data.fill(0);
    let loss = 0;
    for (let a = 0; a < options.accumulate; a++) {
      const batch = sampleBatch(trainTokens, options.batch, options.context, dataRng);
      const microLoss = await workers.lossAndGradients(batch, grads, {
        freezeBackbone: options.freezeBackbone,
        lossScale: 1 / options.accumulate,
        kernels: options.kernels,
      });
      loss += microLoss / options.accumulate;
    }
    const gradNorm = clipGradients(trainGrads, options.clip);
    const lr = learningRate(schedule, step);
    optimizer.update(trainParams, trainGrads, lr);
    const tokens = options.batch * options.accumulate * options.context;
    tokensSeen += tokens;
    const seconds = (performance.now() - t0) / 1000;
    const entry: StepLog = {
      step,
      loss,
      lr,
      grad_norm: gradNorm,
      tokens: tokensSeen,
      tokens_per_s: tokens / seconds,
      elapsed_s: (performance.now() - started) / 1000,
    };
    if ((options.evalEvery > 0 && step % options.evalEvery === 0) || step === options.steps) {
      entry.val_loss = validate();
      if (step === options.steps) finalValLoss = entry.val_loss;
    }
    logs.push(entry);
    log(entry);
    if (!options.quiet) {
      process.stderr.write(
        `step ${step}/${options.steps}  loss ${loss.toFixed(4)}` +
          (entry.val_loss !== undefined ? `  val ${entry.val_loss.toFixed(4)}` : '') +
          `  lr ${lr.toExponential(2)}  |g| ${gradNorm.toFixed(2)}  ${entry.tokens_per_s.toFixed(0)} tok/s\n`,
      );
    }
    if ((options.saveEvery > 0 && step % options.saveEvery === 0) || step === lastStep) await save(step);
  }
  if (startStep >= lastStep) await save(startStep);
  await workers.close();
  return { config, params, logs, finalValLoss };
}
