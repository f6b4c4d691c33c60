#!/usr/bin/env node
// The `parscale` command. The project is written in TypeScript and runs through tsx, so this
// small JavaScript entry registers tsx's loader and hands over to the real CLI.
import v8 from 'node:v8';
import { register } from 'tsx/esm/api';

// Node 20's V8 has WebAssembly relaxed SIMD (the fused multiply-add the fast kernels use, see
// src/wasm-bridge/kernels.ts) behind a flag; later Node and Deno 2 ship it. This process is ours
// and has compiled no WebAssembly yet, so turn it on here. Library users choose for themselves;
// PARSCALE_WASM=simd keeps the plain build.
register();
const { relaxedSimdSupported } = await import('../src/wasm-bridge/kernels.ts');
if (!relaxedSimdSupported()) v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
