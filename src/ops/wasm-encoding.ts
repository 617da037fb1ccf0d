/**
 * The few pieces of the WebAssembly binary format that apex's hand-assembled kernels need
 * (block-matmul.ts, row-simd.ts, train/adamw-simd.ts): LEB128 numbers, vectors, sections, names,
 * SIMD instructions and memory arguments, and the part of the WebAssembly JS API used to
 * instantiate them (the project's type libraries do not declare it).
 */

export const I32 = 0x7f;
export const V128 = 0x7b;

export function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  } while (n !== 0);
  return out;
}

export function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const byte = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (byte & 0x40) === 0) || (n === -1 && (byte & 0x40) !== 0)) return [...out, byte];
    out.push(byte | 0x80);
  }
}

export const vector = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
export const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body];
export const name = (s: string): number[] => [...uleb(s.length), ...new TextEncoder().encode(s)];
/** SIMD instructions are 0xfd followed by their LEB128 sub-opcode. */
export const simd = (code: number, ...immediates: number[]): number[] => [0xfd, ...uleb(code), ...immediates];
/** memarg of a load/store: alignment hint (log2 bytes) and a constant byte offset. */
export const memarg = (alignLog2: number, offset: number): number[] => [alignLog2, ...uleb(offset)];

/** "\0asm", version 1. */
export const MODULE_HEADER = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

export interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
export interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { readonly exports: Record<string, unknown> };
  Memory: abstract new (...args: never[]) => WasmMemory;
}
export const wasmApi = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

/**
 * A module that imports its memory as env.memory, bound to a given memory: compiled once (on
 * first use), instantiated once per memory, `bind` picking what callers use from its exports.
 */
export function memoryBoundModule<T>(bytes: () => Uint8Array, bind: (exports: Record<string, unknown>) => T): (memory: WasmMemory) => T {
  let compiled: object | undefined;
  const instances = new WeakMap<WasmMemory, T>();
  return (memory) => {
    const known = instances.get(memory);
    if (known) return known;
    compiled ??= new wasmApi.Module(bytes());
    const bound = bind(new wasmApi.Instance(compiled, { env: { memory } }).exports);
    instances.set(memory, bound);
    return bound;
  };
}
