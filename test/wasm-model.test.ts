// The WebAssembly backend against the oracles: the PyTorch fixtures and the TypeScript reference
// on random checkpoints of every weight format, incremental decoding, chunked prefill, threads.
import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { dumpModel } from '../src/cli/dump.ts';
import { loadCheckpoint } from '../src/checkpoint/load.ts';
import { loadModel } from '../src/load-model.ts';
import { ReferenceModel } from '../src/reference/model.ts';
import { WasmModel } from '../src/wasm-bridge/model.ts';
import { tinyConfigJson, writeSyntheticCheckpoint } from './helpers/synthetic-checkpoint.ts';
import { compareRows, fixtureNames } from './helpers/fixtures.ts';

const fixturesDir = fileURLToPath(new URL('./fixtures/', import.meta.url));
const made: string[] = [];
const models: { dispose(): void }[] = [];
after(() => {
  models.forEach((m) => m.dispose());
  made.forEach((dir) => rmSync(dir, { recursive: true, force: true }));
});

/** Max |a − b| over a row, relative to the row's largest magnitude (at least 1). */
function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let scale = 1;
  let worst = 0;
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]));
  for (let i = 0; i < b.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst / scale;
}

describe('wasm backend against the PyTorch fixtures', () => {
  for (const name of fixtureNames) {
    it(name, async () => {
      const dir = join(fixturesDir, name);
      const expected = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8'));
      const model = await loadModel(dir, { backend: 'wasm', threads: 2 });
      models.push(model);
      const got = dumpModel(model, dir, expected.prompt_ids, expected.decode_ids.length, true);
      // same tolerance as the reference: float32 accumulation in another order than PyTorch's
      compareRows('prefill_logits', got.prefill_logits, expected.prefill_logits);
      compareRows('decode_logits', got.decode_logits, expected.decode_logits);
      compareRows('stream_hidden', got.stream_hidden!.flat(), expected.stream_hidden.flat());
      assert.deepEqual(got.decode_ids, expected.decode_ids);
    });
  }
});

describe('wasm backend against the reference', () => {
  for (const P of [1, 2, 4, 8]) {
    for (const dtype of ['BF16', 'F16', 'F32'] as const) {
      it(`random checkpoint, P = ${P}, ${dtype}: prefill, decode and chunked prefill agree`, async () => {
        const config = tinyConfigJson({ parscale_n: P, hidden_size: 24, intermediate_size: 40, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 50, tie_word_embeddings: P % 2 === 0 });
        const { dir } = writeSyntheticCheckpoint(config, { dtype, seed: P * 7 + dtype.length });
        made.push(dir);
        const checkpoint = await loadCheckpoint(dir);
        const reference = ReferenceModel.fromCheckpoint(checkpoint);
        const wasm = await WasmModel.fromCheckpoint(checkpoint, { threads: 2, maxChunk: 3, maxContext: 40 });
        models.push(wasm);
        const tokens = [3, 14, 15, 9, 2, 6, 5, 35, 8, 9, 7, 9];
        const want = reference.forward(reference.newSequence(), tokens, { allLogits: true });
        // the prompt runs in chunks of 3 here, so the chunking is tested too
        const got = wasm.forward(wasm.newSequence(), tokens, { allLogits: true });
        got.logits.forEach((row, t) => assert.ok(relativeError(row, want.logits[t]) < 1e-4, `position ${t}`));
        // incremental decoding on the fast path equals its own prefill
        const sequence = wasm.newSequence();
        wasm.forward(sequence, tokens.slice(0, 5));
        for (let t = 5; t < tokens.length; t++) {
          const step = wasm.forward(sequence, [tokens[t]]);
          assert.ok(relativeError(step.logits[0], got.logits[t]) < 1e-5, `decode at ${t}`);
        }
      });
    }
  }

  it('1 thread and 2 threads give identical logits', async () => {
    const { dir } = writeSyntheticCheckpoint(tinyConfigJson({ parscale_n: 4, hidden_size: 32, intermediate_size: 72 }), { dtype: 'BF16', seed: 5 });
    made.push(dir);
    const checkpoint = await loadCheckpoint(dir);
    const one = await WasmModel.fromCheckpoint(checkpoint, { threads: 1 });
    const two = await WasmModel.fromCheckpoint(checkpoint, { threads: 2 });
    models.push(one, two);
    const tokens = [1, 2, 3, 4, 5, 6];
    const a = one.forward(one.newSequence(), tokens, { allLogits: true });
    const b = two.forward(two.newSequence(), tokens, { allLogits: true });
    a.logits.forEach((row, t) => assert.deepEqual(row, b.logits[t]));
  });

  it('refuses, before allocating, a model whose weights and cache exceed one 4 GiB wasm memory', async () => {
    const { dir } = writeSyntheticCheckpoint(tinyConfigJson(), { seed: 4 });
    made.push(dir);
    const checkpoint = await loadCheckpoint(dir);
    await assert.rejects(WasmModel.fromCheckpoint(checkpoint, { threads: 1, maxContext: 50_000_000 }), /over the 4 GiB a wasm32 memory can address; use a smaller maxContext/);
  });

  it('refuses a sequence longer than its cache, and a stale sequence', async () => {
    const { dir } = writeSyntheticCheckpoint(tinyConfigJson(), { seed: 3 });
    made.push(dir);
    const wasm = await WasmModel.fromCheckpoint(await loadCheckpoint(dir), { threads: 1, maxContext: 4 });
    models.push(wasm);
    const first = wasm.newSequence();
    assert.throws(() => wasm.forward(first, [1, 2, 3, 4, 5]), /more than this model's KV cache holds \(4/);
    wasm.newSequence();
    assert.throws(() => wasm.forward(first, [1]), /no longer valid/);
  });
});
