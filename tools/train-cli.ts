// Run `parscale train` directly (the same code the parscale CLI calls):
//   npx tsx tools/train-cli.ts --data data/kjv-train.txt --val data/kjv-val.txt --out /tmp/m --steps 100
import { trainCommand } from '../src/training/cli.ts';

try {
  process.exitCode = await trainCommand(process.argv.slice(2));
} catch (error) {
  const e = error as Error;
  process.stderr.write(`${e.name === 'UsageError' ? `parscale train: ${e.message}` : (e.stack ?? e.message)}\n`);
  process.exitCode = e.name === 'UsageError' ? 2 : 1;
}
