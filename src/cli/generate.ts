// `parscale generate`: continue a prompt, printing text as it comes.
import { readFileSync } from 'node:fs';
import { parseCommandLine, UsageError } from './args.ts';
import { generateOptionsFrom, loadTextModel, modelFlags, modelFlagsHelp, samplingFlags, samplingFlagsHelp, statsLine, withInterrupt } from './common.ts';

export const generateHelp = `Usage: parscale generate --model DIR [options] [PROMPT]

Continue PROMPT (or standard input when no PROMPT is given) and print the text as it is
generated. A line with token counts and speed goes to stderr at the end.

Options:
${modelFlagsHelp}
${samplingFlagsHelp}
      --chat                 wrap the prompt as a user message in the model's chat template
  -h, --help                 show this help`;

export async function generateCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseCommandLine(args, { ...modelFlags, ...samplingFlags, chat: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, true);
  if (values.help) {
    console.log(generateHelp);
    return 0;
  }
  const options = generateOptionsFrom(values);
  let prompt = positionals.join(' ');
  if (positionals.length === 0) {
    if (process.stdin.isTTY) throw new UsageError('give a PROMPT argument or pipe the prompt into standard input');
    prompt = readFileSync(0, 'utf8');
  }
  if (prompt === '') throw new UsageError('the prompt is empty');

  return withInterrupt(async (signal) => {
    const lm = await loadTextModel(values, signal);
    try {
      const ids = values.chat ? lm.tokenizer.encode(lm.tokenizer.applyChatTemplate([{ role: 'user', content: prompt }], { addGenerationPrompt: true }), { addSpecialTokens: false }) : lm.tokenizer.encode(prompt);
      const limit = lm.model.config.maxPositionEmbeddings;
      if (ids.length > limit) throw new UsageError(`the prompt has ${ids.length} tokens; this model takes at most ${limit} (max_position_embeddings)`);
      if (!values.chat) process.stdout.write(prompt);
      const generation = lm.generate(ids, { ...options, signal });
      try {
        for await (const piece of generation) process.stdout.write(piece.text);
      } catch (error) {
        if ((error as Error).name === 'AbortError') {
          process.stdout.write('\n');
          process.stderr.write('generation aborted\n');
          return 130;
        }
        throw error;
      }
      process.stdout.write('\n');
      process.stderr.write(statsLine(await generation.result) + '\n');
      return 0;
    } finally {
      lm.dispose();
    }
  });
}
