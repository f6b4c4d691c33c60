// The checkpoint an int8 wasm model actually computes with: every matrix that `weights: 'int8'`
// quantizes replaced by its dequantized values q · s (float32), everything else as stored. The
// reference run on it is what the int8 backend must match to float32 rounding.
import type { Checkpoint } from '../../src/checkpoint/load.ts';
import { tensorToFloat32 } from '../../src/checkpoint/load.ts';
import { float32ToBytes } from '../../src/checkpoint/safetensors.ts';
import { dequantizeQ8, quantizeQ8 } from '../../src/reference/q8.ts';
import { placementOf } from '../../src/wasm-bridge/plan.ts';

export function dequantizedCheckpoint(checkpoint: Checkpoint): Checkpoint {
  const dtypeOf = (name: string) => checkpoint.tensors.get(name)!.dtype;
  const tensors = new Map(
    [...checkpoint.tensors].map(([name, t]) => {
      if (placementOf(name, checkpoint.config, dtypeOf, 'int8') !== 'q8') return [name, t];
      const [outDim, inDim] = t.shape;
      const q = quantizeQ8(tensorToFloat32(t), outDim, inDim);
      return [name, { ...t, dtype: 'F32' as const, data: float32ToBytes(dequantizeQ8(q.values, q.scales, outDim, inDim), 'F32') }];
    }),
  );
  return { ...checkpoint, tensors };
}
