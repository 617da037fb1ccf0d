import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { ExitCode, ResourceLimitError, VerificationError } from '../../src/errors.js';
import { selectBackend } from '../../src/model/backend.js';
import { readScalar } from '../../src/model/tensor-read.js';
import { assertNoGpuError, chunkedAddN, watchGpuErrors, type GpuDeviceLike } from '../../src/model/webgpu-guards.js';

// The chunking runs against the cpu backend's own AddN kernel, counting what it is handed:
// the guard's logic does not depend on webgpu (which this machine lacks).
describe('chunkedAddN (webgpu AddN within the storage-buffer limit)', () => {
  const backend = () => tf.backend() as unknown as { disposeData(id: unknown): void; numDataIds(): number };
  const addNCpu = tf.getKernel('AddN', 'cpu')!.kernelFunc as unknown as (args: { inputs: tf.TensorInfo[]; backend: unknown }) => tf.TensorInfo;

  for (const [count, limit] of [[2, 7], [7, 7], [8, 7], [47, 7], [50, 2], [15, 3]] as const) {
    it(`${count} inputs, at most ${limit} per AddN: the exact sum, no call over the limit, nothing leaked`, async () => {
      await selectBackend('cpu');
      const inputs = Array.from({ length: count }, (_, i) => tf.tensor1d([i + 1, 2 ** -(i % 20), -(i * i)]));
      const before = backend().numDataIds();
      const sizes: number[] = [];
      const out = chunkedAddN(inputs, limit, (chunk) => { sizes.push(chunk.length); return addNCpu({ inputs: chunk, backend: tf.backend() }); }, (t) => backend().disposeData(t.dataId));
      expect(Math.max(...sizes)).toBeLessThanOrEqual(limit);
      if (count <= limit) expect(sizes).toEqual([count]);
      else expect(sizes.length).toBeGreaterThan(1);
      // Only the result is new.
      expect(backend().numDataIds()).toBe(before + 1);
      const values = tf.engine().makeTensorFromTensorInfo(out).dataSync();
      const expected = [0, 0, 0];
      for (let i = 0; i < count; i++) { expected[0]! += i + 1; expected[1]! += 2 ** -(i % 20); expected[2]! -= i * i; }
      // Integers and powers of two: exact in float32 whatever the grouping.
      expect([...values]).toEqual(expected);
      tf.dispose(inputs);
    });
  }

  it('refuses a limit below 2', () => {
    expect(() => chunkedAddN([], 1, () => { throw new Error('unreachable'); }, () => {})).toThrow(/at least 2/);
  });
});

describe('GPU error latch', () => {
  const fakeDevice = (): GpuDeviceLike => ({ limits: { maxStorageBuffersPerShaderStage: 8 }, onuncapturederror: null });

  it('a rejected command makes every later read fail with GPU_VALIDATION (exit 6), naming the first error', async () => {
    await selectBackend('cpu');
    const device = fakeDevice();
    watchGpuErrors(device);
    const t = tf.scalar(3);
    expect(await readScalar(t)).toBe(3);
    device.onuncapturederror!({ error: { message: 'The number of storage buffers (48) exceeds the limit (8).\n - While calling CreateComputePipeline' } });
    device.onuncapturederror!({ error: { message: 'a later error' } });
    const err = await readScalar(t).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VerificationError);
    expect((err as VerificationError).code).toBe('GPU_VALIDATION');
    expect((err as VerificationError).exit).toBe(6);
    expect((err as Error).message).toContain('storage buffers (48) exceeds the limit (8). / - While calling CreateComputePipeline');
    expect((err as Error).message).not.toContain('a later error');
    // A new device starts clean.
    watchGpuErrors(fakeDevice());
    expect(() => assertNoGpuError()).not.toThrow();
    expect(await readScalar(t)).toBe(3);
    t.dispose();
  });

  it('running out of GPU memory fails later reads as a resource limit (exit 5, GPU_OUT_OF_MEMORY) saying what to lower', async () => {
    await selectBackend('cpu');
    class GPUOutOfMemoryError {
      constructor(readonly message: string) {}
    }
    const device = fakeDevice();
    watchGpuErrors(device);
    device.onuncapturederror!({ error: new GPUOutOfMemoryError('Out of memory.\n - While calling [Device].CreateBuffer([BufferDescriptor])') });
    const t = tf.scalar(1);
    const err = await readScalar(t).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ResourceLimitError);
    expect((err as ResourceLimitError).code).toBe('GPU_OUT_OF_MEMORY');
    expect((err as ResourceLimitError).exit).toBe(ExitCode.resource);
    expect((err as Error).message).toMatch(/the GPU ran out of memory.*Out of memory\. \/ - While calling \[Device\]\.CreateBuffer.*lower --batch-size or --seq-len/);
    watchGpuErrors(fakeDevice());
    t.dispose();
  });

  it('a lost device fails later reads too, unless it was destroyed on purpose or is no longer watched', async () => {
    await selectBackend('cpu');
    const t = tf.scalar(5);
    let lose!: (info: { reason?: string; message?: string }) => void;
    watchGpuErrors({ ...fakeDevice(), lost: new Promise((resolve) => (lose = resolve)) });
    lose({ reason: 'unknown', message: 'Device lost: VK_ERROR_DEVICE_LOST\n - While submitting' });
    await new Promise((resolve) => setTimeout(resolve, 0));
    const err = await readScalar(t).catch((e: unknown) => e);
    expect((err as VerificationError).code).toBe('GPU_VALIDATION');
    expect((err as Error).message).toContain('the GPU device was lost (unknown): Device lost: VK_ERROR_DEVICE_LOST / - While submitting');
    let destroy!: (info: { reason?: string; message?: string }) => void;
    watchGpuErrors({ ...fakeDevice(), lost: new Promise((resolve) => (destroy = resolve)) });
    destroy({ reason: 'destroyed', message: 'Device was destroyed.' });
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(await readScalar(t)).toBe(5);
    // The loss of a device that is no longer the watched one changes nothing.
    let loseOld!: (info: { reason?: string; message?: string }) => void;
    watchGpuErrors({ ...fakeDevice(), lost: new Promise((resolve) => (loseOld = resolve)) });
    watchGpuErrors(fakeDevice());
    loseOld({ reason: 'unknown', message: 'late' });
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(await readScalar(t)).toBe(5);
    t.dispose();
  });
});
