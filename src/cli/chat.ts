// `parscale chat`: a conversation with the model's chat template. Reads one user message per
// line; works on a terminal and with a pipe (then each line is a message and it ends with EOF).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { ChatMessage } from '../text-model.ts';
import { chatTemplateOf } from '../tokenizer/tokenizer.ts';
import { UsageError, parseCommandLine } from './args.ts';
import { generateOptionsFrom, loadTextModel, modelDirFrom, modelFlags, modelFlagsHelp, samplingFlags, samplingFlagsHelp, statsLine, withInterrupt } from './common.ts';

export const chatHelp = `Usage: parscale chat --model DIR [options]

Talk with the model. Each line you type is a user message; the answer streams back.
Type /reset to forget the conversation, /exit (or end the input) to leave. When standard
input is not a terminal, every line read from it is one user message.

Options:
${modelFlagsHelp}
${samplingFlagsHelp}
      --system TEXT          a system message that opens the conversation
      --stats                print token counts and speed after every answer (stderr)
  -h, --help                 show this help`;

export async function chatCommand(args: string[]): Promise<number> {
  const { values } = parseCommandLine(args, {
    ...modelFlags,
    ...samplingFlags,
    system: { type: 'string' },
    stats: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    console.log(chatHelp);
    return 0;
  }
  const options = generateOptionsFrom(values);
  refuseWithoutChatTemplate(modelDirFrom(values));
  const interactive = process.stdin.isTTY === true;

  return withInterrupt(async (signal) => {
    const lm = await loadTextModel(values, signal);
    const opening: ChatMessage[] = values.system ? [{ role: 'system', content: values.system }] : [];
    let messages: ChatMessage[] = [...opening];
    const lines = createInterface({ input: process.stdin, terminal: interactive });
    const prompt = () => interactive && process.stdout.write('> ');
    try {
      prompt();
      for await (const line of lines) {
        const text = line.trim();
        if (text === '/exit') break;
        if (text === '/reset') {
          messages = [...opening];
          prompt();
          continue;
        }
        if (text === '') {
          prompt();
          continue;
        }
        messages.push({ role: 'user', content: text });
        const generation = lm.chat(messages, { ...options, signal });
        let answer = '';
        for await (const piece of generation) {
          answer += piece.text;
          process.stdout.write(piece.text);
        }
        process.stdout.write('\n');
        const result = await generation.result;
        messages.push({ role: 'assistant', content: answer });
        if (values.stats) process.stderr.write(statsLine(result) + '\n');
        prompt();
      }
    } catch (error) {
      if ((error as Error).name !== 'AbortError') throw error;
      process.stdout.write('\n');
    } finally {
      lines.close();
      lm.dispose();
    }
    return 0;
  });
}

/** Before any weight is read: a plain text model (no chat_template) cannot chat. */
function refuseWithoutChatTemplate(dir: string): void {
  const file = join(dir, 'tokenizer_config.json');
  if (!existsSync(file)) return; // the loader reports what is missing
  let config: Record<string, unknown>;
  try {
    config = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    return; // the loader reports the broken file with its details
  }
  if (typeof config !== 'object' || config === null || chatTemplateOf(config) !== null) return;
  throw new UsageError(`${file}: no chat_template; this model cannot chat (it is a plain text model: use "parscale generate")`);
}
