// The generation loop: prefill the prompt, then sample one token at a time through the KV cache,
// streaming whole characters, until an end-of-sequence token, a stop string, the token limit,
// the model's context limit or an abort.
import type { LanguageModel } from '../backend.ts';
import { abortError } from '../checkpoint/errors.ts';
import type { Tokenizer } from '../tokenizer/tokenizer.ts';
import { TextStreamer } from '../tokenizer/stream.ts';
import { Sampler, type SamplingOptions } from './sampling.ts';

export interface GenerateOptions extends SamplingOptions {
  /** Most tokens to generate (default 256). */
  maxNewTokens?: number;
  /** Generation ends when one of these ids is sampled (it is not part of the text). */
  eosTokenIds?: number[];
  /** Generation ends when the text contains one of these; the text ends before it. */
  stopStrings?: string[];
  signal?: AbortSignal;
}

export type FinishReason = 'eos' | 'stop' | 'length' | 'context';

export interface GenerationPiece {
  /** New text: whole characters only, never half of a multi-byte character. */
  text: string;
  /** The token ids sampled since the previous piece (may be several when text was held back). */
  tokenIds: number[];
}

export interface GenerationResult {
  text: string;
  tokenIds: number[];
  promptTokens: number;
  generatedTokens: number;
  finishReason: FinishReason;
  /** Time to process the prompt (prefill), in milliseconds. */
  prefillMs: number;
  /** Time spent on all later tokens, in milliseconds. */
  decodeMs: number;
  prefillTokensPerSecond: number;
  /** Tokens per second after the first one (the first comes out of the prefill). */
  decodeTokensPerSecond: number;
}

const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Generate from token ids. Iterate it for pieces as they come; its return value (or
 * `collect`) gives the whole text and the counts and timings.
 */
export async function* generateFromIds(
  model: LanguageModel,
  tokenizer: Tokenizer,
  promptIds: readonly number[],
  options: GenerateOptions = {},
): AsyncGenerator<GenerationPiece, GenerationResult, undefined> {
  const { maxNewTokens = 256, eosTokenIds = model.config.eosTokenIds, stopStrings = [], signal } = options;
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0) throw new RangeError(`maxNewTokens must be a non-negative integer, got ${maxNewTokens}`);
  if (promptIds.length === 0) throw new RangeError('the prompt is empty: at least one token is needed');
  const contextLimit = model.config.maxPositionEmbeddings;
  if (promptIds.length > contextLimit) {
    throw new RangeError(`the prompt has ${promptIds.length} tokens, more than the model's max_position_embeddings (${contextLimit})`);
  }
  const sampler = new Sampler(options);
  const streamer = new TextStreamer(tokenizer);
  const stops = new StopStringMatcher(stopStrings);
  const eos = new Set(eosTokenIds);
  const history = [...promptIds]; // for the repetition penalty
  const generated: number[] = [];
  let text = '';
  let finishReason: FinishReason = 'length';

  if (signal?.aborted) throw abortError();
  const sequence = model.newSequence();
  const started = performance.now();
  let logits = model.forward(sequence, promptIds).logits[0];
  const prefillMs = performance.now() - started;
  let pendingIds: number[] = [];

  // Checkpoints often have more embedding rows than their tokenizer has tokens (Qwen2: vocab_size
  // 151936, 151665 tokens; the rest is padding). Those ids decode to nothing, so they are never
  // sampled: only the tokenizer's ids take part.
  const sampleable = Math.min(tokenizer.vocabSize, logits.length);
  while (generated.length < maxNewTokens) {
    const token = sampler.sample(logits.length > sampleable ? logits.subarray(0, sampleable) : logits, history);
    if (eos.has(token)) {
      finishReason = 'eos';
      break;
    }
    generated.push(token);
    history.push(token);
    pendingIds.push(token);
    const { emit, stopped } = stops.push(streamer.push(token));
    if (emit !== '') {
      text += emit;
      yield { text: emit, tokenIds: pendingIds };
      pendingIds = [];
    }
    if (stopped) {
      finishReason = 'stop';
      break;
    }
    if (generated.length === maxNewTokens) break;
    if (sequence.length + 1 > contextLimit) {
      finishReason = 'context';
      break;
    }
    // let timers, signals and I/O run between tokens, so an abort takes effect promptly
    await yieldToEventLoop();
    if (signal?.aborted) throw abortError();
    logits = model.forward(sequence, [token]).logits[0];
  }
  if (finishReason !== 'stop') {
    const rest = stops.flush(streamer.flush());
    if (rest !== '' || pendingIds.length > 0) {
      text += rest;
      yield { text: rest, tokenIds: pendingIds };
    }
  }
  const decodeMs = performance.now() - started - prefillMs;
  const decodedAfterFirst = Math.max(generated.length - 1, 0);
  return {
    text,
    tokenIds: generated,
    promptTokens: promptIds.length,
    generatedTokens: generated.length,
    finishReason,
    prefillMs,
    decodeMs,
    prefillTokensPerSecond: (promptIds.length / prefillMs) * 1000,
    decodeTokensPerSecond: decodedAfterFirst > 0 ? (decodedAfterFirst / decodeMs) * 1000 : 0,
  };
}

/** Drain a generation, ignoring the pieces; returns its result. */
export async function collect(generation: AsyncGenerator<GenerationPiece, GenerationResult, undefined>): Promise<GenerationResult> {
  for (;;) {
    const next = await generation.next();
    if (next.done) return next.value;
  }
}

/**
 * Cuts the streamed text at the first stop string. Text that might be the beginning of a stop
 * string is held back until the next piece shows whether it is.
 */
export class StopStringMatcher {
  private held = '';
  constructor(private readonly stops: readonly string[]) {
    if (stops.some((s) => s === '')) throw new RangeError('a stop string must not be empty');
  }

  push(piece: string): { emit: string; stopped: boolean } {
    const text = this.held + piece;
    let cut = -1;
    for (const stop of this.stops) {
      const at = text.indexOf(stop);
      if (at !== -1 && (cut === -1 || at < cut)) cut = at;
    }
    if (cut !== -1) {
      this.held = '';
      return { emit: text.slice(0, cut), stopped: true };
    }
    // hold back the longest tail of `text` that is a proper prefix of some stop string
    let keep = 0;
    for (const stop of this.stops) {
      for (let n = Math.min(stop.length - 1, text.length); n > keep; n--) {
        if (text.endsWith(stop.slice(0, n))) {
          keep = n;
          break;
        }
      }
    }
    this.held = text.slice(text.length - keep);
    return { emit: text.slice(0, text.length - keep), stopped: false };
  }

  flush(piece: string): string {
    const { emit, stopped } = this.push(piece);
    const rest = stopped ? '' : this.held;
    this.held = '';
    return emit + rest;
  }
}
