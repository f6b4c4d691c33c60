// The WebAssembly backend against the oracles: the PyTorch fixtures and the TypeScript reference
// on random checkpoints of every weight format, incremental decoding, chunked prefill, threads.
import assert from 'node:assert/strict';
import { closeSync, ftruncateSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { dumpModel } from '../src/cli/dump.ts';
import { loadCheckpoint, openCheckpoint } from '../src/checkpoint/load.ts';
import { streamSetConfig } from '../src/checkpoint/stream-sets.ts';
import { addStreamSetToConfig, saveStreamSet } from '../src/training/checkpoint.ts';
import { randomWeights } from './helpers/random-model.ts';
import { parseConfig } from '../src/checkpoint/config.ts';
import { checkWasmMemory, plannedStreamSets } from '../src/wasm-bridge/plan.ts';
import { loadModel } from '../src/load-model.ts';
import { ReferenceModel } from '../src/reference/model.ts';
import { WasmModel } from '../src/wasm-bridge/model.ts';
import { activationTolerance, dequantizedCheckpoint } from './helpers/dequantized.ts';
import { tinyConfigJson, writeSyntheticCheckpoint } from './helpers/synthetic-checkpoint.ts';
import { compareRows, fixtureNames } from './helpers/fixtures.ts';
import { expectedTensors as expectedTensorsOf } from '../src/checkpoint/config.ts';

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

// ---- int8 weights -------------------------------------------------------------------------------

const argmax = (row: ArrayLike<number>) => {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
};

/**
 * What int8 may cost, relative to a row's largest |logit|. A weight moves by at most s/2, s ≈ max|w| / 127
 * over its group, so for the uniform weights of these random models (rms max/√3) a product's relative
 * rms error is δ = √3 / (127 · √12) = 1/254. A logit ends a chain of 4L + 1 quantized stages (q/k/v,
 * o, gate/up, down per layer, then the LM head); if their errors added up linearly it would carry
 * (4L + 1)·δ rms, and the largest of a row's V errors stays within 3 of those. Bugs (a wrong group,
 * row or scale) move logits by O(1) of the row max and cannot pass.
 */
const int8Tolerance = (layers: number) => (3 * (4 * layers + 1)) / 254;

describe('wasm backend with int8 weights', () => {
  const cases: { P: number; dtype: 'BF16' | 'F16' | 'F32' }[] = [];
  for (const P of [1, 2, 4, 8]) for (const dtype of ['BF16', 'F16', 'F32'] as const) cases.push({ P, dtype });
  const randomCheckpoint = ({ P, dtype }: (typeof cases)[number]) => {
    const config = tinyConfigJson({ parscale_n: P, hidden_size: 24, intermediate_size: 40, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 50, tie_word_embeddings: P % 2 === 0 });
    const { dir } = writeSyntheticCheckpoint(config, { dtype, seed: P * 7 + dtype.length });
    made.push(dir);
    return dir;
  };
  const tokens = [3, 14, 15, 9, 2, 6, 5, 35, 8, 9, 7, 9];

  for (const c of cases) {
    it(`is "quantize, then the same forward" (with int16 activations): P = ${c.P}, ${c.dtype} against the reference on the dequantized weights`, async () => {
      const checkpoint = await loadCheckpoint(randomCheckpoint(c));
      const reference = ReferenceModel.fromCheckpoint(dequantizedCheckpoint(checkpoint));
      const wasm = await WasmModel.fromCheckpoint(checkpoint, { threads: 2, maxChunk: 3, maxContext: 40, weights: 'int8' });
      models.push(wasm);
      assert.equal(wasm.weights, 'int8');
      const want = reference.forward(reference.newSequence(), tokens, { allLogits: true });
      const got = wasm.forward(wasm.newSequence(), tokens, { allLogits: true });
      const tolerance = activationTolerance(checkpoint.config.numLayers);
      got.logits.forEach((row, t) => assert.ok(relativeError(row, want.logits[t]) < tolerance, `position ${t}: ${relativeError(row, want.logits[t])} (tolerance ${tolerance})`));
      const sequence = wasm.newSequence();
      wasm.forward(sequence, tokens.slice(0, 5));
      for (let t = 5; t < tokens.length; t++) assert.ok(relativeError(wasm.forward(sequence, [tokens[t]]).logits[0], got.logits[t]) < 1e-5, `decode at ${t}`);
    });
  }

  it('stays within the derived tolerance of the unquantized reference on random checkpoints (P = 1…8, all dtypes), top-1 agreeing', async (t: TestContext) => {
    let worst = 0;
    let agree = 0;
    let total = 0;
    for (const c of cases) {
      const checkpoint = await loadCheckpoint(randomCheckpoint(c));
      const reference = ReferenceModel.fromCheckpoint(checkpoint);
      const wasm = await WasmModel.fromCheckpoint(checkpoint, { threads: 2, maxContext: 40, weights: 'int8' });
      models.push(wasm);
      const want = reference.forward(reference.newSequence(), tokens, { allLogits: true });
      const got = wasm.forward(wasm.newSequence(), tokens, { allLogits: true });
      got.logits.forEach((row, position) => {
        const error = relativeError(row, want.logits[position]);
        worst = Math.max(worst, error);
        assert.ok(error <= int8Tolerance(checkpoint.config.numLayers), `P = ${c.P}, ${c.dtype}, position ${position}: max |Δlogit| = ${error.toFixed(4)} of the row max`);
        agree += Number(argmax(row) === argmax(want.logits[position]));
        total++;
      });
    }
    t.diagnostic(`int8 vs reference, random checkpoints: max |Δlogit| ${(100 * worst).toFixed(2)} % of the row max (tolerance ${(100 * int8Tolerance(2)).toFixed(1)} %); top-1 agreement ${agree}/${total}`);
    assert.ok(agree >= 0.9 * total, `top-1 agreement ${agree}/${total}`);
  });

  it('stays within the derived tolerance of the PyTorch fixtures; greedy tokens reported', async (t: TestContext) => {
    let worst = 0;
    let agree = 0;
    let total = 0;
    const sameGreedy: string[] = [];
    for (const name of fixtureNames) {
      const dir = join(fixturesDir, name);
      const expected = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8'));
      const model = await loadModel(dir, { backend: 'wasm', threads: 2, weights: 'int8' });
      models.push(model);
      const got = dumpModel(model, dir, expected.prompt_ids, expected.decode_ids.length, false);
      for (const [rows, want] of [[got.prefill_logits, expected.prefill_logits], [got.decode_logits.slice(0, 1), expected.decode_logits.slice(0, 1)]] as const) {
        rows.forEach((row, r) => {
          const error = relativeError(row, want[r]);
          worst = Math.max(worst, error);
          assert.ok(error <= int8Tolerance(model.config.numLayers), `${name} row ${r}: max |Δlogit| = ${error.toFixed(4)} of the row max`);
          agree += Number(argmax(row) === argmax(want[r]));
          total++;
        });
      }
      if (JSON.stringify(got.decode_ids) === JSON.stringify(expected.decode_ids)) sameGreedy.push(name);
    }
    t.diagnostic(
      `int8 vs PyTorch fixtures: max |Δlogit| ${(100 * worst).toFixed(2)} % of the row max; top-1 agreement ${agree}/${total}; ` +
        `identical greedy continuations in ${sameGreedy.length}/${fixtureNames.length} fixtures`,
    );
    assert.ok(agree >= 0.9 * total, `top-1 agreement ${agree}/${total}`);
  });

  it('the reference backend refuses weights: int8 (it always computes with the stored weights)', async () => {
    const dir = join(fixturesDir, fixtureNames[0]);
    await assert.rejects(loadModel(dir, { backend: 'reference', weights: 'int8' }), {
      name: 'RangeError',
      message: /weights "int8" is an option of the wasm backend; the reference backend always computes with the stored weights/,
    });
  });

  it('1 thread and 2 threads give identical int8 logits', async () => {
    const { dir } = writeSyntheticCheckpoint(tinyConfigJson({ parscale_n: 4, hidden_size: 64, intermediate_size: 72 }), { dtype: 'BF16', seed: 6 });
    made.push(dir);
    const checkpoint = await loadCheckpoint(dir);
    const one = await WasmModel.fromCheckpoint(checkpoint, { threads: 1, weights: 'int8' });
    const two = await WasmModel.load(dir, { threads: 2, weights: 'int8' });
    models.push(one, two);
    const a = one.forward(one.newSequence(), [1, 2, 3, 4, 5], { allLogits: true });
    const b = two.forward(two.newSequence(), [1, 2, 3, 4, 5], { allLogits: true });
    a.logits.forEach((row, t) => assert.deepEqual(row, b.logits[t]));
  });

  it('the memory plan is what the model allocates (never less, within 1 %)', async () => {
    for (const weights of ['stored', 'int8'] as const) {
      const { dir } = writeSyntheticCheckpoint(tinyConfigJson({ parscale_n: 2, hidden_size: 64, intermediate_size: 96, vocab_size: 3000, max_position_embeddings: 512 }), { dtype: 'BF16', seed: 9 });
      made.push(dir);
      const model = await WasmModel.load(dir, { threads: 1, weights });
      models.push(model);
      const plan = checkWasmMemory(model.config, () => 'BF16', { weights });
      // the model's count starts after the module's data; the plan's 16-byte slack per buffer is generous
      assert.ok(plan.totalBytes >= model.memoryBytes && plan.totalBytes <= 1.01 * model.memoryBytes + 65536, `${weights}: plan ${plan.totalBytes}, allocated ${model.memoryBytes}`);
      assert.ok(plan.weightBytes >= model.weightBytes && plan.weightBytes <= model.weightBytes + 16 * 64, `${weights}: plan ${plan.weightBytes} weight bytes, allocated ${model.weightBytes}`);
    }
  });

  it('the memory plan is what the model allocates with stream sets too (dynamic P: every set, the cache for the largest P and prefix)', async () => {
    // own P = 2 with 3 prefix tokens; a P = 4 set with the longest prefix (7) in bf16, a P = 8 set with 2 in f32
    const { dir, config } = writeSyntheticCheckpoint(tinyConfigJson({ parscale_n: 2, parscale_n_tokens: 3, hidden_size: 64, intermediate_size: 96, vocab_size: 3000, max_position_embeddings: 512 }), { dtype: 'BF16', seed: 10 });
    made.push(dir);
    for (const [P, T, dtype] of [[4, 7, 'BF16'], [8, 2, 'F32']] as const) {
      const set = streamSetConfig(config, P, T, 0.05);
      addStreamSetToConfig(dir, set, saveStreamSet(dir, set, randomWeights(set, P), dtype));
    }
    const opened = openCheckpoint(dir);
    assert.deepEqual(opened.streamSets.map((set) => set.P), [4, 8]);
    const dtypeOf = (name: string) => opened.tensors.get(name)!.dtype;
    const streamSets = plannedStreamSets(opened.streamSets);
    for (const weights of ['stored', 'int8'] as const) {
      const model = await WasmModel.load(dir, { threads: 1, weights });
      models.push(model);
      assert.deepEqual(model.streamSets, [1, 2, 4, 8]);
      const plan = checkWasmMemory(model.config, dtypeOf, { weights, streamSets });
      assert.equal(plan.streams, 8);
      assert.equal(plan.prefixTokens, 7);
      const c = model.config;
      assert.equal(plan.cacheBytes, 2 * c.numLayers * 8 * c.numKvHeads * c.headDim * 4 * (7 + plan.maxContext));
      assert.ok(plan.totalBytes >= model.memoryBytes && plan.totalBytes <= 1.01 * model.memoryBytes + 65536, `${weights}: plan ${plan.totalBytes}, allocated ${model.memoryBytes}`);
      assert.ok(plan.weightBytes >= model.loadedWeightBytes && plan.weightBytes <= model.loadedWeightBytes + 16 * 96, `${weights}: plan ${plan.weightBytes} weight bytes, allocated ${model.loadedWeightBytes}`);
      // without the stream sets the plan would be too small: they are what it counts beyond the backbone
      assert.ok(checkWasmMemory(model.config, dtypeOf, { weights }).totalBytes < model.memoryBytes, `${weights}: a plan without the stream sets is smaller than the allocation`);
      // every P runs in that memory
      for (const P of model.streamSets) model.withStreams(P).forward(model.withStreams(P).newSequence(), [1, 2, 3]);
      assert.equal(model.memoryBytes, model.withStreams(8).memoryBytes);
    }
  });

  it('reports a NaN weight with the tensor and row instead of quantizing it', async () => {
    const { dir } = writeSyntheticCheckpoint(tinyConfigJson(), { dtype: 'F32', seed: 2 });
    made.push(dir);
    const checkpoint = await loadCheckpoint(dir);
    const up = checkpoint.tensors.get('model.layers.1.mlp.up_proj.weight')!;
    new Float32Array(up.data.buffer, up.data.byteOffset, up.data.byteLength / 4)[8 * 5 + 2] = NaN; // row 5 of [12, 8]
    await assert.rejects(WasmModel.fromCheckpoint(checkpoint, { threads: 2, weights: 'int8' }), /model\.layers\.1\.mlp\.up_proj\.weight: row 5 has a non-finite weight/);
  });
});

describe('the memory budget names int8 when stored weights do not fit', () => {
  // ParScale-3B-P8: H 2048, I 11008, L 36, 16/2 heads, V 151936, tied, T 48: 6.2 GB of bf16.
  const config3bJson = tinyConfigJson({
    hidden_size: 2048, intermediate_size: 11008, num_hidden_layers: 36, num_attention_heads: 16, num_key_value_heads: 2,
    vocab_size: 151936, tie_word_embeddings: true, max_position_embeddings: 1024, parscale_n: 8, parscale_n_tokens: 48, parscale_attn_smooth: 0.1,
  });

  it('refuses ParScale-3B-P8 with stored weights, before reading any weight, and says int8 fits with the numbers', async () => {
    // A real folder whose one safetensors file has the full header but no data: a sparse file, so
    // nothing is written or allocated. Loading must fail on the budget, from the header alone.
    const dir = mkdtempSync(join(tmpdir(), 'parscale-3b-'));
    made.push(dir);
    writeFileSync(join(dir, 'config.json'), JSON.stringify(config3bJson));
    const header: Record<string, unknown> = {};
    let offset = 0;
    for (const [name, shape] of parseConfigShapes()) {
      const bytes = shape.reduce((a, b) => a * b, 1) * 2;
      header[name] = { dtype: 'BF16', shape, data_offsets: [offset, offset + bytes] };
      offset += bytes;
    }
    const json = Buffer.from(JSON.stringify(header));
    const fd = openSync(join(dir, 'model.safetensors'), 'w');
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(json.length));
    writeSync(fd, length);
    writeSync(fd, json);
    ftruncateSync(fd, 8 + json.length + offset);
    closeSync(fd);
    assert.ok(offset > 6e9, `${offset} bytes of weights`);
    await assert.rejects(
      WasmModel.load(dir, { threads: 1 }),
      (error: Error) => {
        assert.match(error.message, /needs 6\.\d\d GiB with its stored bf16 weights \(weights 5\.\d\d GiB \+ KV cache for 1024 positions 0\.\d\d GiB/);
        assert.match(error.message, /over the 4 GiB a wasm32 memory can address; with int8 weights \(--weights int8, or the option weights: 'int8'\) it needs 3\.\d\d GiB with int8 weights \(weights 3\.\d\d GiB .*\), which fits/);
        return true;
      },
    );
  });

  function parseConfigShapes() {
    return expectedTensorsOf(parseConfig(config3bJson, 'config.json'));
  }

  it('with int8 weights and too long a cache, says how many positions fit', () => {
    const config = parseConfig({ ...config3bJson, max_position_embeddings: 32768 }, 'config.json');
    assert.throws(() => checkWasmMemory(config, () => 'BF16', { weights: 'int8', maxContext: 4096 }), /use a smaller maxContext \(--max-context\): at most 1\d{3} positions fit/);
    assert.throws(() => checkWasmMemory(config, () => 'BF16', { weights: 'stored', maxContext: 4096 }), /at most 0 positions fit with stored weights, 1\d{3} with int8 weights \(--weights int8/);
  });
});
