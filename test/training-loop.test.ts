// The training loop end to end on a tiny model and a few KB of the corpus: resuming is exact,
// a frozen backbone stays bit-identical, saved folders load with the project's loader, and the
// tokenizer.json loads and round-trips in @huggingface/tokenizers.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Tokenizer } from '@huggingface/tokenizers';
import fc from 'fast-check';
import { loadCheckpoint } from '../src/checkpoint/load.ts';
import { ReferenceModel } from '../src/reference/model.ts';
import { loadModelParams } from '../src/training/checkpoint.ts';
import { tokenizeText } from '../src/training/data.ts';
import { trainingForward } from '../src/training/model.ts';
import { clipGradients, globalNorm, learningRate } from '../src/training/optimizer.ts';
import { END_OF_TEXT, learnBpe, tokenizerConfigJson, tokenizerJson } from '../src/training/tokenizer.ts';
import { parseTrainArgs } from '../src/training/cli.ts';
import { type TrainOptions, train } from '../src/training/train.ts';
import { losses, tinyTraining } from './helpers/tiny-training.ts';
import { parameterEntries } from '../src/training/weights.ts';

const setup = tinyTraining('parscale-train-');
const { work } = setup;
const tiny = (overrides: Partial<TrainOptions>): TrainOptions => setup.options({ batch: 2, steps: 6, evalEvery: 3, ...overrides });

describe('tokenizer.json', () => {
  const text = readFileSync(new URL('../data/kjv-train.txt', import.meta.url), 'utf8').slice(0, 20000);

  it('round-trips any text through @huggingface/tokenizers (bytes only, and with merges)', () => {
    for (const merges of [0, 200]) {
      const vocabulary = learnBpe(text, merges);
      assert.equal(vocabulary.tokens.length, 257 + merges);
      const tokenizer = new Tokenizer(tokenizerJson(vocabulary), tokenizerConfigJson(vocabulary, 256));
      fc.assert(
        fc.property(fc.oneof(fc.string(), fc.string({ unit: 'grapheme' }), fc.string({ unit: 'binary-ascii' }), fc.constantFrom('', ' ', '\n\n', 'In the beginning')), (s) => {
          // any well-formed Unicode text (a lone surrogate has no UTF-8 form, so it cannot round-trip)
          const ids = tokenizer.encode(s, { add_special_tokens: false }).ids;
          assert.ok(ids.every((id: number) => id >= 0 && id < 256 + merges));
          // (the library refuses to decode an empty id list, so the empty string is checked apart)
          if (s === '') assert.deepEqual(ids, []);
          else assert.equal(tokenizer.decode(ids), s);
        }),
        { numRuns: 200 },
      );
      if (merges === 0) {
        // byte-level: id = byte value
        assert.deepEqual(tokenizer.encode('Hé!', { add_special_tokens: false }).ids, [72, 0xc3, 0xa9, 33]);
      } else {
        // merges compress the text they were learned on
        assert.ok(tokenizer.encode(text.slice(0, 2000), { add_special_tokens: false }).ids.length < 800);
      }
      const eos = tokenizer.encode(`a${END_OF_TEXT}b`, { add_special_tokens: false }).ids;
      assert.deepEqual(eos, [97, 256 + merges, 98]);
    }
  });

  it('tokenizing line chunks gives the ids of the whole text', () => {
    const vocabulary = learnBpe(text, 100);
    const json = tokenizerJson(vocabulary);
    const config = tokenizerConfigJson(vocabulary, 256);
    const sample = text + '\n\nsome   spaced\n  lines \n\n\nend';
    const whole = new Tokenizer(json, config).encode(sample, { add_special_tokens: false }).ids;
    assert.deepEqual([...tokenizeText(sample, json, config)], whole);
  });
});

describe('optimizer pieces', () => {
  it('warm-up rises linearly to lr, then the cosine falls to lr · minLrRatio', () => {
    const s = { lr: 1, warmupSteps: 4, totalSteps: 14, minLrRatio: 0.1 };
    assert.equal(learningRate(s, 1), 0.25);
    assert.equal(learningRate(s, 4), 1);
    assert.ok(Math.abs(learningRate(s, 9) - 0.55) < 1e-12);
    assert.ok(Math.abs(learningRate(s, 14) - 0.1) < 1e-12);
  });

  it('clipping scales the global norm down to the limit and leaves small gradients alone', () => {
    const entries = [
      { name: 'a', shape: [2], data: Float32Array.of(3, 0), role: 'backbone' as const, decay: false },
      { name: 'b', shape: [1], data: Float32Array.of(4), role: 'backbone' as const, decay: false },
    ];
    assert.equal(clipGradients(entries, 10), 5);
    assert.equal(globalNorm(entries), 5);
    assert.equal(clipGradients(entries, 1), 5);
    assert.ok(Math.abs(globalNorm(entries) - 1) < 1e-6);
  });
});

describe('training loop', () => {
  it('learns: the loss of a tiny P = 2 model falls, and the saved folder loads with the same logits', async () => {
    const out = join(work, 'learn');
    const log = join(work, 'learn.jsonl');
    const result = await train(tiny({ out, log, P: 2, prefixTokens: 3, steps: 30, lr: 2e-2, evalEvery: 0, tied: false }));
    const first = result.logs.slice(0, 3).reduce((s, l) => s + l.loss, 0) / 3;
    const last = result.logs.slice(-3).reduce((s, l) => s + l.loss, 0) / 3;
    assert.ok(last < first - 0.5, `loss ${first} → ${last}`);
    const lines = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(lines.length, 30);
    for (const l of lines) for (const key of ['step', 'loss', 'tokens_per_s']) assert.equal(typeof l[key], 'number');

    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    assert.equal(config.model_type, 'qwen2_parscale');
    assert.equal(config.parscale_n, 2);
    assert.equal(config.parscale_n_tokens, 3);
    assert.equal(config.tie_word_embeddings, false);
    const checkpoint = await loadCheckpoint(out);
    const model = ReferenceModel.fromCheckpoint(checkpoint);
    const tokens = [5, 77, 120, 3];
    const expected = trainingForward(result.config, result.params, {
      inputs: Int32Array.from(tokens),
      targets: new Int32Array(4),
      batchSize: 1,
      length: 4,
    });
    const logits = model.forward(model.newSequence(), tokens).logits[0];
    const V = result.config.vocabSize;
    for (let i = 0; i < V; i++) assert.ok(Math.abs(logits[i] - expected.logits[3 * V + i]) <= 1e-5);
    const tokenizer = new Tokenizer(
      JSON.parse(readFileSync(join(out, 'tokenizer.json'), 'utf8')),
      JSON.parse(readFileSync(join(out, 'tokenizer_config.json'), 'utf8')),
    );
    assert.equal(tokenizer.decode(tokenizer.encode('And God said').ids), 'And God said');
  });

  it('resuming from a checkpoint gives exactly the losses of an uninterrupted run', async () => {
    for (const dtype of ['F32', 'BF16'] as const) {
      const whole = await train(tiny({ out: join(work, `whole-${dtype}`), P: 2, prefixTokens: 2, dtype }));
      const interrupted = join(work, `interrupted-${dtype}`);
      const firstPart = await train(tiny({ out: interrupted, P: 2, prefixTokens: 2, dtype, stopAfter: 4 }));
      assert.equal(firstPart.logs.length, 4);
      const rest = await train(tiny({ out: join(work, `resumed-${dtype}`), resume: interrupted, P: 2, prefixTokens: 2 }));
      assert.deepEqual(losses([...firstPart.logs, ...rest.logs]), losses(whole.logs), dtype);
    }
  });

  it('stage 2 with --freeze-backbone: P = 1 → P = 3 keeps every backbone weight bit-identical', async () => {
    const stage1 = join(work, 'stage1');
    await train(tiny({ out: stage1, P: 1, steps: 3 }));
    const before = await loadModelParams(stage1);
    const stage2 = join(work, 'stage2');
    const result = await train(tiny({ out: stage2, init: stage1, P: 3, prefixTokens: 2, freezeBackbone: true, steps: 4 }));
    assert.ok(result.logs.at(-1)!.loss < result.logs[0].loss + 1, 'trains');
    const after = await loadModelParams(stage2);
    assert.equal(after.config.parscaleN, 3);
    const old = new Map(parameterEntries(before.config, before.params).map((e) => [e.name, e.data]));
    let backbone = 0;
    let changed = 0;
    for (const e of parameterEntries(after.config, after.params)) {
      if (e.role === 'backbone') {
        backbone++;
        assert.deepEqual(new Uint8Array(e.data.buffer, e.data.byteOffset, e.data.byteLength), new Uint8Array(old.get(e.name)!.buffer, old.get(e.name)!.byteOffset, old.get(e.name)!.byteLength), e.name);
      } else {
        assert.ok(!old.has(e.name));
        changed++;
      }
    }
    assert.equal(backbone, old.size);
    assert.equal(changed, 2 + 4); // prefix_k, prefix_v of the one layer + aggregate_layer.{0,2}.{weight,bias}

    // without freezing, the backbone moves too
    const full = await train(tiny({ out: join(work, 'stage2-full'), init: stage1, P: 3, prefixTokens: 2, steps: 2 }));
    const moved = parameterEntries(full.config, full.params).find((e) => e.name === 'model.layers.0.mlp.up_proj.weight')!;
    assert.notDeepEqual(moved.data, old.get('model.layers.0.mlp.up_proj.weight'));
  });
});

describe('parallel gradients', () => {
  it('two threads give the losses of one (up to float rounding) and resume exactly', async () => {
    const one = await train(tiny({ out: join(work, 'threads-1'), P: 2, prefixTokens: 2, batch: 3, steps: 4 }));
    const two = await train(tiny({ out: join(work, 'threads-2'), P: 2, prefixTokens: 2, batch: 3, steps: 4, threads: 2 }));
    one.logs.forEach((l, i) => assert.ok(Math.abs(l.loss - two.logs[i].loss) <= 1e-5, `step ${l.step}`));
    const part = join(work, 'threads-2-part');
    const first = await train(tiny({ out: part, P: 2, prefixTokens: 2, batch: 3, steps: 4, threads: 2, stopAfter: 2 }));
    const rest = await train(tiny({ out: join(work, 'threads-2-rest'), resume: part, steps: 4, threads: 2 }));
    assert.deepEqual(losses([...first.logs, ...rest.logs]), losses(two.logs));
  });
});

describe('parscale train arguments', () => {
  const usage = (args: string[]) =>
    assert.throws(() => parseTrainArgs(args), (e: Error) => e.name === 'UsageError' && !e.message.includes('\n'), args.join(' '));

  it('parses every flag', () => {
    const o = parseTrainArgs(
      ['--data', 'a.txt', '--out', 'o', '--val', 'v.txt', '--init', 'i', '--P', '4', '--prefix-tokens', '8', '--freeze-backbone', '--steps', '9',
        '--batch', '3', '--context', '32', '--lr', '0.001', '--seed', '5', '--log', 'l.jsonl', '--layers', '2', '--hidden', '64', '--heads', '4',
        '--kv-heads', '1', '--intermediate', '96', '--dtype', 'bf16', '--threads', '2', '--kernels', 'ts'],
    );
    assert.ok(o !== 'help');
    assert.deepEqual(
      [o.data, o.out, o.val, o.init, o.P, o.prefixTokens, o.freezeBackbone, o.steps, o.batch, o.context, o.lr, o.seed, o.log],
      ['a.txt', 'o', 'v.txt', 'i', 4, 8, true, 9, 3, 32, 0.001, 5, 'l.jsonl'],
    );
    assert.deepEqual([o.layers, o.hidden, o.heads, o.kvHeads, o.intermediate, o.dtype, o.threads, o.kernels], [2, 64, 4, 1, 96, 'BF16', 2, 'ts']);
    const defaults = parseTrainArgs(['--data', 'a.txt', '--out', 'o']);
    assert.ok(defaults !== 'help');
    assert.equal(defaults.kernels, 'wasm');
    assert.equal(parseTrainArgs(['--help']), 'help');
  });

  it('rejects bad flags with a one-line UsageError', () => {
    usage(['--out', 'o']); // no --data
    usage(['--data', 'a']); // no --out
    usage(['--data', 'a', '--out', 'o', '--bogus']);
    usage(['--data', 'a', '--out', 'o', '--P', 'two']);
    usage(['--data', 'a', '--out', 'o', '--P', '0']);
    usage(['--data', 'a', '--out', 'o', '--steps', '1.5']);
    usage(['--data', 'a', '--out', 'o', '--lr', '-1']);
    usage(['--data', 'a', '--out', 'o', '--dtype', 'f16']);
    usage(['--data', 'a', '--out', 'o', '--freeze-backbone']);
    usage(['--data', 'a', '--out', 'o', '--init', 'x', '--resume', 'y']);
    usage(['--data', 'a', '--out', 'o', 'positional']);
    usage(['--data', 'a', '--out', 'o', '--kernels', 'gpu']);
    usage(['--out', 'o', '--resume', 'y', '--kernels', 'ts']); // a resumed run keeps its kernels
  });
});
