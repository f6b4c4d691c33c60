// A byte-level BPE tokenizer for tiny models, written as a Hugging Face `tokenizer.json` (the
// format of GPT-2 and Qwen2: ByteLevel pre-tokenizer and decoder, BPE model) so that any
// tokenizers implementation loads it. Ids 0..255 are the 256 bytes (id = byte value), then the
// learned merges in the order they were learned, then `<|endoftext|>` last. With no merges it is
// a plain byte tokenizer (vocabulary 257).
//
// Learning merges: the standard BPE procedure on the corpus' pre-tokenized words (the ByteLevel
// pre-tokenizer's GPT-2 regex, so no merge crosses a word boundary): repeatedly merge the most
// frequent adjacent pair (ties: the pair with the smaller ids). Encoding is left to the
// tokenizers library, so training data and inference see exactly the same ids.

export const END_OF_TEXT = '<|endoftext|>';

/** The same split as the ByteLevel pre-tokenizer (GPT-2's pattern). */
const GPT2_PATTERN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/**
 * GPT-2's bytes_to_unicode: printable bytes map to themselves, the others to code points from
 * 256 up, so every byte is one visible character (space → "Ġ", newline → "Ċ").
 */
export function bytesToUnicode(): string[] {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const chars: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    chars[b] = printable.includes(b) ? String.fromCodePoint(b) : String.fromCodePoint(256 + extra++);
  }
  return chars;
}

export interface BpeVocabulary {
  /** token strings (byte-level characters) by id; the last one is <|endoftext|> */
  tokens: string[];
  /** merges "a b" in priority order; merge k produced token 256 + k */
  merges: [string, string][];
}

/** Learn `numMerges` BPE merges on `text` (fewer if the corpus runs out of pairs). */
export function learnBpe(text: string, numMerges: number): BpeVocabulary {
  const byteChars = bytesToUnicode();
  const encoder = new TextEncoder();
  // word → count
  const wordCounts = new Map<string, number>();
  for (const match of text.matchAll(GPT2_PATTERN)) wordCounts.set(match[0], (wordCounts.get(match[0]) ?? 0) + 1);
  const words: number[][] = [];
  const counts: number[] = [];
  for (const [word, count] of wordCounts) {
    words.push(Array.from(encoder.encode(word)));
    counts.push(count);
  }
  const tokens = byteChars.slice();
  const merges: [string, string][] = [];
  for (let m = 0; m < numMerges; m++) {
    // count adjacent pairs (key a · 2^16 + b)
    const pairs = new Map<number, number>();
    for (let w = 0; w < words.length; w++) {
      const symbols = words[w];
      for (let i = 0; i + 1 < symbols.length; i++) {
        const key = symbols[i] * 65536 + symbols[i + 1];
        pairs.set(key, (pairs.get(key) ?? 0) + counts[w]);
      }
    }
    let best = -1;
    let bestCount = 0;
    for (const [key, count] of pairs) {
      if (count > bestCount || (count === bestCount && key < best)) {
        best = key;
        bestCount = count;
      }
    }
    if (best < 0 || bestCount < 2) break;
    const a = Math.floor(best / 65536);
    const b = best % 65536;
    const id = tokens.length;
    tokens.push(tokens[a] + tokens[b]);
    merges.push([tokens[a], tokens[b]]);
    for (const symbols of words) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        if (symbols[i] === a && symbols[i + 1] === b) symbols.splice(i, 2, id);
      }
    }
  }
  tokens.push(END_OF_TEXT);
  return { tokens, merges };
}

/** The tokenizer.json object (Hugging Face tokenizers format). */
export function tokenizerJson(vocabulary: BpeVocabulary): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  vocabulary.tokens.forEach((token, id) => {
    if (token !== END_OF_TEXT) vocab[token] = id;
  });
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: true };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [
      {
        id: vocabulary.tokens.length - 1,
        content: END_OF_TEXT,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special: true,
      },
    ],
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: byteLevel,
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: vocabulary.merges.map(([a, b]) => `${a} ${b}`),
    },
  };
}

/** tokenizer_config.json to go with it (what transformers and @huggingface/tokenizers read). */
export function tokenizerConfigJson(vocabulary: BpeVocabulary, maxLength: number): Record<string, unknown> {
  return {
    add_bos_token: false,
    add_prefix_space: false,
    bos_token: null,
    eos_token: END_OF_TEXT,
    pad_token: END_OF_TEXT,
    unk_token: null,
    clean_up_tokenization_spaces: false,
    model_max_length: maxLength,
    tokenizer_class: 'PreTrainedTokenizerFast',
    added_tokens_decoder: {
      [String(vocabulary.tokens.length - 1)]: {
        content: END_OF_TEXT,
        lstrip: false,
        normalized: false,
        rstrip: false,
        single_word: false,
        special: true,
      },
    },
  };
}

/** Read back the vocabulary of a tokenizer.json we wrote (for --init and --resume). */
export function vocabularyFromJson(json: Record<string, unknown>): BpeVocabulary {
  const model = json.model as { vocab: Record<string, number>; merges: (string | [string, string])[] };
  const tokens: string[] = [];
  for (const [token, id] of Object.entries(model.vocab)) tokens[id] = token;
  tokens.push(END_OF_TEXT);
  const merges = model.merges.map((m) => (typeof m === 'string' ? (m.split(' ') as [string, string]) : m));
  return { tokens, merges };
}
