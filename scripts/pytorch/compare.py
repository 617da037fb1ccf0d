#!/usr/bin/env python3
"""Compares apex's run (export-apex-run.ts JSON) with train_reference.py's, stage by stage: losses,
learning rates, gradient norms, every trainable tensor after the last step (as the update
ΔW = W_final − W_initial, relative to the reference's largest |ΔW| of that tensor), and the fused
model a later stage starts from.

    python3 scripts/pytorch/compare.py APEX.json REF.json
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_reference import read_safetensors  # noqa: E402


def tensor_report(what, got, want, start):
    worst, worst_abs = (0, ''), (0, '')
    for name in sorted(set(got) & set(want)):
        x = np.array(got[name]['values'], dtype=np.float64)
        y = np.array(want[name]['values'], dtype=np.float64)
        w0 = start(name)
        dx, dy = x - w0, y - w0
        scale = np.abs(dy).max()
        err = np.abs(dx - dy).max()
        rel = err / scale if scale > 0 else (0 if err == 0 else np.inf)
        if rel > worst[0]:
            worst = (rel, name)
        if np.abs(x - y).max() > worst_abs[0]:
            worst_abs = (np.abs(x - y).max(), name)
    if set(got) != set(want):
        print(f'  {what}: NAME MISMATCH: only apex', sorted(set(got) - set(want))[:5], 'only reference', sorted(set(want) - set(got))[:5])
    print(f'  {what}: max |ΔW_apex − ΔW_ref| / max|ΔW_ref| = {worst[0]:.3e} ({worst[1]}); max |W_apex − W_ref| = {worst_abs[0]:.3e} ({worst_abs[1]})')


def main():
    apex = json.load(open(sys.argv[1]))
    ref = json.load(open(sys.argv[2]))
    base = {k: v.reshape(-1).astype(np.float64) for k, v in read_safetensors(os.path.join(apex['model'], 'model.safetensors')).items()}
    print(f"== {apex['case']}")
    for st, rs in zip(apex['stages'], ref['stages']):
        a = st['apex']
        print(f"  stage {st['stage']}")
        for key in ('losses', 'lrs', 'grad_norms'):
            x, y = np.array(a[key]), np.array(rs[key])
            rel = np.abs(x - y) / np.maximum(np.abs(y), 1e-30)
            print(f"  {key:10s} max abs {np.abs(x - y).max():.3e}  max rel {rel.max():.3e}")
        tensor_report('trained', a['final'], rs['final'], lambda n: np.array(st['initial'][n]['values'], dtype=np.float64) if n in st['initial'] else base[n])
        if 'fused' in a:
            tensor_report('fused model', a['fused'], rs['fused'], lambda n: base[n])
            # the next stage starts from the fused model
            base = {k: np.array(v['values'], dtype=np.float64) for k, v in rs['fused'].items()}


main()
