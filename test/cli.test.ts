// The real `parscale` binary, run as a user would: help, one-line errors with exit code 2,
// generate on the embedded default model, chat on a random-weight model with the Qwen chat
// template (the default model is a plain text model without one), and Ctrl-C in the middle of a
// generation.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { productMultiplyAdds } from '../src/cli/bench.ts';

const repo = fileURLToPath(new URL('../', import.meta.url));
const bin = join(repo, 'bin/parscale.js');
const defaultModel = join(repo, 'models/default');
const chatModel = join(repo, 'test/models/random-qwen-p4');

function run(args: string[], input?: string) {
  const r = spawnSync(process.execPath, [bin, ...args], { input, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function assertUsageError(args: string[], pattern: RegExp) {
  const r = run(args);
  assert.equal(r.code, 2, `exit code for ${args.join(' ')}: stderr ${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line expected, got:\n${r.stderr}`);
  assert.match(lines[0], pattern);
  assert.doesNotMatch(r.stderr, /\bat .*\.ts:\d+/, 'no stack trace');
}

describe('parscale CLI', () => {
  it('--help lists the commands, and every command has --help', () => {
    const top = run(['--help']);
    assert.equal(top.code, 0);
    for (const command of ['generate', 'chat', 'info', 'dump']) {
      assert.match(top.stdout, new RegExp(`\\b${command}\\b`));
      const help = run([command, '--help']);
      assert.equal(help.code, 0, command);
      assert.match(help.stdout, new RegExp(`Usage: parscale ${command}`));
    }
  });

  it('bad commands, flags and values: one line on stderr, exit code 2', () => {
    assertUsageError(['frobnicate'], /unknown command "frobnicate"/);
    assertUsageError(['generate', '--model', defaultModel, '--bogus', 'x'], /Unknown option '--bogus'/);
    assertUsageError(['generate', '--model', defaultModel, '--temperature=-1', 'hi'], /--temperature must be a number ≥ 0/);
    assertUsageError(['generate', '--model', defaultModel, '--top-p', '0', 'hi'], /--top-p must be a number > 0 ≤ 1/);
    assertUsageError(['generate', '--model', defaultModel, '--top-p', '1.5', 'hi'], /--top-p/);
    assertUsageError(['generate', '--model', defaultModel, '--max-new-tokens', 'many', 'hi'], /--max-new-tokens must be an integer/);
    assertUsageError(['generate', '--model', '/nonexistent/model', 'hi'], /model folder not found: \/nonexistent\/model/);
    assertUsageError(['dump', '--model', defaultModel, '--ids', '1,x', '--out', '-'], /"x" is not a token id/);
    assertUsageError(['generate', '--model', defaultModel, '--backend', 'gpu', 'hi'], /--backend must be one of/);
    assertUsageError(['generate', '--model', defaultModel, '--weights', 'fp4', 'hi'], /--weights must be one of stored, int8, got "fp4"/);
    assertUsageError(['generate', '--model', defaultModel, '--weights', 'int8', '--backend', 'reference', 'hi'], /--weights int8 is an option of the wasm backend/);
    assertUsageError(['dump', '--model', defaultModel, '--ids', '1,2', '--weights', 'int8', '--out', '-'], /--weights int8 is an option of the wasm backend/);
    assertUsageError(['generate', '--model', defaultModel, '--max-context', '0', 'hi'], /--max-context must be an integer ≥ 1/);
  });

  it('a model folder without tokenizer.json is refused with a clear message', () => {
    const dir = mkdtempSync(join(tmpdir(), 'parscale-cli-'));
    try {
      cpSync(join(defaultModel, 'config.json'), join(dir, 'config.json'));
      assertUsageError(['generate', '--model', dir, 'hi'], /tokenizer\.json not found in the model folder/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a prompt longer than max_position_embeddings is refused', () => {
    const long = 'word '.repeat(5000);
    const r = run(['generate', '--model', defaultModel, '--no-progress', '-n', '1', long]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /max_position_embeddings/);
  });

  it('generate streams text from the embedded model and reports speed', () => {
    const r = run(['generate', '--model', defaultModel, '-n', '8', '--seed', '3', '--temperature', '0.8', 'Hello']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.startsWith('Hello'));
    assert.match(r.stderr, /loaded .* MB of weights/);
    assert.match(r.stderr, /prompt \d+ tokens .* generated \d+ tokens, .*tokens\/s/);
    // the same seed gives the same text
    const again = run(['generate', '--model', defaultModel, '-n', '8', '--seed', '3', '--temperature', '0.8', 'Hello']);
    assert.equal(again.stdout, r.stdout);
  });

  it('generate reads the prompt from standard input', () => {
    const r = run(['generate', '--model', defaultModel, '--no-progress', '-n', '4'], 'Piped prompt');
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.startsWith('Piped prompt'));
  });

  it('chat answers each line of a pipe and keeps the conversation', () => {
    const r = run(['chat', '--model', chatModel, '--no-progress', '-n', '4', '--stats'], 'Hi there\nAnd again\n');
    assert.equal(r.code, 0, r.stderr);
    // two answers, each with its stats line
    assert.equal(r.stderr.match(/generated \d+ tokens/g)?.length, 2, r.stderr);
  });

  it('chat with a model that has no chat template says so in one line', () => {
    assertUsageError(['chat', '--model', defaultModel, '--no-progress', '-n', '4'], /no chat_template; this model cannot chat/);
  });

  it('generate with --weights int8 runs the quantized model', () => {
    const r = run(['generate', '--model', defaultModel, '--no-progress', '--weights', 'int8', '--threads', '2', '-n', '4', 'Hello']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.startsWith('Hello'));
  });

  it('a model that cannot fit one WebAssembly memory is refused in one line, exit code 1', () => {
    const r = run(['generate', '--model', defaultModel, '--no-progress', '--max-context', '100000000', 'Hello']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^parscale generate: this model needs .* over the 4 GiB a wasm32 memory can address; use a smaller maxContext \(--max-context\): at most \d+ positions fit\n$/);
  });

  it('info shows the wasm memory with stored and with int8 weights', () => {
    const r = run(['info', '--model', defaultModel, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const { stored, int8 } = JSON.parse(r.stdout).wasm_memory;
    assert.ok(int8.weight_bytes < 0.6 * stored.weight_bytes, `${int8.weight_bytes} vs ${stored.weight_bytes}`);
    assert.equal(int8.kv_cache_bytes, stored.kv_cache_bytes);
    assert.ok(stored.fits_4_gib && int8.fits_4_gib);
    const text = run(['info', '--model', defaultModel]).stdout;
    assert.match(text, /wasm memory +stored weights .* fits in 4 GiB\n +int8 weights .* fits in 4 GiB/);
  });

  it('bench --json prints the fields the fast-path issue names, with the rooflines of the same run', () => {
    const r = run(['bench', '--model', defaultModel, '--threads', '2', '--prompt-tokens', '3', '--new-tokens', '3', '--runs', '1', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.P, 4);
    assert.equal(report.threads, 2);
    for (const key of ['prefill_tokens_per_s', 'decode_tokens_per_s', 'decode_ms_per_token', 'peak_rss_bytes', 'weight_bytes', 'read_loop_bytes_per_s_1_thread', 'read_loop_bytes_per_s_all_threads', 'madd_peak_per_s_1_thread']) {
      assert.ok(Number.isFinite(report[key]) && report[key] > 0, `${key}: ${report[key]}`);
    }
  });

  it('info summarises the embedded model', () => {
    const r = run(['info', '--model', defaultModel, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const info = JSON.parse(r.stdout);
    assert.ok(info.P > 1);
    assert.ok(info.parameters > info.parameters_without_embeddings);
    assert.ok(info.parscale_parameters > 0);
  });

  it('SIGINT stops a long generation promptly with exit code 130', async () => {
    const child = spawn(process.execPath, [bin, 'generate', '--model', defaultModel, '--no-progress', '-n', '100000', '--temperature', '1', 'Go'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    await new Promise<void>((resolve) => {
      child.stdout.on('data', (d) => {
        stdout += d;
        if (stdout.length > 'Go'.length) resolve();
      });
    });
    const sentAt = Date.now();
    child.kill('SIGINT');
    const code = await exited;
    assert.equal(code, 130, stderr);
    assert.ok(Date.now() - sentAt < 5000, 'stopped within 5 s');
    assert.match(stderr, /aborted/);
  });
});

describe('parscale bench: productMultiplyAdds', () => {
  it('counts the ParScale-1.8B shape by hand: 36 × (2 · 1536² + 2 · 1536 · 192 + 3 · 1536 · 8320) per stream, plus the LM head once', () => {
    const shape = { hiddenSize: 1536, intermediateSize: 8320, numLayers: 36, numHeads: 16, numKvHeads: 2, headDim: 96, vocabSize: 151936 };
    const perStream = 36 * (2 * 1536 * 1536 + 2 * 1536 * 192 + 3 * 1536 * 8320); // k and v: 2 KV heads of 96
    assert.equal(productMultiplyAdds(shape, 1), perStream + 151936 * 1536);
    assert.equal(productMultiplyAdds(shape, 8), 8 * perStream + 151936 * 1536);
  });
});
