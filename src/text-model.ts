// The library's front door: a model folder loaded with its tokenizer and generation defaults,
// ready to generate text or chat.
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { LanguageModel } from './backend.ts';
import { type GenerationDefaults, readGenerationDefaults } from './generation/generation-config.ts';
import { type GenerateOptions, type GenerationPiece, type GenerationResult, collect, generateFromIds } from './generation/generate.ts';
import { type LoadModelOptions, loadModel } from './load-model.ts';
import { Tokenizer } from './tokenizer/tokenizer.ts';

/** Options of TextModel.generate and chat. */
export interface TextGenerateOptions extends GenerateOptions {
  /**
   * Streams for this request (dynamic P): any of `model.streamSets`. Default: the P the model was
   * loaded with. The backbone stays loaded; only the prefixes and aggregation layer switch.
   */
  P?: number;
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | string;
  content: string;
}

/** A generation in progress: iterate it for pieces of text; `result` resolves when it ends. */
export class Generation implements AsyncIterable<GenerationPiece> {
  readonly result: Promise<GenerationResult>;
  private settle!: { resolve: (r: GenerationResult) => void; reject: (e: unknown) => void };
  private started = false;

  constructor(private readonly source: AsyncGenerator<GenerationPiece, GenerationResult, undefined>) {
    this.result = new Promise((resolve, reject) => (this.settle = { resolve, reject }));
    this.result.catch(() => {}); // the error also reaches whoever iterates; don't report it twice
  }

  async *[Symbol.asyncIterator](): AsyncIterator<GenerationPiece> {
    if (this.started) throw new Error('a Generation can be iterated only once');
    this.started = true;
    try {
      for (;;) {
        const next = await this.source.next();
        if (next.done) {
          this.settle.resolve(next.value);
          return;
        }
        yield next.value;
      }
    } catch (error) {
      this.settle.reject(error);
      throw error;
    }
  }

  /** Run to the end without looking at the pieces. */
  async complete(): Promise<GenerationResult> {
    if (!this.started) {
      this.started = true;
      collect(this.source).then(this.settle.resolve, this.settle.reject);
    }
    return this.result;
  }
}

export class TextModel {
  private constructor(
    readonly dir: string,
    readonly model: LanguageModel,
    readonly tokenizer: Tokenizer,
    readonly defaults: GenerationDefaults,
    /** A note the model's maker wants users to see (config.json "parscale_notice"), or null. */
    readonly notice: string | null,
  ) {}

  /**
   * Load config.json, the safetensors weights (and every stream set, for dynamic P),
   * tokenizer.json and generation_config.json from `dir`. `options.P` picks the default P.
   */
  static async load(dir: string, options: LoadModelOptions = {}): Promise<TextModel> {
    const absolute = resolve(dir);
    // the tokenizer first: a missing tokenizer.json should not wait for gigabytes of weights
    const tokenizer = await Tokenizer.fromDir(absolute);
    const model = await loadModel(absolute, options);
    return new TextModel(absolute, model, tokenizer, readGenerationDefaults(absolute, model.config), readNotice(absolute));
  }

  /** Every P this model can generate with (see TextGenerateOptions.P), ascending. */
  get streamSets(): readonly number[] {
    return this.model.streamSets;
  }

  /** Continue `prompt` (plain text, no chat template). */
  generate(prompt: string | readonly number[], options: TextGenerateOptions = {}): Generation {
    const { P, ...rest } = options;
    // an unknown P throws here, at the call, not later inside the iteration
    const model = P === undefined ? this.model : this.model.withStreams(P);
    const ids = typeof prompt === 'string' ? this.tokenizer.encode(prompt) : prompt;
    return new Generation(generateFromIds(model, this.tokenizer, ids, { ...this.defaults, ...definedOnly(rest) }));
  }

  /** Answer the last message of a conversation, rendered with the model's chat template. */
  chat(messages: readonly ChatMessage[], options: TextGenerateOptions = {}): Generation {
    const prompt = this.tokenizer.applyChatTemplate([...messages], { addGenerationPrompt: true });
    // the template already wrote the special tokens as text; encode them as such
    return this.generate(this.tokenizer.encode(prompt, { addSpecialTokens: false }), options);
  }

  dispose(): void {
    this.model.dispose();
  }
}

function readNotice(dir: string): string | null {
  // loadModel has already read and validated config.json; this only picks up our optional key
  const notice = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')).parscale_notice;
  return typeof notice === 'string' ? notice : null;
}

/** Options the caller left undefined must not override the checkpoint's defaults. */
function definedOnly<T extends object>(options: T): Partial<T> {
  return Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as Partial<T>;
}
