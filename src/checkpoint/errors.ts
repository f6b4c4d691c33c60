// Errors of checkpoint loading. Each has a stable `code` for programs and a message for people
// that names the file (absolute path), the tensor or config key, what was expected and what
// was found. Programs should branch on `code`, never on the message text.

export type CheckpointErrorCode =
  /** a folder or file that should exist does not */
  | 'FILE_NOT_FOUND'
  /** a file exists but cannot be read (permissions, a folder where a file should be, …) */
  | 'FILE_UNREADABLE'
  /** config.json lacks a required key */
  | 'CONFIG_MISSING_KEY'
  /** config.json is not JSON, or a key has a wrong type or an inconsistent value */
  | 'CONFIG_INVALID'
  /** config.json asks for something this runtime does not implement (rope_scaling, …) */
  | 'CONFIG_UNSUPPORTED'
  /** a safetensors file is shorter than its header says */
  | 'SAFETENSORS_TRUNCATED'
  /** a safetensors header is malformed (length, JSON, entry fields) */
  | 'SAFETENSORS_HEADER'
  /** data_offsets out of range, overlapping, or not matching shape × dtype size */
  | 'SAFETENSORS_OFFSETS'
  /** a tensor stored in a dtype other than F32, F16 or BF16 */
  | 'SAFETENSORS_DTYPE'
  /** model.safetensors.index.json is malformed or disagrees with the shards */
  | 'INDEX_INVALID'
  /** a shard named by the index does not exist */
  | 'SHARD_MISSING'
  /** a tensor the config requires is not stored */
  | 'TENSOR_MISSING'
  /** a tensor is stored that the config does not explain */
  | 'TENSOR_UNEXPECTED'
  /** a tensor's shape differs from the one the config implies */
  | 'TENSOR_SHAPE'
  /** a P was asked for that the folder has no streams for (see config.json "parscale_stream_sets") */
  | 'STREAM_SET_UNKNOWN';

export interface CheckpointErrorLocation {
  /** absolute path of the file (or folder) at fault */
  file?: string;
  /** the tensor at fault */
  tensor?: string;
  /** the config.json key at fault */
  key?: string;
  cause?: unknown;
}

export class CheckpointError extends Error {
  override name = 'CheckpointError';
  readonly code: CheckpointErrorCode;
  readonly file?: string;
  readonly tensor?: string;
  readonly key?: string;

  constructor(code: CheckpointErrorCode, message: string, where: CheckpointErrorLocation = {}) {
    super(message, where.cause === undefined ? undefined : { cause: where.cause });
    this.code = code;
    this.file = where.file;
    this.tensor = where.tensor;
    this.key = where.key;
  }
}

/** The error an aborted load throws: named 'AbortError', as fetch and node-llama-cpp do. */
export function abortError(): Error {
  return new DOMException('The operation was aborted', 'AbortError');
}
