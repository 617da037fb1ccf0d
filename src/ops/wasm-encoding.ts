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

/** The core instructions the SIMD kernels use (row-simd.ts, train/adamw-simd.ts). */
export const op = {
  block: 0x02, loop: 0x03, if: 0x04, br: 0x0c, brIf: 0x0d, end: 0x0b, localGet: 0x20, localSet: 0x21,
  i32Load: 0x28, f32Load: 0x2a, f32Store: 0x38, i32Const: 0x41, i32Eq: 0x46, i32GeU: 0x4f, i32Add: 0x6a,
  i32Mul: 0x6c, f64Add: 0xa0, f32DemoteF64: 0xb6, blockTypeEmpty: 0x40,
} as const;
/** Their SIMD sub-opcodes (after 0xfd, see `simd`). */
export const simdOp = {
  v128Load: 0x00, v128Store: 0x0b, v128Const: 0x0c, i8x16Shuffle: 0x0d, i32x4Splat: 0x11, f32x4Splat: 0x13,
  f64x2ExtractLane: 0x21, v128And: 0x4e, v128Bitselect: 0x52, f64x2PromoteLowF32x4: 0x5f,
  f32x4Sqrt: 0xe3, f32x4Add: 0xe4, f32x4Sub: 0xe5, f32x4Mul: 0xe6, f32x4Div: 0xe7, f64x2Add: 0xf0,
} as const;
export const localGet = (l: number): number[] => [op.localGet, ...uleb(l)];
export const localSet = (l: number): number[] => [op.localSet, ...uleb(l)];
export const i32Const = (v: number): number[] => [op.i32Const, ...sleb(v)];
/** for (counter = 0; counter < limit; counter += step) body — counter and limit are i32 locals. */
export function countedLoop(counter: number, limit: number, step: number, body: number[]): number[] {
  return [
    ...i32Const(0), ...localSet(counter),
    op.block, op.blockTypeEmpty, op.loop, op.blockTypeEmpty,
    ...localGet(counter), ...localGet(limit), op.i32GeU, op.brIf, 1,
    ...body,
    ...localGet(counter), ...i32Const(step), op.i32Add, ...localSet(counter),
    op.br, 0, op.end, op.end,
  ];
}
/** v128 load/store at the address on the stack (4-byte alignment hint). */
export const v128Load = simd(simdOp.v128Load, ...memarg(2, 0));
export const v128Store = simd(simdOp.v128Store, ...memarg(2, 0));

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
