// The vendored Qwen tokenizer through our Tokenizer class: round trips, ids known from the
// vocabulary file itself, special tokens, the chat template, and UTF-8-safe streaming.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { TextStreamer } from '../src/tokenizer/stream.ts';
import { Tokenizer, TokenizerError } from '../src/tokenizer/tokenizer.ts';

const dir = fileURLToPath(new URL('../models/qwen-tokenizer/', import.meta.url));
let tokenizer: Tokenizer;
before(async () => {
  tokenizer = await Tokenizer.fromDir(dir);
});

describe('Qwen tokenizer', () => {
  it('round-trips mixed English, Chinese, emoji, code and whitespace, and the empty string', () => {
    const samples = [
      '',
      'Hello, world!',
      '你好，世界。今天天气很好。',
      'Emoji: 🎉👩‍👩‍👧 and flags 🇫🇷',
      'def f(x):\n\treturn x ** 2  # square\n',
      '   leading and trailing spaces   \n\n',
      'Ünïcödé ÀÉÎÕÜ ß ﬁ',
    ];
    for (const text of samples) assert.equal(tokenizer.decode(tokenizer.encode(text)), text);
  });

  it('gives the ids that the vocabulary file assigns to whole-word tokens', () => {
    // Independent of our code: read the ids straight out of tokenizer.json's vocabulary. BPE
    // must encode a word that is itself a vocabulary entry as that single entry.
    const vocab = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')).model.vocab as Record<string, number>;
    assert.deepEqual(tokenizer.encode('Hello, world'), [vocab['Hello'], vocab[','], vocab['Ġworld']]);
    assert.deepEqual(tokenizer.encode(' the cat'), [vocab['Ġthe'], vocab['Ġcat']]);
    // The Qwen2 vocabulary as published: "Hello" is 9707, "," is 11, " world" is 1879.
    assert.deepEqual(tokenizer.encode('Hello, world'), [9707, 11, 1879]);
  });

  it('encodes the ChatML special tokens as single ids', () => {
    assert.deepEqual(tokenizer.encode('<|im_start|>'), [151644]);
    assert.deepEqual(tokenizer.encode('<|im_end|>'), [151645]);
    assert.deepEqual(tokenizer.encode('<|endoftext|>'), [151643]);
    assert.equal(tokenizer.tokenToId('<|im_end|>'), 151645);
    assert.equal(tokenizer.vocabSize, 151665);
  });

  it('keeps or skips special tokens on decode', () => {
    const ids = tokenizer.encode('<|im_start|>user\nhi<|im_end|>');
    assert.equal(tokenizer.decode(ids), '<|im_start|>user\nhi<|im_end|>');
    assert.equal(tokenizer.decode(ids, { skipSpecialTokens: true }), 'user\nhi');
  });

  it('a folder without tokenizer.json is a TokenizerError naming the path', async () => {
    await assert.rejects(Tokenizer.fromDir('/nonexistent/dir'), (e: Error) => e instanceof TokenizerError && /\/nonexistent\/dir\/tokenizer\.json/.test(e.message));
  });
});

describe('chat template', () => {
  it('renders a two-turn conversation as exact ChatML', () => {
    const text = tokenizer.applyChatTemplate(
      [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Hi' },
        { role: 'assistant', content: 'Hello!' },
        { role: 'user', content: 'Bye' },
      ],
      { addGenerationPrompt: true },
    );
    assert.equal(
      text,
      '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n' +
        '<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n',
    );
  });

  it('adds the default system message, and the generation prompt only when asked', () => {
    const text = tokenizer.applyChatTemplate([{ role: 'user', content: 'Hi' }]);
    assert.equal(text, '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n');
  });
});

describe('streaming detokenization', () => {
  const stream = (ids: number[], skip: boolean) => {
    const streamer = new TextStreamer(tokenizer, skip);
    const pieces = ids.map((id) => streamer.push(id));
    pieces.push(streamer.flush());
    return pieces;
  };

  it('streamed pieces of encoded unicode text equal the text, with no broken characters', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 40 }), (text) => {
        const ids = tokenizer.encode(text);
        const pieces = stream(ids, false);
        assert.equal(pieces.join(''), tokenizer.decode(ids));
        // a broken character would show as an extra U+FFFD; the text may hold some of its own
        const replacements = (t: string) => t.split('\uFFFD').length - 1;
        const inPieces = pieces.reduce((n, piece) => n + replacements(piece), 0);
        assert.equal(inPieces, replacements(text), `pieces ${JSON.stringify(pieces)} have ${inPieces} U+FFFD, the text ${replacements(text)}`);
      }),
      // a text holding U+FFFD itself (once failed an older form of this check), and emoji split over tokens
      { numRuns: 200, examples: [['\uFFFD'], ['a\uFFFDb 😀 漢字']] },
    );
  });

  it('random token ids, partial UTF-8 bytes included: pieces concatenate to the one-shot decode', () => {
    // byte tokens such as 'æ' (0xE6) start a three-byte character that never finishes
    fc.assert(
      fc.property(fc.array(fc.oneof(fc.integer({ min: 0, max: 151642 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 151643, max: 151664 })), { maxLength: 30 }), fc.boolean(), (ids, skip) => {
        const pieces = stream(ids, skip);
        const whole = tokenizer.decode(ids, { skipSpecialTokens: skip });
        assert.equal(pieces.join(''), whole);
        if (!whole.includes('\uFFFD')) for (const piece of pieces) assert.ok(!piece.includes('\uFFFD'));
      }),
      { numRuns: 300 },
    );
  });

  it('holds back a multi-byte character split across tokens until it is complete', () => {
    // rare four-byte characters are not in the vocabulary whole: BPE spells them in byte tokens
    const char = ['𠀋', '🦩', '𝔘', '🜲'].find((c) => tokenizer.encode(c).length > 1);
    assert.ok(char !== undefined, 'a character split across tokens');
    const pieces = stream(tokenizer.encode(char), false);
    assert.deepEqual(pieces.filter((p) => p !== ''), [char]);
  });
});
