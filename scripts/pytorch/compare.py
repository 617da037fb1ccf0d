#!/usr/bin/env python3
"""Compares apex's run (export-apex-run.ts JSON) with train_reference.py's: losses, learning
rates, gradient norms, and every trainable tensor after the last step (as the update
ΔW = W_final − W_initial, relative to the reference's largest |ΔW| of that tensor).

    python3 scripts/pytorch/compare.py APEX.json REF.json [REF64.json]
"""
import json
import sys

import numpy as np


def main():
    apex = json.load(open(sys.argv[1]))
    ref = json.load(open(sys.argv[2]))
    a = apex['apex']
    print(f"== {apex['case']}")
    for key in ('losses', 'lrs', 'grad_norms'):
        x, y = np.array(a[key]), np.array(ref[key])
        rel = np.abs(x - y) / np.maximum(np.abs(y), 1e-30)
        print(f"  {key:10s} max abs {np.abs(x - y).max():.3e}  max rel {rel.max():.3e}   apex {' '.join(f'{v:.6g}' for v in x[:4])} …")
    names_a, names_r = set(a['final']), set(ref['final'])
    if names_a != names_r:
        print('  NAME MISMATCH: only apex', sorted(names_a - names_r)[:5], 'only ref', sorted(names_r - names_a)[:5])
    base = None
    worst = (0, '')
    worst_abs = (0, '')
    for name in sorted(names_a & names_r):
        x = np.array(a['final'][name]['values'], dtype=np.float64)
        y = np.array(ref['final'][name]['values'], dtype=np.float64)
        if name in apex['initial']:
            w0 = np.array(apex['initial'][name]['values'], dtype=np.float64)
        else:
            if base is None:
                sys.path.insert(0, 'scripts/pytorch')
                from train_reference import read_safetensors
                base = read_safetensors(f"{apex['model']}/model.safetensors")
            w0 = base[name].reshape(-1).astype(np.float64)
        dx, dy = x - w0, y - w0
        scale = np.abs(dy).max()
        err = np.abs(dx - dy).max()
        rel = err / scale if scale > 0 else (0 if err == 0 else np.inf)
        if rel > worst[0]:
            worst = (rel, name)
        if np.abs(x - y).max() > worst_abs[0]:
            worst_abs = (np.abs(x - y).max(), name)
    print(f"  weights   max |ΔW_apex − ΔW_ref| / max|ΔW_ref| = {worst[0]:.3e} ({worst[1]}); max |W_apex − W_ref| = {worst_abs[0]:.3e} ({worst_abs[1]})")


main()
