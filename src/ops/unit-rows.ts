/**
 * Where the units of an APEX operator live inside the weight matrices (APEX-METHOD §3): a head
 * unit spans d_h consecutive rows (v_proj) or columns (o_proj), taken head-major in the order
 * of P / N; a channel unit is one row (gate/up) or one column (down). Under GQA a head unit is
 * a KV group: one block of v_proj rows, and H/nKv blocks of o_proj columns (one per slot).
 */

/** Rows (or columns) of the units in order, d_h per unit: the d_h of units[0], then units[1], … */
export function headRows(units: ArrayLike<number>, headDim: number): Int32Array {
  const out = new Int32Array(units.length * headDim);
  for (let i = 0; i < units.length; i++) {
    for (let d = 0; d < headDim; d++) out[i * headDim + d] = units[i]! * headDim + d;
  }
  return out;
}

/**
 * o_proj columns of KV-group units, one list per slot j of a group: slot j of group g is query
 * head g·(H/nKv) + j (HF `repeat_kv` order). Under MHA there is one slot and it equals headRows.
 */
export function oProjSlotColumns(units: ArrayLike<number>, numHeads: number, numKvHeads: number, headDim: number): Int32Array[] {
  if (numKvHeads < 1 || numHeads % numKvHeads !== 0) throw new RangeError(`${numHeads} heads do not split into ${numKvHeads} KV groups`);
  const perGroup = numHeads / numKvHeads;
  const slots: Int32Array[] = [];
  for (let j = 0; j < perGroup; j++) {
    slots.push(headRows(Array.from(units, (g) => g * perGroup + j), headDim));
  }
  return slots;
}
