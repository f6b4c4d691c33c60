// What every backend (the TypeScript reference, the WebAssembly fast path) offers the rest of
// the project: generation, the CLI and `dump` are written once against this interface.
import type { ModelConfig } from './checkpoint/config.ts';

export interface ForwardOptions {
  /** Return logits for every position of the chunk, not only the last (dump needs them). */
  allLogits?: boolean;
  /** Also return each stream's final hidden state and the aggregation weights per position. */
  hidden?: boolean;
}

export interface ForwardResult {
  /** [positions][vocab]: one entry per position when allLogits, else only the last position. */
  logits: Float32Array[];
  /** [positions] of (P · H): stream p's final hidden state (after model.norm) at p · H. */
  streamHidden?: Float32Array[];
  /** [positions] of (P): the smoothed aggregation weights (only when P > 1). */
  aggregationWeights?: Float32Array[];
}

/** The per-sequence state of a model: P streams × L layers of keys and values. */
export interface SequenceState {
  /** Real tokens already in the cache; the next token gets this position. */
  readonly length: number;
}

export interface LanguageModel {
  readonly config: ModelConfig;
  /** A short name for messages and benchmarks: "reference" or "wasm". */
  readonly backend: string;
  /** A fresh sequence: every stream's cache holds just its prefix. */
  newSequence(): SequenceState;
  /**
   * Feed `tokens` (a prompt chunk, or one token when decoding) at positions
   * state.length .. state.length + n − 1, append their keys/values to the cache and return logits.
   */
  forward(state: SequenceState, tokens: readonly number[], options?: ForwardOptions): ForwardResult;
  /** Free what the backend holds (worker threads, memory). The reference holds nothing. */
  dispose(): void;
  /**
   * Dynamic P: every stream count this loaded backbone can run, ascending: 1 (the backbone
   * alone), the checkpoint's own parscale_n, and each stream set stored with it.
   */
  readonly streamSets: readonly number[];
  /**
   * The same loaded backbone running P streams (one of streamSets; a CheckpointError with code
   * STREAM_SET_UNKNOWN otherwise). Nothing is loaded or copied: only the prefixes and the
   * aggregation layer differ. A sequence belongs to the model (and so the P) that made it.
   */
  withStreams(P: number): LanguageModel;
}
