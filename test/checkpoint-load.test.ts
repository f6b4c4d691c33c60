// loadCheckpoint on whole folders: synthetic checkpoints of every kind (single file and shards,
// tied and untied, P = 1 and P > 1, bf16/f16/f32 and mixed), the PyTorch-written fixtures,
// progress and abort, and every folder-level mistake with its code, file and tensor.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, describe, it } from 'node:test';
import { expectedTensors, readConfig } from '../src/checkpoint/config.ts';
import { type LoadProgress, loadCheckpoint, tensorToFloat32 } from '../src/checkpoint/load.ts';
import { type DType, float32ToBytes, readSafetensorsHeader, readTensorBytes, writeSafetensors } from '../src/checkpoint/safetensors.ts';
import { rejectsWithCheckpointError } from './helpers/checkpoint-errors.ts';
import { type SyntheticOptions, tinyConfigJson, writeSyntheticCheckpoint } from './helpers/synthetic-checkpoint.ts';

const scratch = mkdtempSync(join(tmpdir(), 'parscale-load-'));
after(() => rmSync(scratch, { recursive: true, force: true }));
let folders = 0;
const newFolder = () => mkdtempSync(join(scratch, `${folders++}-`));

function synthetic(configJson: Record<string, unknown> = tinyConfigJson(), options: SyntheticOptions = {}) {
  return writeSyntheticCheckpoint(newFolder(), configJson, options);
}

const sameBits = (a: Float32Array, b: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

describe('loading good checkpoints', { timeout: 60_000 }, () => {
  const mixed = (name: string): DType => (name.endsWith('.bias') ? 'F32' : name.includes('norm') ? 'F16' : 'BF16');
  const variants: [string, Record<string, unknown>, SyntheticOptions][] = [
    ['P = 2, bf16, tied, one file', tinyConfigJson(), { dtype: 'BF16' }],
    ['P = 1, f32, untied, one file', tinyConfigJson({ parscale_n: 1, tie_word_embeddings: false }), { dtype: 'F32' }],
    ['plain qwen2 (no parscale keys), f16, untied, 3 shards', tinyConfigJson({ model_type: 'qwen2', parscale_n: undefined, parscale_n_tokens: undefined, parscale_attn_smooth: undefined, tie_word_embeddings: false }), { dtype: 'F16', shards: 3 }],
    ['P = 4, bf16, untied, 2 shards', tinyConfigJson({ parscale_n: 4, tie_word_embeddings: false }), { dtype: 'BF16', shards: 2 }],
    ['P = 8, T = 5, head_dim 6, tied, 4 shards', tinyConfigJson({ parscale_n: 8, parscale_n_tokens: 5, head_dim: 6, hidden_size: 10 }), { dtype: 'BF16', shards: 4, seed: 9 }],
    ['P = 2, mixed dtypes', tinyConfigJson(), { dtype: mixed }],
  ];
  for (const [label, configJson, options] of variants) {
    it(label, async () => {
      const written = synthetic(configJson, options);
      const checkpoint = await loadCheckpoint(written.dir);
      assert.equal(checkpoint.dir, written.dir);
      assert.deepEqual(checkpoint.config, written.config);
      const expected = expectedTensors(written.config);
      assert.deepEqual([...checkpoint.tensors.keys()], [...expected.keys()], 'exactly the expected tensors, in expectedTensors order');
      let bytes = 0;
      for (const [name, tensor] of checkpoint.tensors) {
        const stored = written.tensors.find((t) => t.name === name)!;
        assert.equal(tensor.name, name);
        assert.equal(tensor.dtype, stored.dtype, name);
        assert.deepEqual(tensor.shape, expected.get(name), name);
        assert.deepEqual(tensor.data, stored.data, name);
        assert.ok(sameBits(tensorToFloat32(tensor), written.values.get(name)!), `${name}: values`);
        bytes += tensor.data.byteLength;
      }
      assert.equal(checkpoint.weightBytes, bytes);
      assert.equal('lm_head.weight' in Object.fromEntries(checkpoint.tensors), !written.config.tieWordEmbeddings);
    });
  }

  it('a relative folder path gives the absolute folder', async () => {
    const { dir } = synthetic();
    const checkpoint = await loadCheckpoint(relative(process.cwd(), dir));
    assert.equal(checkpoint.dir, dir);
  });

  it('every PyTorch-written fixture in test/fixtures', async () => {
    const fixtures = join(import.meta.dirname, 'fixtures');
    const names = readdirSync(fixtures).filter((n) => existsSync(join(fixtures, n, 'config.json')));
    assert.ok(names.length >= 7);
    for (const name of names) {
      const checkpoint = await loadCheckpoint(join(fixtures, name));
      assert.equal(checkpoint.tensors.size, expectedTensors(readConfig(join(fixtures, name))).size, name);
    }
  });

  it('ignores rotary inverse frequencies that older exporters saved', async () => {
    const { dir, files, tensors } = synthetic(tinyConfigJson({ parscale_n: 1 }), { dtype: 'F32' });
    const invFreq = (name: string) => ({ name, dtype: 'F32' as const, shape: [2], data: float32ToBytes(Float32Array.of(1, 0.01), 'F32') });
    writeSafetensors(files[0], [...tensors, invFreq('model.rotary_emb.inv_freq'), invFreq('model.layers.0.self_attn.rotary_emb.inv_freq')]);
    const checkpoint = await loadCheckpoint(dir);
    assert.equal(checkpoint.tensors.size, tensors.length);
    assert.ok(!checkpoint.tensors.has('model.rotary_emb.inv_freq'));
  });
});

describe('progress and abort', { timeout: 60_000 }, () => {
  it('progress rises monotonically, per file and overall, and ends at totalBytes = weightBytes', async () => {
    const { dir, tensors, files } = synthetic(tinyConfigJson({ parscale_n: 4 }), { shards: 3 });
    const events: LoadProgress[] = [];
    const checkpoint = await loadCheckpoint(dir, { onProgress: (e) => events.push({ ...e }) });
    assert.ok(events.length >= tensors.length, `${events.length} events for ${tensors.length} tensors`);
    for (let i = 1; i < events.length; i++) {
      assert.ok(events[i].loadedBytes >= events[i - 1].loadedBytes, 'overall progress never goes back');
      if (events[i].file === events[i - 1].file) assert.ok(events[i].fileLoadedBytes >= events[i - 1].fileLoadedBytes);
    }
    const last = events[events.length - 1];
    assert.equal(last.loadedBytes, last.totalBytes);
    assert.equal(last.totalBytes, checkpoint.weightBytes);
    assert.ok(events.every((e) => e.totalBytes === checkpoint.weightBytes));
    // each file is read in one go, and its last event shows it complete
    const fileOrder = events.map((e) => e.file).filter((f, i, all) => i === 0 || all[i - 1] !== f);
    assert.deepEqual(fileOrder, files);
    let sumOfFiles = 0;
    for (const file of files) {
      const last = events.filter((e) => e.file === file).at(-1)!;
      assert.equal(last.fileLoadedBytes, last.fileTotalBytes, file);
      sumOfFiles += last.fileTotalBytes;
    }
    assert.equal(sumOfFiles, checkpoint.weightBytes);
  });

  it('an already-aborted signal rejects with an AbortError before touching the folder', async () => {
    const { dir } = synthetic();
    const controller = new AbortController();
    controller.abort();
    await assert.rejects(loadCheckpoint(dir, { signal: controller.signal }), { name: 'AbortError' });
    await assert.rejects(loadCheckpoint(join(scratch, 'no-such-folder'), { signal: controller.signal }), { name: 'AbortError' });
  });

  it('a large tensor reports progress in pieces, and yields to the event loop so an abort lands mid-load', async () => {
    // one ~80 MB embedding (V 40000 × H 1024, bf16): bigger than the 64 MB between yields
    const big = tinyConfigJson({ vocab_size: 40_000, hidden_size: 1024, intermediate_size: 16, num_hidden_layers: 1, parscale_n: 1 });
    const { dir } = synthetic(big, { dtype: 'BF16' });
    const embedBytes = 40_000 * 1024 * 2;

    const events: LoadProgress[] = [];
    const checkpoint = await loadCheckpoint(dir, { onProgress: (e) => events.push({ ...e }) });
    const duringEmbedding = events.filter((e) => e.loadedBytes <= embedBytes);
    assert.ok(duringEmbedding.length >= 4, `${duringEmbedding.length} events while reading the 80 MB embedding`);

    // The abort is queued before the load starts; a load that never yielded would finish first.
    const controller = new AbortController();
    setImmediate(() => controller.abort());
    let lastLoaded = 0;
    await assert.rejects(loadCheckpoint(dir, { signal: controller.signal, onProgress: (e) => (lastLoaded = e.loadedBytes) }), { name: 'AbortError' });
    assert.ok(lastLoaded > 0 && lastLoaded < checkpoint.weightBytes, `stopped after ${lastLoaded} of ${checkpoint.weightBytes} bytes`);
  });

  it('an abort during loading stops at the next tensor', async () => {
    const { dir } = synthetic();
    const controller = new AbortController();
    let events = 0;
    const onProgress = () => {
      events++;
      controller.abort();
    };
    await assert.rejects(loadCheckpoint(dir, { signal: controller.signal, onProgress }), { name: 'AbortError' });
    assert.equal(events, 1, 'no tensor is read after the abort');
  });
});

describe('bad checkpoint folders', { timeout: 60_000 }, () => {
  it('a model folder that does not exist, or is a file', async () => {
    const missing = join(scratch, 'does', 'not', 'exist');
    await rejectsWithCheckpointError(loadCheckpoint(missing), { code: 'FILE_NOT_FOUND', file: missing, message: [/model folder not found/] });
    const { files } = synthetic();
    await rejectsWithCheckpointError(loadCheckpoint(files[0]), { code: 'FILE_NOT_FOUND', file: files[0], message: [/not a folder/] });
  });

  it('a missing config.json, or one that is not JSON', async () => {
    const { dir } = synthetic();
    const configFile = join(dir, 'config.json');
    writeFileSync(configFile, '{ "model_type": ');
    await rejectsWithCheckpointError(loadCheckpoint(dir), { code: 'CONFIG_INVALID', file: configFile, message: [/not valid JSON/] });
    unlinkSync(configFile);
    await rejectsWithCheckpointError(loadCheckpoint(dir), { code: 'FILE_NOT_FOUND', file: configFile, message: [/config\.json not found/] });
  });

  it('a config.json that fails validation', async () => {
    const { dir } = synthetic();
    writeFileSync(join(dir, 'config.json'), JSON.stringify(tinyConfigJson({ rope_scaling: { type: 'linear', factor: 2 } })));
    await rejectsWithCheckpointError(loadCheckpoint(dir), { code: 'CONFIG_UNSUPPORTED', file: join(dir, 'config.json'), key: 'rope_scaling' });
  });

  it('no weights at all, and only PyTorch .bin weights', async () => {
    const { dir, files } = synthetic();
    unlinkSync(files[0]);
    await rejectsWithCheckpointError(loadCheckpoint(dir), { code: 'FILE_NOT_FOUND', file: dir, message: [/expected model\.safetensors or model\.safetensors\.index\.json/] });
    writeFileSync(join(dir, 'pytorch_model.bin'), 'pickle');
    await rejectsWithCheckpointError(loadCheckpoint(dir), { code: 'FILE_NOT_FOUND', file: dir, message: [/PyTorch \.bin weights, which are not supported/] });
  });

  it('shards without their index', async () => {
    const { dir } = synthetic(tinyConfigJson(), { shards: 2 });
    unlinkSync(join(dir, 'model.safetensors.index.json'));
    await rejectsWithCheckpointError(loadCheckpoint(dir), { code: 'FILE_NOT_FOUND', file: dir, message: [/model-00001-of-00002\.safetensors.*but no model\.safetensors\.index\.json/] });
  });

  it('a tensor with the wrong shape', async () => {
    // the checkpoint has 3 prefix tokens, the config claims 4
    const { dir, files } = synthetic(tinyConfigJson({ parscale_n_tokens: 3 }));
    writeFileSync(join(dir, 'config.json'), JSON.stringify(tinyConfigJson({ parscale_n_tokens: 4 })));
    await rejectsWithCheckpointError(loadCheckpoint(dir), {
      code: 'TENSOR_SHAPE',
      file: files[0],
      tensor: 'model.layers.0.self_attn.prefix_k',
      message: [/has shape \[2,1,3,4\], but config\.json implies \[2,1,4,4\]/],
    });
  });

  it('a missing tensor', async () => {
    const { dir, files, tensors } = synthetic();
    writeSafetensors(files[0], tensors.filter((t) => t.name !== 'model.layers.1.mlp.up_proj.weight'));
    await rejectsWithCheckpointError(loadCheckpoint(dir), {
      code: 'TENSOR_MISSING',
      file: files[0],
      tensor: 'model.layers.1.mlp.up_proj.weight',
      message: [/\(shape \[12,8\]\) is missing; searched/],
    });
  });

  it('a missing lm_head in an untied checkpoint says which config key to look at', async () => {
    const { dir } = synthetic(tinyConfigJson({ tie_word_embeddings: true }));
    writeFileSync(join(dir, 'config.json'), JSON.stringify(tinyConfigJson({ tie_word_embeddings: false })));
    await rejectsWithCheckpointError(loadCheckpoint(dir), { code: 'TENSOR_MISSING', tensor: 'lm_head.weight', message: [/config\.json says tie_word_embeddings: false/] });
  });

  it('a missing tensor in a sharded checkpoint names the index and the shards searched', async () => {
    const { dir, files, tensors } = synthetic(tinyConfigJson(), { shards: 2 });
    const index = JSON.parse(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8'));
    delete index.weight_map['model.norm.weight'];
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify(index));
    const shard = files.find((f) => readSafetensorsHeader(f).tensors.has('model.norm.weight'))!;
    writeSafetensors(shard, [...readSafetensorsHeader(shard).tensors.values()].filter((t) => t.name !== 'model.norm.weight').map((t) => ({ ...t, data: readTensorBytes(t) })));
    assert.ok(tensors.length > 0);
    await rejectsWithCheckpointError(loadCheckpoint(dir), {
      code: 'TENSOR_MISSING',
      file: join(dir, 'model.safetensors.index.json'),
      tensor: 'model.norm.weight',
      message: [/model-00001-of-00002\.safetensors, model-00002-of-00002\.safetensors/],
    });
  });

  it('an unexpected tensor', async () => {
    const { dir, files, tensors } = synthetic();
    const extra = { name: 'model.layers.0.self_attn.q_norm.weight', dtype: 'BF16' as const, shape: [4], data: new Uint8Array(8) };
    writeSafetensors(files[0], [...tensors, extra]);
    await rejectsWithCheckpointError(loadCheckpoint(dir), { code: 'TENSOR_UNEXPECTED', file: files[0], tensor: extra.name });
  });

  it('unexpected tensors explained by the config get a hint', async () => {
    const untied = synthetic(tinyConfigJson({ tie_word_embeddings: false }));
    writeFileSync(join(untied.dir, 'config.json'), JSON.stringify(tinyConfigJson({ tie_word_embeddings: true })));
    await rejectsWithCheckpointError(loadCheckpoint(untied.dir), { code: 'TENSOR_UNEXPECTED', tensor: 'lm_head.weight', message: [/config\.json says tie_word_embeddings: true/] });
    const parscale = synthetic(tinyConfigJson({ parscale_n: 2 }));
    writeFileSync(join(parscale.dir, 'config.json'), JSON.stringify(tinyConfigJson({ parscale_n: 1 })));
    await rejectsWithCheckpointError(loadCheckpoint(parscale.dir), { code: 'TENSOR_UNEXPECTED', tensor: 'model.layers.0.self_attn.prefix_k', message: [/config\.json says parscale_n: 1/] });
    const deeper = synthetic(tinyConfigJson({ num_hidden_layers: 3 }));
    writeFileSync(join(deeper.dir, 'config.json'), JSON.stringify(tinyConfigJson({ num_hidden_layers: 2 })));
    await rejectsWithCheckpointError(loadCheckpoint(deeper.dir), { code: 'TENSOR_UNEXPECTED', message: [/"model\.layers\.2\..*config\.json says num_hidden_layers: 2/] });
  });

  it('a missing shard names the shard file and a tensor that lives in it', async () => {
    const { dir, files } = synthetic(tinyConfigJson(), { shards: 3 });
    const index = JSON.parse(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8'));
    const held = Object.keys(index.weight_map).filter((name) => index.weight_map[name] === 'model-00002-of-00003.safetensors');
    renameSync(files[1], `${files[1]}.partial`);
    await assert.rejects(loadCheckpoint(dir), (error: any) => {
      assert.equal(error.code, 'SHARD_MISSING');
      assert.equal(error.file, files[1]);
      assert.ok(error.message.includes(files[1]), error.message);
      assert.ok(held.includes(error.tensor), `${error.tensor} lives in the missing shard`);
      assert.ok(error.message.includes(`"${error.tensor}"`), error.message);
      return true;
    });
  });

  it('an index that names the wrong shard for a tensor', async () => {
    const { dir } = synthetic(tinyConfigJson(), { shards: 3 });
    const indexFile = join(dir, 'model.safetensors.index.json');
    const index = JSON.parse(readFileSync(indexFile, 'utf8'));
    const name = Object.keys(index.weight_map).find((n) => index.weight_map[n] === 'model-00002-of-00003.safetensors')!;
    index.weight_map[name] = 'model-00003-of-00003.safetensors';
    writeFileSync(indexFile, JSON.stringify(index));
    await rejectsWithCheckpointError(loadCheckpoint(dir), {
      code: 'INDEX_INVALID',
      file: indexFile,
      tensor: name,
      message: [/is listed in model-00003-of-00003\.safetensors but stored in model-00002-of-00003\.safetensors/],
    });
  });

  it('an index that lists a tensor its shard does not hold', async () => {
    const { dir, files } = synthetic(tinyConfigJson(), { shards: 2 });
    const indexFile = join(dir, 'model.safetensors.index.json');
    const index = JSON.parse(readFileSync(indexFile, 'utf8'));
    index.weight_map['model.layers.0.self_attn.rotary_emb.inv_freq'] = 'model-00001-of-00002.safetensors';
    writeFileSync(indexFile, JSON.stringify(index));
    await rejectsWithCheckpointError(loadCheckpoint(dir), { code: 'TENSOR_MISSING', file: files[0], tensor: 'model.layers.0.self_attn.rotary_emb.inv_freq' });
  });

  it('a tensor stored in two shards', async () => {
    const { dir, files, tensors } = synthetic(tinyConfigJson(), { shards: 2 });
    const second = [...readSafetensorsHeader(files[1]).tensors.values()].map((t) => ({ ...t, data: readTensorBytes(t) }));
    const stray = tensors.find((t) => t.name === 'model.embed_tokens.weight')!; // lives in shard 1
    writeSafetensors(files[1], [...second, stray]);
    await rejectsWithCheckpointError(loadCheckpoint(dir), { code: 'INDEX_INVALID', file: files[1], tensor: stray.name, message: [/stored twice/] });
  });

  it('an index that is not JSON, lacks weight_map, or points outside the folder', async () => {
    const { dir } = synthetic(tinyConfigJson(), { shards: 2 });
    const indexFile = join(dir, 'model.safetensors.index.json');
    const original = readFileSync(indexFile, 'utf8');
    writeFileSync(indexFile, '{"weight_map": {');
    await rejectsWithCheckpointError(loadCheckpoint(dir), { code: 'INDEX_INVALID', file: indexFile, message: [/not valid JSON/] });
    writeFileSync(indexFile, '{"metadata": {}}');
    await rejectsWithCheckpointError(loadCheckpoint(dir), { code: 'INDEX_INVALID', file: indexFile, message: [/"weight_map"/] });
    const index = JSON.parse(original);
    index.weight_map['model.norm.weight'] = '../elsewhere/model.safetensors';
    writeFileSync(indexFile, JSON.stringify(index));
    await rejectsWithCheckpointError(loadCheckpoint(dir), { code: 'INDEX_INVALID', file: indexFile, tensor: 'model.norm.weight' });
  });

  it('a damaged shard is reported by its own path, before any data is read', async () => {
    const { dir, files } = synthetic(tinyConfigJson(), { shards: 3 });
    const bytes = readFileSync(files[2]);
    writeFileSync(files[2], bytes.subarray(0, bytes.length - 2));
    let events = 0;
    await rejectsWithCheckpointError(loadCheckpoint(dir, { onProgress: () => events++ }), { code: 'SAFETENSORS_TRUNCATED', file: files[2] });
    assert.equal(events, 0, 'validation happens before reading');
  });

  it('a safetensors file that is a folder', async () => {
    const { dir, files } = synthetic();
    unlinkSync(files[0]);
    mkdirSync(files[0]);
    await rejectsWithCheckpointError(loadCheckpoint(dir), { code: 'FILE_UNREADABLE', file: files[0], message: [/not a regular file/] });
  });
});
