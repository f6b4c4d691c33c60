// The generation loop on the fixture checkpoints: greedy generation must choose exactly the
// tokens that `dump --decode` (and PyTorch) chose; stop strings, limits and abort behave.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { StopStringMatcher, collect, generateFromIds } from '../src/generation/generate.ts';
import { loadModel } from '../src/load-model.ts';
import { Tokenizer } from '../src/tokenizer/tokenizer.ts';
import { fixtureNames } from './helpers/fixtures.ts';

const fixturesDir = fileURLToPath(new URL('./fixtures/', import.meta.url));
// The fixtures have tiny vocabularies (< 128 ids); ids that small are ordinary byte tokens of the
// Qwen vocabulary, so the real Qwen tokenizer can turn them into text.
const tokenizerDir = fileURLToPath(new URL('../models/qwen-tokenizer/', import.meta.url));

describe('generate', () => {
  for (const name of fixtureNames) {
    it(`greedy generation picks the PyTorch decode ids: ${name}`, async () => {
      const dir = join(fixturesDir, name);
      const expected = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8'));
      const model = await loadModel(dir, { backend: 'reference' });
      const tokenizer = await Tokenizer.fromDir(tokenizerDir);
      const result = await collect(
        generateFromIds(model, tokenizer, expected.prompt_ids, { temperature: 0, maxNewTokens: expected.decode_ids.length, eosTokenIds: [] }),
      );
      assert.deepEqual(result.tokenIds, expected.decode_ids);
      assert.equal(result.generatedTokens, expected.decode_ids.length);
      assert.equal(result.promptTokens, expected.prompt_ids.length);
      assert.equal(result.finishReason, 'length');
    });
  }

  it('never samples an id the tokenizer does not have (embedding rows past the vocabulary, as in Qwen2)', async () => {
    // the trained fixture has its own 300-token tokenizer; give its model 40 extra logits that win
    const dir = join(fixturesDir, 'trained-p2-bf16');
    const model = await loadModel(dir, { backend: 'reference' });
    const tokenizer = await Tokenizer.fromDir(dir);
    assert.equal(tokenizer.vocabSize, model.config.vocabSize);
    const padded: typeof model = Object.create(model);
    padded.forward = (state, tokens, options) => {
      const result = model.forward(state, tokens, options);
      return {
        ...result,
        logits: result.logits.map((row) => {
          const wider = new Float32Array(row.length + 40).fill(1e4);
          wider.set(row);
          return wider;
        }),
      };
    };
    for (const options of [{ temperature: 0 }, { temperature: 1.5, seed: 1 }, { temperature: 1, topK: 5, seed: 2 }]) {
      const result = await collect(generateFromIds(padded, tokenizer, [1, 2, 3], { ...options, maxNewTokens: 20, eosTokenIds: [] }));
      assert.equal(result.tokenIds.length, 20);
      assert.ok(result.tokenIds.every((id) => id < tokenizer.vocabSize), `${result.tokenIds}`);
    }
  });

  it('stops at an end-of-sequence id without emitting it', async () => {
    const dir = join(fixturesDir, fixtureNames[0]);
    const expected = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8'));
    const model = await loadModel(dir, { backend: 'reference' });
    const tokenizer = await Tokenizer.fromDir(tokenizerDir);
    const eos = expected.decode_ids[2];
    const result = await collect(generateFromIds(model, tokenizer, expected.prompt_ids, { temperature: 0, maxNewTokens: 10, eosTokenIds: [eos] }));
    assert.deepEqual(result.tokenIds, expected.decode_ids.slice(0, expected.decode_ids.indexOf(eos)));
    assert.equal(result.finishReason, 'eos');
  });

  it('an already-aborted signal rejects with AbortError before any work', async () => {
    const dir = join(fixturesDir, fixtureNames[0]);
    const model = await loadModel(dir, { backend: 'reference' });
    const tokenizer = await Tokenizer.fromDir(tokenizerDir);
    const controller = new AbortController();
    controller.abort();
    await assert.rejects(collect(generateFromIds(model, tokenizer, [1, 2, 3], { signal: controller.signal })), { name: 'AbortError' });
  });

  it('aborting mid-generation stops it promptly', async () => {
    const dir = join(fixturesDir, fixtureNames[0]);
    const model = await loadModel(dir, { backend: 'reference' });
    const tokenizer = await Tokenizer.fromDir(tokenizerDir);
    const controller = new AbortController();
    let pieces = 0;
    const generation = generateFromIds(model, tokenizer, [1, 2, 3], { temperature: 1, seed: 1, maxNewTokens: 100_000, eosTokenIds: [], signal: controller.signal });
    await assert.rejects(
      (async () => {
        for await (const _ of generation) if (++pieces === 3) controller.abort();
      })(),
      { name: 'AbortError' },
    );
    assert.ok(pieces <= 4, `kept going for ${pieces} pieces after the abort`);
  });

  it('refuses a prompt longer than max_position_embeddings', async () => {
    const dir = join(fixturesDir, fixtureNames[0]);
    const model = await loadModel(dir, { backend: 'reference' });
    const tokenizer = await Tokenizer.fromDir(tokenizerDir);
    const ids = new Array(model.config.maxPositionEmbeddings + 1).fill(1);
    await assert.rejects(collect(generateFromIds(model, tokenizer, ids)), /max_position_embeddings/);
  });
});

describe('stop strings', () => {
  it('cut the text at the first stop string, however the text is split into pieces', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 30 }), fc.array(fc.string({ minLength: 1, maxLength: 4 }), { minLength: 1, maxLength: 3 }), fc.array(fc.nat(30)), (text, stops, cuts) => {
        // the expected answer, computed directly on the whole text
        let first = -1;
        for (const stop of stops) {
          const at = text.indexOf(stop);
          if (at !== -1 && (first === -1 || at < first)) first = at;
        }
        const expected = first === -1 ? text : text.slice(0, first);
        const points = [...new Set(cuts.map((c) => Math.min(c, text.length)))].sort((a, b) => a - b);
        const pieces: string[] = [];
        let from = 0;
        for (const point of [...points, text.length]) {
          pieces.push(text.slice(from, point));
          from = point;
        }
        const matcher = new StopStringMatcher(stops);
        let out = '';
        let stopped = false;
        for (const piece of pieces) {
          const r = matcher.push(piece);
          out += r.emit;
          if (r.stopped) {
            stopped = true;
            break;
          }
        }
        if (!stopped) out += matcher.flush('');
        assert.equal(out, expected);
        assert.equal(stopped, first !== -1);
      }),
    );
  });
});
