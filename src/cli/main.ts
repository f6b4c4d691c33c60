// `parscale COMMAND ...`: dispatch to a command; turn expected errors into one line on stderr.
import { CheckpointError } from '../checkpoint/errors.ts';
import { TokenizerError } from '../tokenizer/tokenizer.ts';
import { WasmMemoryError } from '../wasm-bridge/plan.ts';
import { UsageError } from './args.ts';
import { benchCommand } from './bench.ts';
import { chatCommand } from './chat.ts';
import { dumpCommand } from './dump.ts';
import { generateCommand } from './generate.ts';
import { infoCommand } from './info.ts';
import { trainCommand } from '../training/cli.ts';

type Command = (args: string[]) => Promise<number>;

const commands: Record<string, { run: Command; summary: string }> = {
  generate: { run: generateCommand, summary: 'continue a prompt, streaming the text' },
  chat: { run: chatCommand, summary: 'talk with a model through its chat template' },
  info: { run: infoCommand, summary: 'summarise a checkpoint: shape, parameters, memory' },
  train: { run: trainCommand, summary: 'train a ParScale model (from scratch, or new streams on a frozen backbone)' },
  bench: { run: benchCommand, summary: 'measure prefill/decode speed and memory' },
  dump: { run: dumpCommand, summary: 'write logits (and hidden states) for token ids as JSON' },
};

function usage(): string {
  const lines = Object.entries(commands).map(([name, { summary }]) => `  ${name.padEnd(10)} ${summary}`);
  return `Usage: parscale <command> [options]\n\nCommands:\n${lines.join('\n')}\n\nRun "parscale <command> --help" for a command's options.`;
}

/** Runs the CLI and returns the process exit code: 0 ok, 1 failed, 2 usage error. */
export async function main(argv: string[]): Promise<number> {
  const [name, ...args] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    console.log(usage());
    return name === undefined ? 2 : 0;
  }
  const command = commands[name];
  if (command === undefined) {
    console.error(`parscale: unknown command "${name}" (commands: ${Object.keys(commands).join(', ')}; see parscale --help)`);
    return 2;
  }
  try {
    return await command.run(args);
  } catch (error) {
    // (the training code signals usage errors by name, without importing the CLI's class)
    if (error instanceof UsageError || (error instanceof Error && error.name === 'UsageError')) {
      console.error(`parscale ${name}: ${error.message}`);
      return 2;
    }
    if (error instanceof CheckpointError || error instanceof TokenizerError || error instanceof WasmMemoryError) {
      console.error(`parscale ${name}: ${error.message}`);
      return 1;
    }
    if (error instanceof Error && error.name === 'AbortError') {
      console.error(`parscale ${name}: aborted`);
      return 130;
    }
    throw error;
  }
}
