// config.json: defaults, every validation rule with its code and key, and reading the file.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import { type ModelConfig, parseConfig, readConfig } from '../src/checkpoint/config.ts';
import { CheckpointError, type CheckpointErrorCode } from '../src/checkpoint/errors.ts';
import { throwsCheckpointError } from './helpers/checkpoint-errors.ts';
import { tinyConfigJson } from './helpers/synthetic-checkpoint.ts';

const scratch = mkdtempSync(join(tmpdir(), 'parscale-config-'));
after(() => rmSync(scratch, { recursive: true, force: true }));
const FILE = '/models/example/config.json';

/** ParScale-3B-P8-Pile's geometry as SPEC.md gives it, in the shape transformers writes config.json. */
const realisticConfig = {
  architectures: ['Qwen2ParScaleForCausalLM'],
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151643,
  hidden_act: 'silu',
  hidden_size: 2048,
  initializer_range: 0.02,
  intermediate_size: 11008,
  max_position_embeddings: 32768,
  max_window_layers: 36,
  model_type: 'qwen2_parscale',
  num_attention_heads: 16,
  num_hidden_layers: 36,
  num_key_value_heads: 2,
  parscale_attn_smooth: 0.1,
  parscale_n: 8,
  parscale_n_tokens: 48,
  rms_norm_eps: 1e-6,
  rope_scaling: null,
  rope_theta: 10000.0,
  sliding_window: 32768,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  transformers_version: '4.47.0',
  use_cache: true,
  use_sliding_window: false,
  vocab_size: 151936,
};

describe('parseConfig', () => {
  it('reads a real-shaped ParScale config', () => {
    const config = parseConfig(realisticConfig, FILE);
    const expected: ModelConfig = {
      modelType: 'qwen2_parscale',
      hiddenSize: 2048,
      intermediateSize: 11008,
      numLayers: 36,
      numHeads: 16,
      numKvHeads: 2,
      headDim: 128,
      vocabSize: 151936,
      rmsNormEps: 1e-6,
      ropeTheta: 10000,
      maxPositionEmbeddings: 32768,
      tieWordEmbeddings: true,
      torchDtype: 'bfloat16',
      bosTokenId: 151643,
      eosTokenIds: [151643],
      parscaleN: 8,
      parscaleNTokens: 48,
      parscaleAttnSmooth: 0.1,
    };
    assert.deepEqual(config, expected);
  });

  it('fills in the Hugging Face defaults for absent (or null) optional keys', () => {
    const minimal = { model_type: 'qwen2_parscale', hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, vocab_size: 100 };
    const config = parseConfig(minimal, FILE);
    assert.equal(config.headDim, 16); // H / nH
    assert.equal(config.numKvHeads, 4); // = nH
    assert.equal(config.ropeTheta, 10000);
    assert.equal(config.rmsNormEps, 1e-6);
    assert.equal(config.maxPositionEmbeddings, 32768);
    assert.equal(config.tieWordEmbeddings, false);
    assert.equal(config.parscaleN, 1);
    assert.equal(config.parscaleNTokens, 48);
    assert.equal(config.parscaleAttnSmooth, 0.01);
    assert.equal(config.torchDtype, null);
    assert.equal(config.bosTokenId, null);
    assert.deepEqual(config.eosTokenIds, []);
    const withNulls = parseConfig({ ...minimal, head_dim: null, rope_theta: null, num_key_value_heads: null, eos_token_id: null }, FILE);
    assert.deepEqual(withNulls, config);
  });

  it('plain qwen2 is P = 1 whatever parscale keys say; head_dim may differ from H / nH', () => {
    const config = parseConfig(tinyConfigJson({ model_type: 'qwen2', parscale_n: 4, parscale_n_tokens: 0, parscale_attn_smooth: 7 }), FILE);
    assert.equal(config.modelType, 'qwen2');
    assert.equal(config.parscaleN, 1);
    assert.equal(config.parscaleNTokens, 48);
    assert.equal(config.parscaleAttnSmooth, 0.01);
    assert.equal(parseConfig(tinyConfigJson({ hidden_size: 10, head_dim: 6, num_attention_heads: 2 }), FILE).headDim, 6);
  });

  it('parscale_n_tokens only has to be valid when there are prefixes (P > 1)', () => {
    assert.equal(parseConfig(tinyConfigJson({ parscale_n: 1, parscale_n_tokens: 0 }), FILE).parscaleNTokens, 48);
    assert.equal(parseConfig(tinyConfigJson({ parscale_n: 1, parscale_n_tokens: 5 }), FILE).parscaleNTokens, 5);
    throwsCheckpointError(() => parseConfig(tinyConfigJson({ parscale_n: 2, parscale_n_tokens: 0 }), FILE), { code: 'CONFIG_INVALID', key: 'parscale_n_tokens' });
  });

  it('eos_token_id may be a number or a list', () => {
    assert.deepEqual(parseConfig(tinyConfigJson({ eos_token_id: 7 }), FILE).eosTokenIds, [7]);
    assert.deepEqual(parseConfig(tinyConfigJson({ eos_token_id: [151643, 151645] }), FILE).eosTokenIds, [151643, 151645]);
    throwsCheckpointError(() => parseConfig(tinyConfigJson({ eos_token_id: [1, 'two'] }), FILE), { code: 'CONFIG_INVALID', key: 'eos_token_id' });
  });

  const cases: [string, Record<string, unknown>, CheckpointErrorCode, string, RegExp][] = [
    ['missing hidden_size', { hidden_size: undefined }, 'CONFIG_MISSING_KEY', 'hidden_size', /required key "hidden_size" is missing/],
    ['missing vocab_size', { vocab_size: undefined }, 'CONFIG_MISSING_KEY', 'vocab_size', /is missing/],
    ['missing model_type', { model_type: undefined }, 'CONFIG_MISSING_KEY', 'model_type', /is missing/],
    ['hidden_size not an integer', { hidden_size: 8.5 }, 'CONFIG_INVALID', 'hidden_size', /must be a positive integer, found 8\.5/],
    ['hidden_size a string', { hidden_size: '8' }, 'CONFIG_INVALID', 'hidden_size', /must be a positive integer, found "8"/],
    ['num_hidden_layers null', { num_hidden_layers: null }, 'CONFIG_INVALID', 'num_hidden_layers', /found null/],
    ['heads not divisible by kv heads', { num_attention_heads: 4, num_key_value_heads: 3 }, 'CONFIG_INVALID', 'num_key_value_heads', /a divisor of num_attention_heads \(4\)/],
    ['hidden not divisible by heads', { hidden_size: 10, num_attention_heads: 4, num_key_value_heads: 2 }, 'CONFIG_INVALID', 'hidden_size', /divisible by num_attention_heads \(4\) when head_dim is not given/],
    ['odd head_dim', { hidden_size: 6, num_attention_heads: 2 }, 'CONFIG_INVALID', 'head_dim', /must be even/],
    ['parscale_n 0', { parscale_n: 0 }, 'CONFIG_INVALID', 'parscale_n', /must be a positive integer, found 0/],
    ['parscale_n fractional', { parscale_n: 2.5 }, 'CONFIG_INVALID', 'parscale_n', /found 2\.5/],
    ['parscale_attn_smooth 1', { parscale_attn_smooth: 1 }, 'CONFIG_INVALID', 'parscale_attn_smooth', /a number in \[0, 1\), found 1/],
    ['parscale_attn_smooth negative', { parscale_attn_smooth: -0.1 }, 'CONFIG_INVALID', 'parscale_attn_smooth', /\[0, 1\)/],
    ['rms_norm_eps not a number', { rms_norm_eps: 'small' }, 'CONFIG_INVALID', 'rms_norm_eps', /a positive number/],
    ['rope_theta 0', { rope_theta: 0 }, 'CONFIG_INVALID', 'rope_theta', /a positive number/],
    ['tie_word_embeddings a string', { tie_word_embeddings: 'true' }, 'CONFIG_INVALID', 'tie_word_embeddings', /true or false/],
    ['rope_scaling linear', { rope_scaling: { type: 'linear', factor: 2 } }, 'CONFIG_UNSUPPORTED', 'rope_scaling', /"rope_scaling" = \{"type":"linear","factor":2\} is not supported/],
    ['use_sliding_window true', { use_sliding_window: true }, 'CONFIG_UNSUPPORTED', 'use_sliding_window', /sliding-window attention is not implemented/],
    ['hidden_act gelu', { hidden_act: 'gelu' }, 'CONFIG_UNSUPPORTED', 'hidden_act', /"hidden_act" = "gelu" is not supported/],
    ['model_type llama', { model_type: 'llama' }, 'CONFIG_UNSUPPORTED', 'model_type', /expected "qwen2_parscale" or "qwen2"/],
  ];
  for (const [label, overrides, code, key, pattern] of cases) {
    it(`rejects: ${label}`, () => {
      throwsCheckpointError(() => parseConfig(tinyConfigJson(overrides), FILE), { code, key, file: FILE, message: [pattern, new RegExp(`^${FILE}: `)] });
    });
  }

  it('rejects JSON that is not an object', () => {
    for (const json of [null, [], 3, 'config']) throwsCheckpointError(() => parseConfig(json, FILE), { code: 'CONFIG_INVALID', message: [/expected a JSON object/] });
  });

  it('any value under any known key gives either a consistent config or a CheckpointError', () => {
    const keys = Object.keys(tinyConfigJson()).concat(['head_dim', 'rope_scaling', 'use_sliding_window', 'bos_token_id']);
    fc.assert(
      fc.property(fc.dictionary(fc.constantFrom(...keys), fc.oneof(fc.jsonValue(), fc.integer({ min: -2, max: 9 }))), (overrides) => {
        let config: ModelConfig;
        try {
          config = parseConfig(tinyConfigJson(overrides), FILE);
        } catch (error) {
          assert.ok(error instanceof CheckpointError, String(error));
          assert.ok(error.message.includes(FILE));
          return;
        }
        assert.equal(config.numHeads % config.numKvHeads, 0);
        assert.equal(config.headDim % 2, 0);
        for (const size of [config.hiddenSize, config.intermediateSize, config.numLayers, config.vocabSize, config.headDim, config.parscaleN, config.parscaleNTokens]) {
          assert.ok(Number.isInteger(size) && size >= 1, `size ${size}`);
        }
        assert.ok(config.parscaleAttnSmooth >= 0 && config.parscaleAttnSmooth < 1);
      }),
      { numRuns: 500 },
    );
  });
});

describe('readConfig', () => {
  it('reads DIR/config.json, and every test fixture config', () => {
    const dir = mkdtempSync(join(scratch, 'ok-'));
    writeFileSync(join(dir, 'config.json'), JSON.stringify(realisticConfig));
    assert.equal(readConfig(dir).parscaleN, 8);
    const fixtures = join(import.meta.dirname, 'fixtures');
    for (const name of readdirSync(fixtures).filter((n) => !n.includes('.'))) {
      const config = readConfig(join(fixtures, name));
      const json = JSON.parse(readFileSync(join(fixtures, name, 'config.json'), 'utf8'));
      assert.equal(config.hiddenSize, json.hidden_size, name);
      assert.equal(config.parscaleN, json.parscale_n ?? 1, name);
    }
  });

  it('a missing config.json', () => {
    const dir = mkdtempSync(join(scratch, 'missing-'));
    throwsCheckpointError(() => readConfig(dir), { code: 'FILE_NOT_FOUND', file: join(dir, 'config.json') });
  });

  it('a config.json that is not JSON', () => {
    const dir = mkdtempSync(join(scratch, 'bad-json-'));
    writeFileSync(join(dir, 'config.json'), '{ "model_type": ');
    throwsCheckpointError(() => readConfig(dir), { code: 'CONFIG_INVALID', file: join(dir, 'config.json'), message: [/not valid JSON/] });
  });

  it('a config.json that is a folder', () => {
    const dir = mkdtempSync(join(scratch, 'folder-'));
    mkdirSync(join(dir, 'config.json'));
    throwsCheckpointError(() => readConfig(dir), { code: 'FILE_UNREADABLE', file: join(dir, 'config.json'), message: [/EISDIR/] });
  });

  it('validation errors name the absolute path of the file', () => {
    const dir = mkdtempSync(join(scratch, 'invalid-'));
    writeFileSync(join(dir, 'config.json'), JSON.stringify(tinyConfigJson({ hidden_act: 'gelu' })));
    throwsCheckpointError(() => readConfig(dir), { code: 'CONFIG_UNSUPPORTED', key: 'hidden_act', message: [new RegExp(`^${join(dir, 'config.json')}: `)] });
  });
});
