// The `parscale` command under Deno, which runs TypeScript itself:
//   deno run -A bin/parscale-deno.ts generate --model models/default "Hello"
import process from 'node:process';
import { main } from '../src/cli/main.ts';

process.exitCode = await main(process.argv.slice(2));
