// The checkpoint loader: number formats, the safetensors round trip, and every kind of bad input
// giving its own specific error that names the file (and the tensor or key).
import assert from 'node:assert/strict';
import { readFileSync, rmSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import { parseConfig } from '../src/checkpoint/config.ts';
import { CheckpointError } from '../src/checkpoint/errors.ts';
import { loadCheckpoint, tensorToFloat32 } from '../src/checkpoint/load.ts';
import { type DType, bytesToFloat32, f16ToFloat, float32ToBytes, floatToF16, readSafetensorsHeader, readTensorBytes, writeSafetensors } from '../src/checkpoint/safetensors.ts';
import { tinyConfigJson, writeSyntheticCheckpoint } from './helpers/synthetic-checkpoint.ts';

const made: string[] = [];
after(() => made.forEach((dir) => rmSync(dir, { recursive: true, force: true })));
function synthetic(config = tinyConfigJson(), options = {}) {
  const result = writeSyntheticCheckpoint(config, options);
  made.push(result.dir);
  return result;
}

/** Rewrite a safetensors file's header with `edit`, keeping its data section. */
function editHeader(file: string, edit: (header: Record<string, any>) => unknown, rawHeader?: string) {
  const buffer = readFileSync(file);
  const n = Number(buffer.readBigUInt64LE(0));
  let json = rawHeader;
  if (json === undefined) {
    const header = JSON.parse(buffer.subarray(8, 8 + n).toString());
    json = JSON.stringify(edit(header) ?? header);
  }
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  writeFileSync(file, Buffer.concat([length, Buffer.from(json), buffer.subarray(8 + n)]));
}

async function rejectsWith(dir: string, code: string, ...patterns: RegExp[]) {
  await assert.rejects(loadCheckpoint(dir), (error: unknown) => {
    assert.ok(error instanceof CheckpointError, `expected a CheckpointError, got ${error}`);
    assert.equal(error.code, code, error.message);
    for (const pattern of patterns) assert.match(error.message, pattern);
    return true;
  });
}

describe('number formats', () => {
  it('known f16 and bf16 bit patterns', () => {
    assert.equal(floatToF16(1), 0x3c00);
    assert.equal(floatToF16(65504), 0x7bff);
    assert.equal(floatToF16(2 ** -24), 0x0001);
    assert.equal(floatToF16(-2), 0xc000);
    assert.equal(floatToF16(1e6), 0x7c00);
    assert.equal(f16ToFloat(0x3555), 0.333251953125);
    const bf16 = (x: number) => new Uint16Array(float32ToBytes(Float32Array.of(x), 'BF16').buffer)[0];
    assert.equal(bf16(1), 0x3f80);
    assert.equal(bf16(-2), 0xc000);
    // round to nearest even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 → 1 (even)
    assert.equal(bf16(1 + 2 ** -8), 0x3f80);
    // 1 + 3·2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 → 1 + 2^-6
    assert.equal(bf16(1 + 3 * 2 ** -8), 0x3f82);
  });

  it('f16 decoding agrees with a bit-by-bit decoder for all 65536 patterns', () => {
    for (let h = 0; h < 65536; h++) {
      const sign = h >> 15;
      const exp = (h >> 10) & 31;
      const frac = h & 1023;
      let expected: number;
      if (exp === 31) expected = frac ? NaN : sign ? -Infinity : Infinity;
      else {
        let mantissa = 0;
        for (let bit = 0; bit < 10; bit++) if (frac & (1 << bit)) mantissa += 2 ** (bit - 10);
        expected = (sign ? -1 : 1) * (exp === 0 ? mantissa * 2 ** -14 : (1 + mantissa) * 2 ** (exp - 15));
      }
      const got = bytesToFloat32(new Uint8Array(Uint16Array.of(h).buffer), 'F16')[0];
      assert.ok(Object.is(got, expected) || (Number.isNaN(got) && Number.isNaN(expected)), `0x${h.toString(16)}: ${got} vs ${expected}`);
      if (!Number.isNaN(expected)) assert.equal(floatToF16(expected), h, `re-encoding 0x${h.toString(16)}`);
    }
  });

  it('encode → decode → encode is stable for every dtype, and f32 is exact', () => {
    fc.assert(
      fc.property(fc.array(fc.float({ noNaN: true }), { maxLength: 50 }), fc.constantFrom<DType>('F32', 'F16', 'BF16'), (values, dtype) => {
        const input = Float32Array.from(values);
        const bytes = float32ToBytes(input, dtype);
        const decoded = bytesToFloat32(bytes, dtype);
        if (dtype === 'F32') assert.deepEqual(decoded, input);
        assert.deepEqual(float32ToBytes(decoded, dtype), bytes);
        // rounding error within half a unit in the last place of the format (finite values)
        const bits = dtype === 'BF16' ? 8 : dtype === 'F16' ? 11 : 24;
        input.forEach((x, i) => {
          if (!Number.isFinite(decoded[i]) || Math.abs(x) < 2 ** -14) return;
          assert.ok(Math.abs(decoded[i] - x) <= Math.abs(x) * 2 ** -bits * 1.0001, `${x} → ${decoded[i]}`);
        });
      }),
    );
  });

  it('decodes bytes at odd offsets', () => {
    const bytes = float32ToBytes(Float32Array.of(1.5, -2.25), 'F32');
    const odd = new Uint8Array(bytes.length + 1);
    odd.set(bytes, 1);
    assert.deepEqual(Array.from(bytesToFloat32(odd.subarray(1), 'F32')), [1.5, -2.25]);
  });
});

describe('safetensors files', () => {
  it('write → read round trip for every dtype and shape', () => {
    const dir = synthetic().dir;
    fc.assert(
      fc.property(
        fc.array(fc.record({ dtype: fc.constantFrom<DType>('F32', 'F16', 'BF16'), shape: fc.array(fc.integer({ min: 0, max: 5 }), { maxLength: 3 }) }), { minLength: 1, maxLength: 6 }),
        (specs) => {
          const file = join(dir, 'roundtrip.safetensors');
          const tensors = specs.map((spec, i) => {
            const n = spec.shape.reduce((a, b) => a * b, 1);
            return { name: `t${i}`, dtype: spec.dtype, shape: spec.shape, data: float32ToBytes(Float32Array.from({ length: n }, (_, j) => j * 0.37 - i), spec.dtype) };
          });
          writeSafetensors(file, tensors);
          const { tensors: infos, metadata } = readSafetensorsHeader(file);
          assert.deepEqual(metadata, { format: 'pt' });
          for (const t of tensors) {
            const info = infos.get(t.name)!;
            assert.equal(info.dtype, t.dtype);
            assert.deepEqual(info.shape, t.shape);
            assert.deepEqual(readTensorBytes(info), t.data);
          }
          // the header is padded to a multiple of 8 bytes, as the Python library writes it
          assert.equal(Number(readFileSync(file).readBigUInt64LE(0)) % 8, 0);
        },
      ),
      { numRuns: 50 },
    );
  });
});

describe('loadCheckpoint', () => {
  for (const [label, config, options] of [
    ['P = 2, bf16, tied', tinyConfigJson(), { dtype: 'BF16' }],
    ['P = 1, f32, untied', tinyConfigJson({ parscale_n: 1, tie_word_embeddings: false }), { dtype: 'F32' }],
    ['plain qwen2, f16, sharded in 3', tinyConfigJson({ model_type: 'qwen2', parscale_n: undefined }), { dtype: 'F16', shards: 3 }],
    ['P = 4, bf16, sharded in 2', tinyConfigJson({ parscale_n: 4 }), { dtype: 'BF16', shards: 2 }],
  ] as const) {
    it(`loads a good checkpoint: ${label}`, async () => {
      const { dir, tensors } = synthetic(config as Record<string, unknown>, options);
      const events: number[] = [];
      const checkpoint = await loadCheckpoint(dir, { onProgress: (e) => events.push(e.loadedBytes) });
      assert.equal(checkpoint.tensors.size, tensors.length);
      for (const t of tensors) assert.deepEqual(tensorToFloat32(checkpoint.tensors.get(t.name)!), bytesToFloat32(t.data, t.dtype));
      assert.ok(events.every((v, i) => i === 0 || v >= events[i - 1]), 'progress is monotone');
      assert.equal(events[events.length - 1], checkpoint.weightBytes);
    });
  }

  it('an already-aborted signal rejects with AbortError', async () => {
    const { dir } = synthetic();
    const controller = new AbortController();
    controller.abort();
    await assert.rejects(loadCheckpoint(dir, { signal: controller.signal }), { name: 'AbortError' });
  });

  it('a missing model folder', async () => {
    await rejectsWith('/nonexistent/model', 'FILE_NOT_FOUND', /\/nonexistent\/model/);
  });

  it('a truncated file (data section cut short)', async () => {
    const { dir } = synthetic();
    const file = join(dir, 'model.safetensors');
    truncateSync(file, readFileSync(file).length - 10);
    await rejectsWith(dir, 'SAFETENSORS_TRUNCATED', new RegExp(file), /truncated/);
  });

  it('a file shorter than the 8-byte header length', async () => {
    const { dir } = synthetic();
    writeFileSync(join(dir, 'model.safetensors'), Buffer.from([1, 2, 3]));
    await rejectsWith(dir, 'SAFETENSORS_TRUNCATED', /too short/);
  });

  it('a header length past the end of the file', async () => {
    const { dir } = synthetic();
    const file = join(dir, 'model.safetensors');
    const buffer = readFileSync(file);
    buffer.writeBigUInt64LE(BigInt(buffer.length), 0);
    writeFileSync(file, buffer);
    await rejectsWith(dir, 'SAFETENSORS_TRUNCATED', /header length \d+ runs past the end/);
  });

  it('a header that is not JSON, or not an object', async () => {
    const { dir } = synthetic();
    const file = join(dir, 'model.safetensors');
    const original = readFileSync(file);
    editHeader(file, () => null, '{"model.norm.weight": ');
    await rejectsWith(dir, 'SAFETENSORS_HEADER', /not valid JSON/, new RegExp(file));
    writeFileSync(file, original);
    editHeader(file, () => null, '[1, 2, 3]');
    await rejectsWith(dir, 'SAFETENSORS_HEADER', /not a JSON object/);
  });

  it('offsets out of range, overlapping, or not matching the shape', async () => {
    const { dir } = synthetic();
    const file = join(dir, 'model.safetensors');
    const original = readFileSync(file);
    editHeader(file, (h) => {
      const [b, e] = h['model.norm.weight'].data_offsets;
      h['model.norm.weight'].data_offsets = [b + 1e6, e + 1e6];
    });
    await rejectsWith(dir, 'SAFETENSORS_TRUNCATED', /"model\.norm\.weight" ends at data byte/);
    writeFileSync(file, original);
    editHeader(file, (h) => {
      h['model.norm.weight'].data_offsets = [...h['model.embed_tokens.weight'].data_offsets];
      h['model.norm.weight'].shape = [h['model.embed_tokens.weight'].shape[0] * h['model.embed_tokens.weight'].shape[1]];
    });
    await rejectsWith(dir, 'SAFETENSORS_OFFSETS', /overlap/);
    writeFileSync(file, original);
    editHeader(file, (h) => {
      const [b, e] = h['model.norm.weight'].data_offsets;
      h['model.norm.weight'].data_offsets = [b, e - 2];
    });
    await rejectsWith(dir, 'SAFETENSORS_OFFSETS', /"model\.norm\.weight".*needs 16/);
    writeFileSync(file, original);
    editHeader(file, (h) => {
      const [b, e] = h['model.norm.weight'].data_offsets;
      h['model.norm.weight'].data_offsets = [e, b];
    });
    await rejectsWith(dir, 'SAFETENSORS_OFFSETS', /end before they begin/);
  });

  it('an unknown or unsupported dtype', async () => {
    const { dir } = synthetic();
    const file = join(dir, 'model.safetensors');
    const original = readFileSync(file);
    editHeader(file, (h) => void (h['model.norm.weight'].dtype = 'I8'));
    await rejectsWith(dir, 'SAFETENSORS_DTYPE', /"model\.norm\.weight" has dtype I8 \(a safetensors dtype we do not load\)/);
    writeFileSync(file, original);
    editHeader(file, (h) => void (h['model.norm.weight'].dtype = 'Q4_K'));
    await rejectsWith(dir, 'SAFETENSORS_DTYPE', /Q4_K \(not a safetensors dtype\)/);
  });

  it('a tensor with the wrong shape, a missing tensor, an unexpected tensor', async () => {
    const { dir } = synthetic();
    const file = join(dir, 'model.safetensors');
    const original = readFileSync(file);
    editHeader(file, (h) => {
      const norm = h['model.norm.weight'];
      h['model.norm.weight'] = { ...norm, shape: [2, 4] };
    });
    await rejectsWith(dir, 'TENSOR_SHAPE', /"model\.norm\.weight" has shape \[2,4\], but config\.json implies \[8\]/, new RegExp(file));
    writeFileSync(file, original);
    editHeader(file, (h) => void delete h['model.layers.1.self_attn.prefix_v']);
    await rejectsWith(dir, 'TENSOR_MISSING', /"model\.layers\.1\.self_attn\.prefix_v" \(shape \[2,1,3,4\]\) is missing/);
  });

  it('an unexpected tensor is named, with a hint when the config explains it', async () => {
    const { dir: dir2 } = synthetic(tinyConfigJson({ tie_word_embeddings: false }));
    writeFileSync(join(dir2, 'config.json'), JSON.stringify(tinyConfigJson({ tie_word_embeddings: true })));
    await rejectsWith(dir2, 'TENSOR_UNEXPECTED', /unexpected tensor "lm_head\.weight" \(config\.json says tie_word_embeddings: true\)/);
    const { dir: dir3 } = synthetic(tinyConfigJson({ parscale_n: 2 }));
    writeFileSync(join(dir3, 'config.json'), JSON.stringify(tinyConfigJson({ parscale_n: 1 })));
    await rejectsWith(dir3, 'TENSOR_UNEXPECTED', /"model\.layers\.0\.self_attn\.prefix_k" \(config\.json says parscale_n: 1\)/);
  });

  it('a missing shard, and an index that names the wrong shard', async () => {
    const { dir } = synthetic(tinyConfigJson(), { shards: 3 });
    const index = JSON.parse(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8'));
    const [name, shard] = Object.entries(index.weight_map as Record<string, string>).find(([, s]) => s.startsWith('model-00002'))!;
    const moved = { ...index, weight_map: { ...index.weight_map, [name]: 'model-00003-of-00003.safetensors' } };
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify(moved));
    await rejectsWith(dir, 'INDEX_INVALID', new RegExp(`"${name.replaceAll('.', '\\.')}" is listed in model-00003-of-00003\\.safetensors but stored in ${shard}`));
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify(index));
    unlinkSync(join(dir, shard));
    await rejectsWith(dir, 'SHARD_MISSING', new RegExp(join(dir, shard)), /is missing/);
  });

  it('no weights at all', async () => {
    const { dir } = synthetic();
    unlinkSync(join(dir, 'model.safetensors'));
    await rejectsWith(dir, 'FILE_NOT_FOUND', /expected model\.safetensors or model\.safetensors\.index\.json/);
  });

  it('config.json missing, not JSON, or with bad values', async () => {
    const { dir } = synthetic();
    const configFile = join(dir, 'config.json');
    writeFileSync(configFile, '{ "model_type": ');
    await rejectsWith(dir, 'CONFIG_INVALID', /config\.json: not valid JSON/);
    unlinkSync(configFile);
    await rejectsWith(dir, 'FILE_NOT_FOUND', /config\.json not found/);
  });
});

describe('config validation', () => {
  const check = (overrides: Record<string, unknown>, code: string, pattern: RegExp) => {
    assert.throws(
      () => parseConfig(tinyConfigJson(overrides), '/models/x/config.json'),
      (e: unknown) => e instanceof CheckpointError && e.code === code && pattern.test(e.message) && e.message.includes('/models/x/config.json'),
    );
  };
  it('names the key and what was expected', () => {
    check({ hidden_size: undefined }, 'CONFIG_MISSING_KEY', /"hidden_size" is missing/);
    check({ num_key_value_heads: 3, num_attention_heads: 4 }, 'CONFIG_INVALID', /"num_key_value_heads" must be a divisor of num_attention_heads \(4\)/);
    check({ hidden_size: 10, num_attention_heads: 4, num_key_value_heads: 2 }, 'CONFIG_INVALID', /"hidden_size" must be divisible by num_attention_heads/);
    check({ parscale_n: 0 }, 'CONFIG_INVALID', /"parscale_n" must be a positive integer, found 0/);
    check({ parscale_attn_smooth: 1.5 }, 'CONFIG_INVALID', /"parscale_attn_smooth"/);
    check({ rope_scaling: { type: 'linear', factor: 2 } }, 'CONFIG_UNSUPPORTED', /"rope_scaling"/);
    check({ use_sliding_window: true }, 'CONFIG_UNSUPPORTED', /"use_sliding_window"/);
    check({ hidden_act: 'gelu' }, 'CONFIG_UNSUPPORTED', /"hidden_act" = "gelu"/);
    check({ model_type: 'llama' }, 'CONFIG_UNSUPPORTED', /"model_type"/);
    check({ head_dim: 3, hidden_size: 6, num_attention_heads: 2 }, 'CONFIG_INVALID', /"head_dim" must be even/);
  });

  it('plain qwen2 is P = 1 and eos may be a list', () => {
    const config = parseConfig(tinyConfigJson({ model_type: 'qwen2', parscale_n: 4, eos_token_id: [1, 2] }), 'config.json');
    assert.equal(config.parscaleN, 1);
    assert.deepEqual(config.eosTokenIds, [1, 2]);
  });
});
