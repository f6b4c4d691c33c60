#!/usr/bin/env node
// The `parscale` command. The project is written in TypeScript and runs through tsx, so this
// small JavaScript entry registers tsx's loader and hands over to the real CLI.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
