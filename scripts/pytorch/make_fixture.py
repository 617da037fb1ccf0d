#!/usr/bin/env python3
"""Makes fixtures/refs/train/trajectories.json from apex's exports (export-apex-run.ts) and the
PyTorch reference (train_reference.py) run in float64 (the values the test compares with) and
in float32 (how far an independent float32 implementation lies from float64: the scale the
test's tolerances are set against). What apex computed is recorded only as `apex_deviation`
(information for a reader), never as a reference value.

    npx tsx scripts/pytorch/export-apex-run.ts all /tmp/apex-export
    OMP_NUM_THREADS=1 /usr/bin/python3 scripts/pytorch/make_fixture.py /tmp/apex-export fixtures/refs/train/trajectories.json
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_reference import read_safetensors, run  # noqa: E402

SAMPLES = 16
CASES = ['vanilla', 'lora', 'apex-operators', 'apex-structured', 'apex-full']


def deltas(export, final, base):
    out = {}
    for name, t in final.items():
        w = np.array(t['values'], dtype=np.float64)
        w0 = np.array(export['initial'][name]['values'], dtype=np.float64) if name in export['initial'] else base[name].reshape(-1).astype(np.float64)
        out[name] = w - w0
    return out


def deviation(x, ref):
    """Largest |x − ref| relative to |ref| (per step), and per tensor relative to max |ΔW_ref|."""
    return float(np.max(np.abs(np.array(x) - np.array(ref)) / np.abs(np.array(ref))))


def tensor_deviation(d, d64):
    """Over all tensors: the largest |ΔW − ΔW_ref| relative to max |ΔW_ref| (any entry), and of ‖ΔW‖ relative."""
    entry, norm = 0.0, 0.0
    for name, ref in d64.items():
        scale = np.abs(ref).max()
        entry = max(entry, float(np.abs(d[name] - ref).max() / scale) if scale > 0 else 0.0)
        r = np.linalg.norm(ref)
        norm = max(norm, float(abs(np.linalg.norm(d[name]) - r) / r) if r > 0 else 0.0)
    return entry, norm


def main():
    src, out = sys.argv[1], sys.argv[2]
    fixture = {'generated_by': 'scripts/pytorch/make_fixture.py', 'torch': torch.__version__, 'reference_dtype': 'float64', 'cases': {}}
    for case in CASES:
        export = json.load(open(os.path.join(src, f'{case}.json')))
        base = read_safetensors(os.path.join(export['model'], 'model.safetensors'))
        r64 = run(export, torch.float64)
        r32 = run(export, torch.float32)
        d64 = deltas(export, r64['final'], base)
        d32 = deltas(export, r32['final'], base)
        dapex = deltas(export, export['apex']['final'], base)
        if set(dapex) != set(d64):
            raise SystemExit(f'{case}: trainable tensors differ: apex only {sorted(set(dapex) - set(d64))[:4]}, reference only {sorted(set(d64) - set(dapex))[:4]}')
        tensors = {}
        for name, d in sorted(d64.items()):
            shape = r64['final'][name]['shape']
            changed = np.flatnonzero(d != 0)
            pick = changed[np.linspace(0, len(changed) - 1, min(SAMPLES, len(changed))).round().astype(int)] if len(changed) else changed
            entry = {'shape': shape, 'max_abs_delta': float(np.abs(d).max()), 'delta_norm': float(np.linalg.norm(d)), 'samples': [[int(i), float(d[i])] for i in pick]}
            if len(shape) == 2:
                m = (d.reshape(shape) != 0)
                rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
                if len(rows) < shape[0]:
                    entry['changed_rows'] = rows.tolist()
                if len(cols) < shape[1]:
                    entry['changed_cols'] = cols.tolist()
            tensors[name] = entry
        fixture['cases'][case] = {
            'inputs_sha256': export['inputs_sha256'],
            'options': export['options'],
            'losses': r64['losses'],
            'grad_norms': r64['grad_norms'],
            'lrs': r64['lrs'],
            'float32_deviation': {'losses': deviation(r32['losses'], r64['losses']), 'grad_norms': deviation(r32['grad_norms'], r64['grad_norms']), **dict(zip(('delta_entries', 'delta_norms'), tensor_deviation(d32, d64)))},
            'apex_deviation': {'losses': deviation(export['apex']['losses'], r64['losses']), 'grad_norms': deviation(export['apex']['grad_norms'], r64['grad_norms']), **dict(zip(('delta_entries', 'delta_norms'), tensor_deviation(dapex, d64)))},
            'tensors': tensors,
        }
        print(case, 'float32', fixture['cases'][case]['float32_deviation'], 'apex', fixture['cases'][case]['apex_deviation'])
    with open(out, 'w') as f:
        json.dump(fixture, f, separators=(',', ':'))
        f.write('\n')


if __name__ == '__main__':
    main()
