// Assertions for CheckpointErrors: the right code, and a message that names the file (absolute
// path) and the tensor or config key, with those also set as fields for programs.
import assert from 'node:assert/strict';
import { isAbsolute } from 'node:path';
import { CheckpointError, type CheckpointErrorCode } from '../../src/checkpoint/errors.ts';

export interface ExpectedCheckpointError {
  code: CheckpointErrorCode;
  /** absolute path: must equal error.file and appear in the message */
  file?: string;
  /** must equal error.tensor and appear, quoted, in the message */
  tensor?: string;
  /** must equal error.key and appear, quoted, in the message */
  key?: string;
  /** further patterns the message must match */
  message?: RegExp[];
}

export function assertCheckpointError(error: unknown, expected: ExpectedCheckpointError): true {
  assert.ok(error instanceof CheckpointError, `expected a CheckpointError, got ${error instanceof Error ? error.stack : String(error)}`);
  assert.equal(error.code, expected.code, `code of: ${error.message}`);
  if (expected.file !== undefined) {
    assert.ok(isAbsolute(expected.file), `test bug: ${expected.file} is not absolute`);
    assert.equal(error.file, expected.file, `file of: ${error.message}`);
    assert.ok(error.message.includes(expected.file), `the message should name ${expected.file}: ${error.message}`);
  }
  if (expected.tensor !== undefined) {
    assert.equal(error.tensor, expected.tensor, `tensor of: ${error.message}`);
    assert.ok(error.message.includes(`"${expected.tensor}"`), `the message should name tensor "${expected.tensor}": ${error.message}`);
  }
  if (expected.key !== undefined) {
    assert.equal(error.key, expected.key, `key of: ${error.message}`);
    assert.ok(error.message.includes(`"${expected.key}"`), `the message should name key "${expected.key}": ${error.message}`);
  }
  for (const pattern of expected.message ?? []) assert.match(error.message, pattern);
  return true;
}

export function throwsCheckpointError(run: () => unknown, expected: ExpectedCheckpointError): void {
  assert.throws(run, (error: unknown) => assertCheckpointError(error, expected));
}

export async function rejectsWithCheckpointError(promise: Promise<unknown>, expected: ExpectedCheckpointError): Promise<void> {
  await assert.rejects(promise, (error: unknown) => assertCheckpointError(error, expected));
}
