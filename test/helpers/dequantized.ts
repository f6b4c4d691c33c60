// The checkpoint an int8 wasm model actually computes with: every matrix that `weights: 'int8'`
// quantizes replaced by its dequantized values q · s (float32), everything else as stored. The
// reference run on it is what the int8 backend must match, to float32 rounding and the kernels'
// int16 activations (activationTolerance).
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

/**
 * What the kernels' int16 activations (W8A16, see matmul_q8 in assembly/kernels.ts) may cost against
 * the same forward on the dequantized weights, relative to a row's largest |logit|, for a model of
 * `layers` layers. An input of a quantized matmul moves by at most sx/2 ≤ 2^-15 of its group's
 * max |x|; the max of a group of at most 32 is at most √32 times its rms, so a product's relative
 * rms error is at most 2^-15 · √32 / √3. A logit ends a chain of 4L + 1 quantized stages (q/k/v, o,
 * gate/up, down per layer, the LM head); added up linearly, with a factor 3 for the largest of a
 * row (as int8Tolerance in test/wasm-model.test.ts), plus 1e-4 for float32 rounding (the tolerance
 * of the stored formats). 2.8e-3 for L = 2, against 0.106 for what int8 weights may cost.
 */
export const activationTolerance = (layers: number) => 3 * (4 * layers + 1) * 2 ** -15 * Math.sqrt(32 / 3) + 1e-4;
