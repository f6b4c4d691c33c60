// Streaming detokenization that never shows half a character. Byte-level BPE splits multi-byte
// UTF-8 characters (Chinese, emoji) across tokens, so decoding token by token would print
// U+FFFD garbage. We turn each token into its bytes and feed them to a streaming TextDecoder,
// which holds back an incomplete character until its last byte arrives: O(1) per token, and the
// concatenated pieces equal the one-shot decode.
import type { Tokenizer } from './tokenizer.ts';

export class TextStreamer {
  private readonly decoder = new TextDecoder('utf-8', { fatal: false });
  /** For tokenizers that are not byte-level: ids whose text is not emitted yet. */
  private pendingIds: number[] = [];

  constructor(
    private readonly tokenizer: Tokenizer,
    /** Leave special tokens (such as <|im_end|>) out of the text, as decode(ids, skip) does. */
    private readonly skipSpecialTokens = true,
  ) {}

  /** Add one token; returns the text that is now complete (possibly ''). */
  push(id: number): string {
    if (this.skipSpecialTokens && this.tokenizer.isSpecial(id)) return '';
    const bytes = this.tokenizer.tokenBytes(id);
    if (bytes !== null && this.pendingIds.length === 0) return this.decoder.decode(bytes, { stream: true });
    // Fallback for other tokenizers: decode the ids since the last clean point and emit the new
    // text once it no longer ends in a replacement character.
    this.pendingIds.push(id);
    const text = this.tokenizer.decode(this.pendingIds, { skipSpecialTokens: this.skipSpecialTokens });
    if (text.endsWith('\uFFFD')) return '';
    this.pendingIds = [];
    return text;
  }

  /** The end of the stream: whatever is held back (an incomplete character becomes U+FFFD). */
  flush(): string {
    const rest = this.pendingIds.length > 0 ? this.tokenizer.decode(this.pendingIds, { skipSpecialTokens: this.skipSpecialTokens }) : '';
    this.pendingIds = [];
    return rest + this.decoder.decode();
  }
}
