// Errors of checkpoint loading. Each has a stable `code` for programs and a message for people
// that names the file (absolute path), the tensor or config key, what was expected and what
// was found.

export type CheckpointErrorCode =
  | 'FILE_NOT_FOUND'
  | 'CONFIG_MISSING_KEY'
  | 'CONFIG_INVALID'
  | 'CONFIG_UNSUPPORTED'
  | 'SAFETENSORS_TRUNCATED'
  | 'SAFETENSORS_HEADER'
  | 'SAFETENSORS_OFFSETS'
  | 'SAFETENSORS_DTYPE'
  | 'INDEX_INVALID'
  | 'SHARD_MISSING'
  | 'TENSOR_MISSING'
  | 'TENSOR_UNEXPECTED'
  | 'TENSOR_SHAPE';

export class CheckpointError extends Error {
  override name = 'CheckpointError';
  readonly file?: string;
  readonly tensor?: string;
  readonly key?: string;

  constructor(
    readonly code: CheckpointErrorCode,
    message: string,
    where: { file?: string; tensor?: string; key?: string } = {},
  ) {
    super(message);
    this.file = where.file;
    this.tensor = where.tensor;
    this.key = where.key;
  }
}

/** The error an AbortSignal produces, named 'AbortError' as fetch and node-llama-cpp do. */
export function abortError(): Error {
  return new DOMException('The operation was aborted', 'AbortError');
}
