/**
 * TensorFlow.js backend selection: webgpu (when a real GPU adapter exists), then the native
 * `tensorflow` backend (only when @tensorflow/tfjs-node[-gpu] happens to be installed; never a
 * dependency), then wasm, then the pure-JS cpu backend. Probing is quiet: with no GPU nothing
 * is printed. Every backend computes in float32.
 */
import * as tf from '@tensorflow/tfjs';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { UsageError } from '../errors.js';
import { formatBytes } from '../io/byte-size.js';
import { registerCpuTrainingKernels } from './cpu-training-kernels.js';
import { registerWasmTrainingKernels } from './wasm-training-kernels.js';
import { installWebgpuGuards } from './webgpu-guards.js';

export type BackendName = 'webgpu' | 'tensorflow' | 'wasm' | 'cpu';
export type BackendRequest = 'auto' | BackendName;
export const BACKEND_ORDER: readonly BackendName[] = ['webgpu', 'tensorflow', 'wasm', 'cpu'];

export interface BackendProbe {
  name: BackendName;
  available: boolean;
  detail: string;
}

const require = createRequire(import.meta.url);

/** Environment variable that lets `webgpu` run on a software adapter (see prepareWebgpu). */
export const ALLOW_SOFTWARE_WEBGPU = 'APEX_WEBGPU_ALLOW_SOFTWARE';

// The cpu backend greets Node users on stderr with an advert for tfjs-node; production mode
// silences tfjs's own warnings (it changes no numerics).
tf.enableProdMode();

type Prepared = { ok: true; detail: string } | { ok: false; detail: string };
const prepared = new Map<BackendName, Promise<Prepared>>();

/** Availability of every backend, in preference order; loads what it probes, prints nothing. */
export async function probeBackends(): Promise<BackendProbe[]> {
  const out: BackendProbe[] = [];
  for (const name of BACKEND_ORDER) {
    const p = await prepare(name);
    out.push({ name, available: p.ok, detail: p.detail });
  }
  return out;
}

/**
 * Activates the requested backend (or the best available one for 'auto') and returns what ran.
 * Forcing an unavailable backend is a UsageError that says why and what is available.
 */
export async function selectBackend(requested: BackendRequest = 'auto'): Promise<{ name: BackendName; detail: string }> {
  if (requested !== 'auto' && !BACKEND_ORDER.includes(requested)) {
    throw new UsageError(`unknown backend '${String(requested)}' (choose auto, ${BACKEND_ORDER.join(', ')})`);
  }
  const candidates = requested === 'auto' ? BACKEND_ORDER : [requested];
  const failures: string[] = [];
  for (const name of candidates) {
    const p = await prepare(name);
    if (p.ok && (await activate(name))) return { name, detail: p.detail };
    failures.push(`${name}: ${p.ok ? 'failed to initialise' : p.detail}`);
  }
  const available: string[] = [];
  for (const name of BACKEND_ORDER) if ((await prepare(name)).ok) available.push(name);
  throw new UsageError(`backend '${requested}' is not available (${failures.join('; ')}); available: ${available.join(', ') || 'none'}`, 'BACKEND_UNAVAILABLE');
}

async function activate(name: BackendName): Promise<boolean> {
  try {
    if (tf.getBackend() === name) return true;
  } catch {
    // no backend initialised yet
  }
  let ok = false;
  try {
    ok = await tf.setBackend(name);
  } catch {
    ok = false;
  }
  if (ok) await tf.ready();
  if (ok && name === 'webgpu') installWebgpuGuards();
  return ok;
}

function prepare(name: BackendName): Promise<Prepared> {
  let p = prepared.get(name);
  if (!p) {
    p = PREPARERS[name]().catch((e: unknown) => ({ ok: false as const, detail: (e as Error).message ?? String(e) }));
    prepared.set(name, p);
  }
  return p;
}

const PREPARERS: Record<BackendName, () => Promise<Prepared>> = {
  webgpu: prepareWebgpu,
  tensorflow: prepareNative,
  wasm: prepareWasm,
  cpu: async () => {
    registerCpuTrainingKernels();
    return { ok: true, detail: 'pure-JavaScript kernels (slow)' };
  },
};

async function prepareWebgpu(): Promise<Prepared> {
  // Dawn reports a missing Vulkan loader on stderr from native code; look for the loader
  // first so that machines without a GPU stay quiet.
  if (process.platform === 'linux' && !vulkanLoaderPresent()) return { ok: false, detail: 'no Vulkan loader (libvulkan.so.1) on this machine' };
  const allowSoftware = process.env[ALLOW_SOFTWARE_WEBGPU] === '1';
  // Without a GPU device node the Vulkan loader and Dawn print errors from native code when
  // they find no device (or set up a software one), so the probe stops here, quietly.
  if (process.platform === 'linux' && !allowSoftware && !gpuDeviceNodePresent()) {
    return { ok: false, detail: `no GPU device (/dev/nvidia*, /dev/dri/renderD*, /dev/dxg) on this machine; software adapters are skipped (${ALLOW_SOFTWARE_WEBGPU}=1 uses one)` };
  }
  const webgpu = (await import('webgpu')) as unknown as { create(options: string[]): GpuLike; globals: Record<string, unknown> };
  // Desktop Linux often has Mesa's lavapipe installed; Dawn prints warnings on stderr from
  // native code while it sets that adapter up. Unless software adapters are wanted, the Vulkan
  // loader is told to skip the software drivers (VK_LOADER_DRIVERS_DISABLE, loader ≥ 1.3.234),
  // only while the adapter is found, so that probing stays quiet.
  const restore = allowSoftware ? undefined : hideSoftwareVulkanDrivers();
  let gpu: GpuLike;
  let adapter: Awaited<ReturnType<GpuLike['requestAdapter']>>;
  try {
    gpu = webgpu.create([]);
    adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  } finally {
    restore?.();
  }
  if (!adapter) return { ok: false, detail: `no GPU adapter found${allowSoftware ? '' : ` (software Vulkan drivers such as lavapipe are skipped; ${ALLOW_SOFTWARE_WEBGPU}=1 uses them)`}` };
  const info = adapter.info ?? {};
  const description = [info.vendor, info.architecture, info.description].filter((s) => s).join(' ');
  const software = adapter.isFallbackAdapter || /llvmpipe|swiftshader|lavapipe/i.test(description);
  // A software adapter (Mesa's lavapipe, SwiftShader) runs WebGPU on the CPU far slower than
  // wasm; it is used only on request, to exercise the webgpu code path on a machine without a
  // GPU (`scripts/gpu-check.sh software`).
  if (software && !allowSoftware) {
    return { ok: false, detail: `only a software adapter (${description || 'fallback'}); ${ALLOW_SOFTWARE_WEBGPU}=1 uses it (slow; for checking the webgpu path)` };
  }
  Object.assign(globalThis, webgpu.globals);
  Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
  await import('@tensorflow/tfjs-backend-webgpu');
  // tfjs asks the device for the adapter's limits; the storage binding bounds any one tensor (webgpu-binding-limit.ts).
  const binding = adapter.limits?.maxStorageBufferBindingSize;
  return { ok: true, detail: `WebGPU adapter: ${description || 'unknown GPU'}${software ? ' (software)' : ''}${binding ? `; largest tensor ${formatBytes(binding)} (maxStorageBufferBindingSize)` : ''}` };
}

interface GpuLike {
  requestAdapter(options?: { powerPreference?: string }): Promise<{
    isFallbackAdapter?: boolean;
    info?: { vendor?: string; architecture?: string; description?: string };
    limits?: { maxStorageBufferBindingSize?: number };
  } | null>;
}

const SOFTWARE_VULKAN_DRIVERS = '*lvp_icd*,*swiftshader*';

/** Sets VK_LOADER_DRIVERS_DISABLE to skip software drivers (unless the user set it); returns the undo. */
function hideSoftwareVulkanDrivers(): () => void {
  const key = 'VK_LOADER_DRIVERS_DISABLE';
  if (process.env[key] !== undefined) return () => {};
  process.env[key] = SOFTWARE_VULKAN_DRIVERS;
  return () => {
    delete process.env[key];
  };
}

/** Whether `dev` (normally /dev) has a node of a GPU that Vulkan could drive: NVIDIA, a DRM render node, or WSL's dxg. */
export function gpuDeviceNodePresent(dev = '/dev'): boolean {
  const listed = (dir: string, pattern: RegExp) => {
    try {
      return readdirSync(dir).some((name) => pattern.test(name));
    } catch {
      return false;
    }
  };
  return listed(dev, /^(nvidia\d+|dxg)$/) || listed(join(dev, 'dri'), /^renderD\d+$/);
}

function vulkanLoaderPresent(): boolean {
  const dirs = [
    ...(process.env.LD_LIBRARY_PATH ?? '').split(':').filter((d) => d),
    '/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib', '/lib/x86_64-linux-gnu', '/lib64', '/usr/local/lib',
  ];
  if (dirs.some((d) => existsSync(join(d, 'libvulkan.so.1')))) return true;
  try {
    return readFileSync('/etc/ld.so.cache').includes('libvulkan.so.1');
  } catch {
    return false;
  }
}

async function prepareNative(): Promise<Prepared> {
  for (const pkg of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
    try {
      await import(pkg);
    } catch {
      continue;
    }
    if (tf.findBackendFactory('tensorflow')) return { ok: true, detail: `native TensorFlow via ${pkg}` };
    return { ok: false, detail: `${pkg} is installed but registered no 'tensorflow' backend with this copy of tfjs` };
  }
  return { ok: false, detail: '@tensorflow/tfjs-node(-gpu) not installed (optional)' };
}

async function prepareWasm(): Promise<Prepared> {
  const pkgJson = require.resolve('@tensorflow/tfjs-backend-wasm/package.json');
  const dist = join(dirname(pkgJson), 'dist');
  if (!existsSync(join(dist, 'tfjs-backend-wasm.wasm'))) return { ok: false, detail: `wasm binaries missing in ${dist}` };
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  // Local files: works offline, never fetches from a CDN.
  wasm.setWasmPaths(`${dist}/`);
  registerWasmTrainingKernels();
  const version = (JSON.parse(readFileSync(pkgJson, 'utf8')) as { version: string }).version;
  return { ok: true, detail: `tfjs-backend-wasm ${version} (XNNPACK, single-threaded)` };
}
