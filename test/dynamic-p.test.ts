// Dynamic P: several stream sets on one backbone, P chosen per request. Every choice of P in a
// dynamic folder must compute exactly what an ordinary single-P checkpoint of the same tensors
// computes (written with the existing saveModel), on both backends; switching P on one loaded
// model must equal loading that P alone; frozen training must leave the backbone bytes as they
// were; and every malformed folder gets its own specific error.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { LanguageModel } from '../src/backend.ts';
import { type ModelConfig, readConfig } from '../src/checkpoint/config.ts';
import { type Checkpoint, loadCheckpoint, openCheckpoint } from '../src/checkpoint/load.ts';
import { readSafetensorsHeader, writeSafetensors } from '../src/checkpoint/safetensors.ts';
import { STREAM_SETS_KEY, readStreamSetSpecs, streamSetConfig } from '../src/checkpoint/stream-sets.ts';
import { type BackendName, loadModel } from '../src/load-model.ts';
import { ReferenceModel } from '../src/reference/model.ts';
import { TextModel } from '../src/text-model.ts';
import { addStreamSetToConfig, saveModel, saveStreamSet } from '../src/training/checkpoint.ts';
import { parseTrainArgs } from '../src/training/cli.ts';
import { trainStreamSets } from '../src/training/stream-sets.ts';
import { DEFAULT_OPTIONS, type TrainOptions, train } from '../src/training/train.ts';
import { learnBpe, tokenizerConfigJson, tokenizerJson } from '../src/training/tokenizer.ts';
import type { ModelParams } from '../src/training/weights.ts';
import { WasmModel } from '../src/wasm-bridge/model.ts';
import { placementOf } from '../src/wasm-bridge/plan.ts';
import { rejectsWithCheckpointError, throwsCheckpointError } from './helpers/checkpoint-errors.ts';
import { randomWeights, tinyConfig } from './helpers/random-model.ts';
import { activationTolerance, dequantizedCheckpoint } from './helpers/dequantized.ts';
import { tinyConfigJson, writeSyntheticCheckpoint } from './helpers/synthetic-checkpoint.ts';

const repo = fileURLToPath(new URL('../', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'parscale-dynamic-p-'));
const models: { dispose(): void }[] = [];
after(() => {
  models.forEach((m) => m.dispose());
  rmSync(work, { recursive: true, force: true });
});

// A byte-level tokenizer (ids 0–255 are the bytes, 256 is <|endoftext|>) and a chat template,
// so that TextModel and the CLI can run the random models below.
const vocabulary = learnBpe('', 0);
const tokenizer = {
  tokenizerJson: tokenizerJson(vocabulary),
  tokenizerConfigJson: {
    ...tokenizerConfigJson(vocabulary, 256),
    chat_template: "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}",
  },
};

/** The backbone: P = 1, untied, GQA 4/2, vocabulary of the byte tokenizer. */
const backbone: ModelConfig = tinyConfig({ parscaleN: 1, vocabSize: vocabulary.tokens.length, tieWordEmbeddings: false, eosTokenIds: [256] });
/** The stream sets: different P and different prefix lengths, so views must not share a cache layout. */
const SETS = [
  { P: 2, T: 3, s: 0.01 },
  { P: 4, T: 5, s: 0.1 },
  { P: 8, T: 2, s: 0 },
];
const setConfig = (P: number): ModelConfig => {
  const set = SETS.find((x) => x.P === P)!;
  return streamSetConfig(backbone, P, set.T, set.s);
};

/** The backbone weights with the prefixes and aggregation layer of a random model of that P. */
function withStreams(weights: ModelParams, config: ModelConfig, seed: number): ModelParams {
  const streams = randomWeights(config, seed);
  return { ...weights, layers: weights.layers.map((l, i) => ({ ...l, prefixKeys: streams.layers[i].prefixKeys, prefixValues: streams.layers[i].prefixValues })), aggregation: streams.aggregation };
}

interface Folders {
  /** the backbone alone (an ordinary P = 1 folder) */
  backbone: string;
  /** the backbone plus streams-P{2,4,8}.safetensors */
  dynamic: string;
  /** an ordinary checkpoint per P, of the same tensors */
  single: Map<number, string>;
}

/** Write the three kinds of folder for one dtype. */
async function writeFolders(dtype: 'F32' | 'BF16'): Promise<Folders> {
  const root = join(work, dtype);
  const weights = randomWeights(backbone, 11);
  const folders: Folders = { backbone: join(root, 'backbone'), dynamic: join(root, 'dynamic'), single: new Map() };
  await saveModel(folders.backbone, backbone, weights, { dtype, ...tokenizer });
  cpSync(folders.backbone, folders.dynamic, { recursive: true });
  folders.single.set(1, folders.backbone);
  for (const { P } of SETS) {
    const config = setConfig(P);
    const params = withStreams(weights, config, 100 + P);
    addStreamSetToConfig(folders.dynamic, config, saveStreamSet(folders.dynamic, config, params, dtype));
    const single = join(root, `single-P${P}`);
    await saveModel(single, config, params, { dtype, ...tokenizer });
    folders.single.set(P, single);
  }
  return folders;
}

/** Max |a − b| over a row, relative to the row's largest magnitude (at least 1): the wasm tests' measure. */
function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let scale = 1;
  let worst = 0;
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]));
  for (let i = 0; i < b.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst / scale;
}

const TOKENS = [72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100];

/** Prefill logits of every position, then four decode steps through the cache. */
function run(model: LanguageModel): Float32Array[] {
  const sequence = model.newSequence();
  const rows = model.forward(sequence, TOKENS.slice(0, 8), { allLogits: true }).logits;
  for (const token of TOKENS.slice(8)) rows.push(model.forward(sequence, [token]).logits[0]);
  return rows;
}

const ALL_P = [1, ...SETS.map((s) => s.P)];

describe('dynamic P: each stream set equals an ordinary checkpoint of the same tensors', () => {
  for (const dtype of ['F32', 'BF16'] as const) {
    let folders: Folders;
    before(async () => {
      folders = await writeFolders(dtype);
    });

    for (const backend of ['reference', 'wasm'] as BackendName[]) {
      it(`${dtype}, ${backend}: one loaded dynamic folder, every P, prefill and decode`, async () => {
        const options = { backend, threads: 2, maxChunk: 3, maxContext: 32 };
        const dynamic = await loadModel(folders.dynamic, options);
        models.push(dynamic);
        assert.deepEqual(dynamic.streamSets, ALL_P);
        assert.equal(dynamic.config.parscaleN, 8, 'default: the largest stream set (the backbone has no streams of its own)');
        const seen: Float32Array[][] = [];
        for (const P of [4, 1, 8, 2, 4]) {
          const view = dynamic.withStreams(P);
          assert.equal(view.config.parscaleN, P);
          assert.equal(view.config.parscaleNTokens, P === 1 ? backbone.parscaleNTokens : SETS.find((s) => s.P === P)!.T);
          const single = await loadModel(folders.single.get(P)!, options);
          models.push(single);
          const got = run(view);
          const want = run(single);
          // the same arithmetic on the same values: equal to the bit on both backends
          got.forEach((row, t) => assert.deepEqual(row, want[t], `P = ${P}, row ${t}`));
          seen.push(got);
        }
        // the choice of P matters (so the comparison above could fail)
        for (let i = 1; i < 4; i++) assert.ok(relativeError(seen[i][0], seen[0][0]) > 1e-3, `P choice ${i} gives other logits`);
      });
    }

    it(`${dtype}: the wasm views agree with the reference views (the wasm tests' tolerance)`, async () => {
      const reference = await loadModel(folders.dynamic, { backend: 'reference' });
      const wasm = await loadModel(folders.dynamic, { backend: 'wasm', threads: 2, maxChunk: 5, maxContext: 32 });
      models.push(wasm);
      for (const P of ALL_P) {
        const want = run(reference.withStreams(P));
        run(wasm.withStreams(P)).forEach((row, t) => assert.ok(relativeError(row, want[t]) < 1e-4, `P = ${P}, row ${t}`));
      }
    });
  }
});

describe('dynamic P: one backbone in memory', () => {
  let folders: Folders;
  before(async () => {
    folders = await writeFolders('F32');
  });

  it('reference views share every backbone array; only prefixes and aggregation differ', async () => {
    const model = (await loadModel(folders.dynamic, { backend: 'reference', P: 2 })) as ReferenceModel;
    assert.equal(model.config.parscaleN, 2);
    const views = ALL_P.map((P) => model.withStreams(P) as ReferenceModel);
    for (const view of views) {
      assert.equal(view.weights.embedTokens, model.weights.embedTokens);
      assert.equal(view.weights.lmHead, model.weights.lmHead);
      assert.equal(view.weights.layers[1].downWeight, model.weights.layers[1].downWeight);
      assert.equal(view.withStreams(2), model, 'every view reaches the same family');
    }
    assert.equal(views[0].weights.aggregation, null);
    assert.equal(views[0].weights.layers[0].prefixKeys, null);
    assert.notEqual(views[1].weights.layers[0].prefixKeys, views[2].weights.layers[0].prefixKeys);
  });

  it('wasm views share one memory sized for all sets, and a sequence stays with its P', async () => {
    const model = (await loadModel(folders.dynamic, { backend: 'wasm', threads: 1, maxContext: 16 })) as WasmModel;
    models.push(model);
    const two = model.withStreams(2) as WasmModel;
    assert.equal(two.memoryBytes, model.memoryBytes);
    run(two);
    run(model.withStreams(1));
    assert.equal(model.memoryBytes, two.memoryBytes, 'switching P allocates nothing');
    // a decode step reads the backbone plus this P's aggregation layer
    assert.ok(two.weightBytes < model.weightBytes);
    const sequence = two.newSequence();
    assert.throws(() => model.withStreams(4).forward(sequence, [1]), /made with P = 2 streams; run it with that model \(withStreams\(2\)\)/);
    // the budget check counts every stream set: the same folder without them needs less
    const bare = (await loadModel(folders.backbone, { backend: 'wasm', threads: 1, maxContext: 16 })) as WasmModel;
    models.push(bare);
    assert.ok(bare.memoryBytes < model.memoryBytes);
  });

  it('default P: the folder own parscale_n when it has streams; withStreams and the loader list the choices', async () => {
    // an ordinary P = 2 folder (synthetic, sharded) with a P = 4 set next to it
    const dir = join(work, 'own-p2');
    const { config } = writeSyntheticCheckpoint(mkdir(dir), tinyConfigJson({ parscale_n: 2, parscale_n_tokens: 3 }), { shards: 2, dtype: 'BF16' });
    const four = streamSetConfig(config, 4, 2, 0.05);
    addStreamSetToConfig(dir, four, saveStreamSet(dir, four, randomWeights(four, 5), 'BF16'));
    const model = await loadModel(dir, { backend: 'reference' });
    assert.equal(model.config.parscaleN, 2);
    assert.deepEqual(model.streamSets, [1, 2, 4]);
    assert.equal(model.withStreams(4).config.parscaleAttnSmooth, 0.05);
    const checkpoint = await loadCheckpoint(dir);
    assert.deepEqual(checkpoint.streamSets.map((s) => [s.P, s.config.parscaleNTokens]), [[4, 2]]);
    // P = 1 keeps the backbone's own tensors, without its prefixes
    assert.equal(model.withStreams(1).config.parscaleN, 1);
  });
});

/** dequantizedCheckpoint, after checking that int8 leaves every stream-set tensor as stored. */
function dequantizedBackbone(checkpoint: Checkpoint): Checkpoint {
  for (const set of checkpoint.streamSets) {
    for (const name of set.tensors.keys()) assert.notEqual(placementOf(name, set.config, (n) => set.tensors.get(n)!.dtype, 'int8'), 'q8', `${name} of P = ${set.P}`);
  }
  return dequantizedCheckpoint(checkpoint);
}

describe('dynamic P with int8 weights (wasm)', () => {
  for (const dtype of ['F32', 'BF16'] as const) {
    let folders: Folders;
    before(async () => {
      folders = await writeFolders(dtype);
    });

    it(`${dtype}: one int8 load runs every P, each equal to the reference on the dequantized weights (within activationTolerance); the stream sets stay as stored`, async () => {
      const int8 = (await loadModel(folders.dynamic, { backend: 'wasm', threads: 2, maxChunk: 3, maxContext: 32, weights: 'int8' })) as WasmModel;
      const stored = (await loadModel(folders.dynamic, { backend: 'wasm', threads: 1, maxContext: 32 })) as WasmModel;
      models.push(int8, stored);
      assert.equal(int8.weights, 'int8');
      assert.deepEqual(int8.streamSets, ALL_P);
      assert.equal(int8.config.parscaleN, 8);
      assert.ok(int8.memoryBytes < stored.memoryBytes, `int8 ${int8.memoryBytes} bytes, stored ${stored.memoryBytes}`);
      const checkpoint = await loadCheckpoint(folders.dynamic);
      const dequantized = ReferenceModel.fromCheckpoint(dequantizedBackbone(checkpoint));
      const exact = ReferenceModel.fromCheckpoint(checkpoint);
      const bare = (model: WasmModel) => (model.withStreams(1) as WasmModel).weightBytes;
      for (const P of [4, 1, 8, 2, 4]) {
        const view = int8.withStreams(P) as WasmModel;
        assert.equal(view.config.parscaleN, P);
        assert.equal(view.weights, 'int8');
        const got = run(view);
        const want = run(dequantized.withStreams(P));
        const tolerance = activationTolerance(checkpoint.config.numLayers);
        got.forEach((row, t) => assert.ok(relativeError(row, want[t]) < tolerance, `P = ${P}, row ${t}: ${relativeError(row, want[t])} (tolerance ${tolerance})`));
        // it did quantize: the unquantized weights give other logits
        const unquantized = run(exact.withStreams(P));
        assert.ok(got.some((row, t) => relativeError(row, unquantized[t]) > 1e-5), `P = ${P}: int8 logits equal the unquantized ones`);
        // the aggregation layer of each P is kept as stored: the bytes a view adds to the backbone are the same
        assert.equal(view.weightBytes - bare(int8), (stored.withStreams(P) as WasmModel).weightBytes - bare(stored), `P = ${P}`);
      }
    });
  }
});

describe('dynamic P per request: TextModel and the CLI', () => {
  let folders: Folders;
  before(async () => {
    folders = await writeFolders('BF16');
  });

  for (const backend of ['wasm', 'reference'] as BackendName[]) {
    it(`${backend}: generate and chat with P per request equal loading that P alone (greedy)`, async () => {
      const lm = await TextModel.load(folders.dynamic, { backend, threads: 2 });
      models.push(lm);
      assert.deepEqual(lm.streamSets, ALL_P);
      const greedy = { maxNewTokens: 12, temperature: 0 };
      const texts = new Map<number, string>();
      for (const P of [2, 8, 1, 4, 2]) {
        const alone = await TextModel.load(folders.single.get(P)!, { backend, threads: 1 });
        models.push(alone);
        const want = await alone.generate('Hello', greedy).complete();
        const got = await lm.generate('Hello', { ...greedy, P }).complete();
        assert.deepEqual(got.tokenIds, want.tokenIds, `P = ${P}`);
        assert.equal(got.text, want.text);
        const messages = [{ role: 'user', content: 'Hi' }];
        assert.deepEqual((await lm.chat(messages, { ...greedy, P }).complete()).tokenIds, (await alone.chat(messages, greedy).complete()).tokenIds, `chat, P = ${P}`);
        texts.set(P, got.text);
      }
      assert.ok(new Set(texts.values()).size > 1, 'the P choices generate different text');
      // without P: the default the model was loaded with
      const byDefault = await lm.generate('Hello', greedy).complete();
      assert.equal(byDefault.text, texts.get(8));
      // loading with P sets the default
      const four = await TextModel.load(folders.dynamic, { backend, threads: 1, P: 4 });
      models.push(four);
      assert.equal((await four.generate('Hello', greedy).complete()).text, texts.get(4));
    });
  }

  it('the CLI: generate --P, dump --P, info lists the stream sets', () => {
    const cli = (args: string[]) => {
      const r = spawnSync(process.execPath, [join(repo, 'bin/parscale.js'), ...args], { encoding: 'utf8', timeout: 120_000 });
      assert.equal(r.status, 0, r.stderr);
      return r.stdout;
    };
    const generate = (dir: string, extra: string[]) => cli(['generate', '--model', dir, '--no-progress', '--backend', 'reference', '-n', '8', '-t', '0', ...extra, 'Hello']);
    assert.equal(generate(folders.dynamic, ['--P', '4']), generate(folders.single.get(4)!, []));
    const dump = JSON.parse(cli(['dump', '--model', folders.dynamic, '--ids', '1,2,3', '--P', '2', '--out', '-']));
    assert.equal(dump.P, 2);
    assert.deepEqual(dump.prefill_logits, JSON.parse(cli(['dump', '--model', folders.single.get(2)!, '--ids', '1,2,3', '--out', '-'])).prefill_logits);
    const info = JSON.parse(cli(['info', '--model', folders.dynamic, '--json']));
    assert.equal(info.P, 8);
    const H = backbone.hiddenSize;
    const kv = backbone.numLayers * 2 * backbone.numKvHeads * backbone.headDim;
    assert.deepEqual(
      info.stream_sets.map((s: { P: number; parameters: number; file: string }) => [s.P, s.parameters, s.file]),
      [
        [1, 0, 'backbone alone'],
        ...SETS.map(({ P, T }) => [P, kv * P * T + P * H * H + H + P * H + P, `streams-P${P}.safetensors`]),
      ],
    );
    // int8 weights with a P: the stream sets load with the quantized backbone
    const int8Dump = JSON.parse(cli(['dump', '--model', folders.dynamic, '--ids', '1,2,3', '--P', '4', '--backend', 'wasm', '--weights', 'int8', '--out', '-']));
    assert.equal(int8Dump.P, 4);
    // the wasm memory holds every stream set, the cache sized for the largest P (8) and prefix (5, of P = 4)
    const cacheBytes = (P: number, T: number, positions: number) => backbone.numLayers * 2 * P * backbone.numKvHeads * backbone.headDim * 4 * (T + positions);
    for (const weights of ['stored', 'int8']) {
      const memory = info.wasm_memory[weights];
      assert.equal(memory.kv_cache_bytes, cacheBytes(8, 5, memory.max_context), weights);
    }
    const bareInfo = JSON.parse(cli(['info', '--model', folders.backbone, '--json']));
    assert.ok(info.wasm_memory.int8.weight_bytes > bareInfo.wasm_memory.int8.weight_bytes, 'the stream sets are counted');
    assert.equal(
      info.wasm_memory.stored.weight_bytes - bareInfo.wasm_memory.stored.weight_bytes,
      info.wasm_memory.int8.weight_bytes - bareInfo.wasm_memory.int8.weight_bytes,
      'the stream sets take the same bytes with int8 weights: they are never quantized',
    );
    const infoP2 = JSON.parse(cli(['info', '--model', folders.dynamic, '--P', '2', '--json']));
    assert.deepEqual(infoP2.wasm_memory, info.wasm_memory, 'every P runs in the same memory');
    assert.equal(infoP2.P, 2);
    assert.equal(infoP2.prefix_tokens, 3);
    assert.match(cli(['info', '--model', folders.dynamic]), /stream sets +P = 1, 2, 4, 8 on one backbone/);
    const bad = spawnSync(process.execPath, [join(repo, 'bin/parscale.js'), 'info', '--model', folders.dynamic, '--P', '3'], { encoding: 'utf8' });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /no streams for P = 3 .*; this model has stream sets P = 1 \(the backbone alone\), 2, 4, 8/);
  });
});

describe('dynamic P: training stream sets on a frozen backbone', () => {
  const corpus = readFileSync(new URL('../data/kjv-train.txt', import.meta.url), 'utf8');
  const data = join(work, 'train.txt');
  const val = join(work, 'val.txt');
  let base: string;
  before(async () => {
    writeFileSync(data, corpus.slice(0, 3000));
    writeFileSync(val, corpus.slice(3000, 3600));
    base = join(work, 'train-backbone');
    await saveModel(base, backbone, randomWeights(backbone, 21), { dtype: 'BF16', ...tokenizer });
  });
  const tiny = (overrides: Partial<TrainOptions>): TrainOptions => ({
    ...DEFAULT_OPTIONS,
    data,
    val,
    out: '',
    context: 8,
    batch: 2,
    steps: 2,
    lr: 1e-2,
    evalEvery: 0,
    evalWindows: 2,
    saveEvery: 0,
    quiet: true,
    prefixTokens: 2,
    ...overrides,
  });

  it('--P 2,4 writes the backbone once, bit-identical, and each set equals a single-P frozen run', async () => {
    const out = join(work, 'trained-dynamic');
    const args = ['--data', data, '--val', val, '--init', base, '--freeze-backbone', '--P', '2,4', '--out', out, '--quiet'];
    const parsed = parseTrainArgs([...args, '--context', '8', '--batch', '2', '--steps', '2', '--prefix-tokens', '2', '--eval-every', '0']);
    assert.ok(parsed !== 'help');
    assert.deepEqual(parsed.streamSets, [2, 4]);
    const { results } = await trainStreamSets({ ...parsed, evalWindows: 2, lr: 1e-2 });
    assert.deepEqual(results.map((r) => r.P), [2, 4]);

    for (const file of ['model.safetensors', 'tokenizer.json', 'tokenizer_config.json']) {
      assert.ok(readFileSync(join(out, file)).equals(readFileSync(join(base, file))), `${file} is byte for byte the input's`);
    }
    const { [STREAM_SETS_KEY]: sets, ...rest } = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    assert.deepEqual(rest, JSON.parse(readFileSync(join(base, 'config.json'), 'utf8')), 'config.json gains only the stream sets');
    assert.deepEqual(sets, {
      2: { file: 'streams-P2.safetensors', parscale_n_tokens: 2, parscale_attn_smooth: 0.01 },
      4: { file: 'streams-P4.safetensors', parscale_n_tokens: 2, parscale_attn_smooth: 0.01 },
    });
    // each stream file holds exactly the ParScale tensors
    const names = [...readSafetensorsHeader(join(out, 'streams-P4.safetensors')).tensors.keys()].sort();
    assert.deepEqual(names, ['model.aggregate_layer.0.bias', 'model.aggregate_layer.0.weight', 'model.aggregate_layer.2.bias', 'model.aggregate_layer.2.weight', 'model.layers.0.self_attn.prefix_k', 'model.layers.0.self_attn.prefix_v', 'model.layers.1.self_attn.prefix_k', 'model.layers.1.self_attn.prefix_v']);

    // the same options as one ordinary frozen run of P = 2: the same stream set, to the bit
    const single = await train(tiny({ init: base, P: 2, freezeBackbone: true, out: join(work, 'trained-single-P2') }));
    assert.deepEqual(results[0].result.logs.map((l) => l.loss), single.logs.map((l) => l.loss));
    const loaded = await loadCheckpoint(out);
    const set = loaded.streamSets.find((s) => s.P === 2)!;
    const singleCheckpoint = await loadCheckpoint(join(work, 'trained-single-P2'));
    for (const [name, tensor] of set.tensors) assert.deepEqual(tensor.data, singleCheckpoint.tensors.get(name)!.data, name);
    // and it runs: the dynamic folder's P = 2 equals that checkpoint
    const a = await loadModel(out, { backend: 'reference', P: 2 });
    const b = await loadModel(join(work, 'trained-single-P2'), { backend: 'reference' });
    run(a).forEach((row, t) => assert.deepEqual(row, run(b)[t]));
  });

  it('--stream-sets adds a set to an existing dynamic folder in place; known P and bad flags are refused', async () => {
    const dir = join(work, 'grow');
    await trainStreamSets(tiny({ init: base, out: dir, freezeBackbone: true, streamSets: [2] }));
    const before = readFileSync(join(dir, 'model.safetensors'));
    const parsed = parseTrainArgs(['--data', data, '--init', dir, '--freeze-backbone', '--stream-sets', '--P', '3', '--out', dir, '--quiet']);
    assert.ok(parsed !== 'help');
    await trainStreamSets({ ...parsed, ...tiny({ init: dir, out: dir, freezeBackbone: true, streamSets: [3] }) });
    assert.ok(readFileSync(join(dir, 'model.safetensors')).equals(before));
    assert.deepEqual((await loadModel(dir, { backend: 'reference' })).streamSets, [1, 2, 3]);

    await assert.rejects(trainStreamSets(tiny({ init: dir, out: dir, freezeBackbone: true, streamSets: [4, 2] })), /already has streams for P = 2 \(it has P = 1, 2, 3\)/);
    await assert.rejects(trainStreamSets(tiny({ init: dir, out: dir, freezeBackbone: false, streamSets: [4] })), /need --init DIR and --freeze-backbone/);
    const usage = (args: string[], pattern: RegExp) => assert.throws(() => parseTrainArgs(['--data', data, '--out', dir, ...args]), (e: Error) => e.name === 'UsageError' && pattern.test(e.message));
    usage(['--init', dir, '--P', '2,4'], /need --init DIR and --freeze-backbone/);
    usage(['--P', '2,4', '--freeze-backbone'], /--freeze-backbone needs --init|need --init DIR/);
    usage(['--init', dir, '--freeze-backbone', '--P', '2,1'], /stream counts ≥ 2/);
    usage(['--init', dir, '--freeze-backbone', '--P', '2,,4'], /stream counts ≥ 2/);
    usage(['--init', dir, '--freeze-backbone', '--P', '4,4'], /twice/);
    // the single-P behaviour is unchanged
    const plain = parseTrainArgs(['--data', data, '--out', dir, '--P', '4']);
    assert.ok(plain !== 'help' && plain.P === 4 && plain.streamSets === undefined);
  });
});

describe('dynamic P: every bad folder has its own error', () => {
  /** A fresh copy of a small valid dynamic folder (backbone P = 1, sets P = 2 and 4) to damage. */
  let template: string;
  let count = 0;
  before(async () => {
    template = join(work, 'bad-template');
    await saveModel(template, backbone, randomWeights(backbone, 31), { dtype: 'F32', ...tokenizer });
    for (const P of [2, 4]) {
      const config = setConfig(P);
      addStreamSetToConfig(template, config, saveStreamSet(template, config, randomWeights(config, P), 'F32'));
    }
  });
  const fresh = (): string => {
    const dir = join(work, `bad-${++count}`);
    cpSync(template, dir, { recursive: true });
    return dir;
  };
  const editConfig = (dir: string, edit: (json: Record<string, any>) => void) => {
    const json = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    edit(json);
    writeFileSync(join(dir, 'config.json'), JSON.stringify(json));
  };
  /** Rewrite a set's file with some tensors changed (undefined drops one). */
  const rewriteSet = (file: string, change: (name: string, shape: number[]) => number[] | undefined | 'keep', extra: { name: string; shape: number[] }[] = []) => {
    const tensors = [...readSafetensorsHeader(file).tensors.values()].flatMap((info) => {
      const shape = change(info.name, info.shape);
      if (shape === undefined) return [];
      const finalShape = shape === 'keep' ? info.shape : shape;
      return [{ name: info.name, dtype: 'F32' as const, shape: finalShape, data: new Uint8Array(4 * finalShape.reduce((a, b) => a * b, 1)) }];
    });
    for (const t of extra) tensors.push({ name: t.name, dtype: 'F32', shape: t.shape, data: new Uint8Array(4 * t.shape.reduce((a, b) => a * b, 1)) });
    writeSafetensors(file, tensors);
  };

  it('a missing stream-set file', async () => {
    const dir = fresh();
    rmSync(join(dir, 'streams-P4.safetensors'));
    await rejectsWithCheckpointError(loadCheckpoint(dir), { code: 'FILE_NOT_FOUND', file: join(dir, 'streams-P4.safetensors'), message: [/stream set file not found/, /lists it for P = 4/] });
  });

  it('a prefix of the wrong length for its parscale_n_tokens', async () => {
    const dir = fresh();
    editConfig(dir, (json) => (json[STREAM_SETS_KEY]['2'].parscale_n_tokens = 7));
    await rejectsWithCheckpointError(loadModel(dir, { backend: 'reference' }), {
      code: 'TENSOR_SHAPE',
      file: join(dir, 'streams-P2.safetensors'),
      tensor: 'model.layers.0.self_attn.prefix_k',
      message: [/has shape \[2,2,3,4\]/, /parscale_n_tokens 7/, /implies \[2,2,7,4\]/],
    });
  });

  it('P in config.json against the streams the tensors hold, and against the file name', async () => {
    const dir = fresh();
    // a P = 2 file listed as the set P = 4 (under a name that does not say P)
    cpSync(join(dir, 'streams-P2.safetensors'), join(dir, 'set-a.safetensors'));
    editConfig(dir, (json) => (json[STREAM_SETS_KEY]['4'].file = 'set-a.safetensors'));
    await rejectsWithCheckpointError(loadCheckpoint(dir), {
      code: 'TENSOR_SHAPE',
      file: join(dir, 'set-a.safetensors'),
      tensor: 'model.layers.0.self_attn.prefix_k',
      message: [/it holds 2 streams, but config.json "parscale_stream_sets" lists it for P = 4/],
    });
    editConfig(dir, (json) => (json[STREAM_SETS_KEY]['4'].file = 'streams-P2.safetensors'));
    throwsCheckpointError(() => readConfigAndSets(dir), { code: 'CONFIG_INVALID', file: join(dir, 'config.json'), key: STREAM_SETS_KEY, message: [/whose name says P = 2, but it is listed as the stream set P = 4/] });
    // the aggregation layer alone may disagree too
    const other = fresh();
    rewriteSet(join(other, 'streams-P4.safetensors'), (name, shape) => (name === 'model.aggregate_layer.2.weight' ? [3, shape[1]] : 'keep'));
    await rejectsWithCheckpointError(loadCheckpoint(other), { code: 'TENSOR_SHAPE', tensor: 'model.aggregate_layer.2.weight', file: join(other, 'streams-P4.safetensors'), message: [/it holds 3 streams/] });
  });

  it('a missing and an unexpected tensor in a stream-set file', async () => {
    const dir = fresh();
    const file = join(dir, 'streams-P2.safetensors');
    rewriteSet(file, (name) => (name === 'model.aggregate_layer.2.bias' ? undefined : 'keep'));
    await rejectsWithCheckpointError(loadCheckpoint(dir), { code: 'TENSOR_MISSING', file, tensor: 'model.aggregate_layer.2.bias', message: [/missing from this stream set/] });
    rewriteSet(file, () => 'keep', [
      { name: 'model.aggregate_layer.2.bias', shape: [2] },
      { name: 'model.norm.weight', shape: [backbone.hiddenSize] },
    ]);
    await rejectsWithCheckpointError(loadCheckpoint(dir), { code: 'TENSOR_UNEXPECTED', file, tensor: 'model.norm.weight', message: [/backbone tensors belong in model.safetensors/] });
    rewriteSet(file, (name) => (name === 'model.norm.weight' ? undefined : 'keep'), [{ name: 'model.layers.2.self_attn.prefix_k', shape: [2, 2, 3, 4] }]);
    await rejectsWithCheckpointError(loadCheckpoint(dir), { code: 'TENSOR_UNEXPECTED', file, tensor: 'model.layers.2.self_attn.prefix_k', message: [/num_hidden_layers: 2/] });
  });

  it('the streaming loader (wasm, stored or int8) checks every stream set from its header first, as loadCheckpoint does', async () => {
    const dir = fresh();
    editConfig(dir, (json) => (json[STREAM_SETS_KEY]['4'].parscale_n_tokens = 7));
    const expected = {
      code: 'TENSOR_SHAPE' as const,
      file: join(dir, 'streams-P4.safetensors'),
      tensor: 'model.layers.0.self_attn.prefix_k',
      message: [/parscale_n_tokens 7/, /implies \[4,2,7,4\]/],
    };
    // openCheckpoint reads headers only (synchronously): the error comes before any tensor data
    throwsCheckpointError(() => openCheckpoint(dir), expected);
    for (const weights of ['stored', 'int8'] as const) {
      await rejectsWithCheckpointError(WasmModel.load(dir, { threads: 1, weights }), expected);
      await rejectsWithCheckpointError(loadModel(dir, { backend: 'wasm', threads: 1, weights }), expected);
    }
    const missing = fresh();
    rmSync(join(missing, 'streams-P2.safetensors'));
    await rejectsWithCheckpointError(WasmModel.load(missing, { threads: 1, weights: 'int8' }), { code: 'FILE_NOT_FOUND', file: join(missing, 'streams-P2.safetensors'), message: [/stream set file not found/] });
  });

  it('an unknown P, asked of the loader, a loaded model, TextModel and generate', async () => {
    const dir = fresh();
    const expected = { code: 'STREAM_SET_UNKNOWN' as const, file: join(dir, 'config.json'), key: STREAM_SETS_KEY, message: [/no streams for P = 3 \(see "parscale_stream_sets"\); this model has stream sets P = 1 \(the backbone alone\), 2, 4$/] };
    await rejectsWithCheckpointError(loadModel(dir, { backend: 'reference', P: 3 }), expected);
    await rejectsWithCheckpointError(TextModel.load(dir, { backend: 'wasm', P: 3 }), expected);
    const wasm = await loadModel(dir, { backend: 'wasm', threads: 1, maxContext: 8 });
    models.push(wasm);
    throwsCheckpointError(() => wasm.withStreams(3), expected);
    const lm = await TextModel.load(dir, { backend: 'reference' });
    throwsCheckpointError(() => lm.generate('Hi', { P: 8 }), { ...expected, message: [/no streams for P = 8/] });
  });

  it('malformed "parscale_stream_sets" entries', () => {
    const cases: [(sets: Record<string, any>) => void, RegExp][] = [
      [(sets) => (sets['1'] = { file: 'streams-P1.safetensors' }), /each key must be a stream count P ≥ 2 \(P = 1 is the backbone alone\)/],
      [(sets) => (sets.four = { file: 'x.safetensors' }), /the entry "four"/],
      [(sets) => (sets['2'].file = '../streams-P2.safetensors'), /must be a .safetensors file name in the same folder/],
      [(sets) => (sets['2'].file = 'streams-P2.bin'), /must be a .safetensors file name/],
      [(sets) => (sets['2'] = 'streams-P2.safetensors'), /must be an object with a "file"/],
      [(sets) => (sets['2'].parscale_n_tokens = 0), /parscale_n_tokens must be a positive integer/],
      [(sets) => (sets['2'].parscale_attn_smooth = 1), /parscale_attn_smooth must be a number in \[0, 1\)/],
    ];
    for (const [edit, pattern] of cases) {
      const dir = fresh();
      editConfig(dir, (json) => edit(json[STREAM_SETS_KEY]));
      throwsCheckpointError(() => readConfigAndSets(dir), { code: 'CONFIG_INVALID', file: join(dir, 'config.json'), key: STREAM_SETS_KEY, message: [pattern] });
    }
    const list = fresh();
    editConfig(list, (json) => (json[STREAM_SETS_KEY] = ['streams-P2.safetensors']));
    throwsCheckpointError(() => readConfigAndSets(list), { code: 'CONFIG_INVALID', key: STREAM_SETS_KEY, message: [/must map a stream count P/] });
    // a set of the folder's own P would store that P twice
    const own = join(work, 'bad-own');
    writeSyntheticCheckpoint(mkdir(own), tinyConfigJson({ parscale_n: 2, [STREAM_SETS_KEY]: { 2: { file: 'streams-P2.safetensors' } } }));
    throwsCheckpointError(() => readConfigAndSets(own), { code: 'CONFIG_INVALID', key: STREAM_SETS_KEY, message: [/the folder's own streams are P = 2 \(parscale_n\)/] });
  });
});

// ---- small helpers ----

function mkdir(dir: string): string {
  mkdirSync(dir, { recursive: true });
  return dir;
}

function readConfigAndSets(dir: string) {
  return readStreamSetSpecs(dir, readConfig(dir));
}
