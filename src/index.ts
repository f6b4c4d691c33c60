// parscale: run ParScale and Qwen2 language models on the CPU.
export type { ForwardOptions, ForwardResult, LanguageModel, SequenceState } from './backend.ts';
export { type ModelConfig, expectedTensors } from './checkpoint/config.ts';
export { CheckpointError } from './checkpoint/errors.ts';
export { type Checkpoint, type LoadOptions, type LoadProgress, type StreamSet, loadCheckpoint } from './checkpoint/load.ts';
export { STREAM_SETS_KEY, type StreamSetSpec, readStreamSetSpecs, streamSetFileName } from './checkpoint/stream-sets.ts';
export { BACKENDS, type BackendName, type LoadModelOptions, loadModel } from './load-model.ts';
export { ReferenceModel } from './reference/model.ts';
export type { FinishReason, GenerateOptions, GenerationPiece, GenerationResult } from './generation/generate.ts';
export { Sampler, type SamplingOptions } from './generation/sampling.ts';
export { Tokenizer } from './tokenizer/tokenizer.ts';
export { type ChatMessage, Generation, type TextGenerateOptions, TextModel } from './text-model.ts';
// training (src/training; docs/training.md)
export { DEFAULT_OPTIONS as DEFAULT_TRAIN_OPTIONS, type StepLog, type TrainOptions, type TrainResult, train } from './training/train.ts';
