// Training data: a text file tokenized once, then random windows of context + 1 tokens drawn with
// a seeded RNG (its state is saved in checkpoints, so a resumed run draws the same windows).
import { Tokenizer } from '@huggingface/tokenizers';
import type { Batch } from './model.ts';
import type { Rng } from './weights.ts';

/** Tokenize `text` with the tokenizer.json we train with (chunked by lines: fast and identical). */
export function tokenizeText(text: string, tokenizerJson: object, tokenizerConfigJson: object): Int32Array {
  const tokenizer = new Tokenizer(tokenizerJson, tokenizerConfigJson);
  const ids: number[] = [];
  // Cut only between "x\n" and "Y" (x, Y not whitespace): there the ByteLevel pre-tokenizer
  // makes "\n" a word of its own either way, so the chunks give the same ids as the whole text
  // (test/training-loop.test.ts checks it).
  const chunkLines = 256;
  const lines = text.split(/(?<=\S\n)(?=\S)/);
  for (let i = 0; i < lines.length; i += chunkLines) {
    const chunk = lines.slice(i, i + chunkLines).join('');
    for (const id of tokenizer.encode(chunk, { add_special_tokens: false }).ids) ids.push(id);
  }
  return Int32Array.from(ids);
}

/** B random windows: inputs tokens[s .. s+n), targets tokens[s+1 .. s+n]. */
export function sampleBatch(tokens: Int32Array, batchSize: number, length: number, rng: Rng): Batch {
  if (tokens.length < length + 1) throw new Error(`the training text has ${tokens.length} tokens, fewer than --context + 1 = ${length + 1}`);
  const inputs = new Int32Array(batchSize * length);
  const targets = new Int32Array(batchSize * length);
  for (let b = 0; b < batchSize; b++) {
    const start = rng.int(tokens.length - length);
    inputs.set(tokens.subarray(start, start + length), b * length);
    targets.set(tokens.subarray(start + 1, start + length + 1), b * length);
  }
  return { inputs, targets, batchSize, length };
}

/** Fixed validation windows: up to `count` non-overlapping windows spread over the text. */
export function validationBatches(tokens: Int32Array, count: number, batchSize: number, length: number): Batch[] {
  const available = Math.floor((tokens.length - 1) / length);
  const windows = Math.min(count, available);
  const stride = Math.floor(available / Math.max(windows, 1)) * length;
  const batches: Batch[] = [];
  for (let w0 = 0; w0 < windows; w0 += batchSize) {
    const B = Math.min(batchSize, windows - w0);
    const inputs = new Int32Array(B * length);
    const targets = new Int32Array(B * length);
    for (let b = 0; b < B; b++) {
      const start = (w0 + b) * stride;
      inputs.set(tokens.subarray(start, start + length), b * length);
      targets.set(tokens.subarray(start + 1, start + length + 1), b * length);
    }
    batches.push({ inputs, targets, batchSize: B, length });
  }
  return batches;
}
