// The checkpoint's tokenizer: tokenizer.json through @huggingface/tokenizers (we do not write our
// own BPE), special tokens and the chat template from tokenizer_config.json, the template
// rendered with @huggingface/jinja.
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Template } from '@huggingface/jinja';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';

export class TokenizerError extends Error {
  override name = 'TokenizerError';
}

export interface ChatTemplateMessage {
  role: string;
  content: string;
}

type TokenizerConfig = Record<string, unknown>;

export class Tokenizer {
  private readonly specialIds: Set<number>;
  private readonly addedTokens: Map<number, string>;
  private readonly byteLevel: boolean;
  private readonly idToToken: string[];
  private template: Template | null = null;

  private constructor(
    private readonly hf: HfTokenizer,
    private readonly json: { decoder?: { type?: string } | null },
    readonly config: TokenizerConfig,
    /** where it was loaded from, for messages */
    readonly source: string,
  ) {
    this.addedTokens = new Map();
    this.specialIds = new Set();
    for (const [id, token] of hf.get_added_tokens_decoder()) {
      this.addedTokens.set(id, token.content);
      if (token.special) this.specialIds.add(id);
    }
    this.idToToken = [];
    for (const [token, id] of hf.get_vocab(true)) this.idToToken[id] = token;
    this.byteLevel = isByteLevel(json.decoder);
  }

  /** Read DIR/tokenizer.json and, when present, DIR/tokenizer_config.json. */
  static async fromDir(dirPath: string): Promise<Tokenizer> {
    const dir = resolve(dirPath);
    const file = join(dir, 'tokenizer.json');
    if (!existsSync(file)) throw new TokenizerError(`tokenizer.json not found: ${file}`);
    const json = readJson(file);
    const configFile = join(dir, 'tokenizer_config.json');
    const config = existsSync(configFile) ? (readJson(configFile) as TokenizerConfig) : {};
    let hf: HfTokenizer;
    try {
      hf = new HfTokenizer(json, config);
    } catch (error) {
      throw new TokenizerError(`${file}: cannot build a tokenizer from it (${(error as Error).message})`);
    }
    return new Tokenizer(hf, json as { decoder?: { type?: string } }, config, dir);
  }

  get vocabSize(): number {
    return this.idToToken.length;
  }

  encode(text: string, options: { addSpecialTokens?: boolean } = {}): number[] {
    return this.hf.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids;
  }

  decode(ids: readonly number[], options: { skipSpecialTokens?: boolean } = {}): string {
    if (ids.length === 0) return ''; // the library refuses an empty list
    return this.hf.decode([...ids], { skip_special_tokens: options.skipSpecialTokens ?? false });
  }

  tokenToId(token: string): number | undefined {
    return this.hf.token_to_id(token);
  }

  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }

  /**
   * The bytes a token stands for, for streaming: byte-level BPE tokens are strings over a
   * 256-character alphabet that encodes raw bytes (GPT-2's byte-to-unicode table); added tokens
   * stand for their literal text. Null when the tokenizer is not byte-level.
   */
  tokenBytes(id: number): Uint8Array | null {
    const added = this.addedTokens.get(id);
    if (added !== undefined) return new TextEncoder().encode(added);
    if (!this.byteLevel) return null;
    const token = this.idToToken[id];
    if (token === undefined) throw new RangeError(`token id ${id} is not in the vocabulary of ${this.source}`);
    const bytes = new Uint8Array(token.length);
    for (let i = 0; i < token.length; i++) {
      const byte = UNICODE_TO_BYTE.get(token.charCodeAt(i));
      if (byte === undefined) return null; // not a byte-level token after all
      bytes[i] = byte;
    }
    return bytes;
  }

  get chatTemplate(): string | null {
    return chatTemplateOf(this.config);
  }

  /** Render the conversation with the checkpoint's chat template, as transformers does. */
  applyChatTemplate(messages: ChatTemplateMessage[], options: { addGenerationPrompt?: boolean } = {}): string {
    const source = this.chatTemplate;
    if (source === null) throw new TokenizerError(`${join(this.source, 'tokenizer_config.json')}: no chat_template; this model cannot chat`);
    this.template ??= new Template(source);
    const special = (key: string) => {
      const value = this.config[key];
      return typeof value === 'string' ? value : (value as { content?: string } | null)?.content ?? '';
    };
    return this.template.render({
      messages,
      add_generation_prompt: options.addGenerationPrompt ?? false,
      bos_token: special('bos_token'),
      eos_token: special('eos_token'),
      pad_token: special('pad_token'),
    });
  }
}

function readJson(file: string): object {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    throw new TokenizerError(`${file}: not valid JSON (${(error as Error).message})`);
  }
}

function isByteLevel(decoder: { type?: string; decoders?: { type?: string }[] } | null | undefined): boolean {
  if (!decoder) return false;
  if (decoder.type === 'ByteLevel') return true;
  return decoder.type === 'Sequence' && (decoder.decoders ?? []).some((d) => d.type === 'ByteLevel');
}

/**
 * GPT-2's byte ↔ unicode table used by byte-level BPE: printable bytes stand for themselves,
 * the other 68 bytes (controls, space, a few Latin-1 ones) are shifted to U+0100 and up, in order.
 */
const UNICODE_TO_BYTE: Map<number, number> = (() => {
  const map = new Map<number, number>();
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  let shifted = 0;
  for (let b = 0; b < 256; b++) {
    if (printable(b)) map.set(b, b);
    else map.set(256 + shifted++, b);
  }
  return map;
})();

/** The chat template of a tokenizer_config.json object, or null when it has none. */
export function chatTemplateOf(config: Record<string, unknown>): string | null {
  const template = config.chat_template;
  if (typeof template === 'string') return template;
  // some tokenizer_config.json files hold a list of named templates
  if (Array.isArray(template)) {
    const named = template.find((t: { name?: string }) => t?.name === 'default') ?? template[0];
    return typeof named?.template === 'string' ? named.template : null;
  }
  return null;
}
