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
CASES = ['vanilla', 'lora', 'apex-operators', 'apex-full', 'apex-structured-2-stages']


def deltas(final, start):
    """ΔW = final − start(name) per tensor, float64."""
    return {name: np.array(t['values'], dtype=np.float64) - start(name) for name, t in final.items()}


def digest(d64, shapes):
    """What the fixture keeps of a set of updates: per tensor its norm, largest |entry|, 16 sampled entries, changed rows/columns."""
    tensors = {}
    for name, d in sorted(d64.items()):
        shape = shapes[name]
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
    return tensors


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
        base = {k: v.reshape(-1).astype(np.float64) for k, v in read_safetensors(os.path.join(export['model'], 'model.safetensors')).items()}
        r64, r32 = run(export, torch.float64), run(export, torch.float32)
        stages = []
        dev32 = {'losses': 0.0, 'grad_norms': 0.0, 'delta_entries': 0.0, 'delta_norms': 0.0}
        devapex = dict(dev32)

        def worse(acc, key, value):
            acc[key] = max(acc[key], value)

        start64 = start32 = startapex = lambda n: base[n]
        for st, s64, s32 in zip(export['stages'], r64['stages'], r32['stages']):
            a = st['apex']
            if s64['selection_matches_apex'] is False or s32['selection_matches_apex'] is False:
                raise SystemExit(f'{case} stage {st["stage"]}: the reference selects other units than apex')
            init = lambda s: (lambda n: np.array(st['initial'][n]['values'], dtype=np.float64) if n in st['initial'] else s(n))
            d64, d32, dapex = deltas(s64['final'], init(start64)), deltas(s32['final'], init(start32)), deltas(a['final'], init(startapex))
            if set(dapex) != set(d64):
                raise SystemExit(f'{case} stage {st["stage"]}: trainable tensors differ: apex only {sorted(set(dapex) - set(d64))[:4]}, reference only {sorted(set(d64) - set(dapex))[:4]}')
            pairs = [(d32, dev32, s32), (dapex, devapex, a)]
            entry = {'stage': st['stage'], 'selection': s64['selection'], 'losses': s64['losses'], 'grad_norms': s64['grad_norms'], 'lrs': s64['lrs'], 'tensors': digest(d64, {n: t['shape'] for n, t in s64['final'].items()})}
            if 'fused' in s64:
                f64, f32, fapex = deltas(s64['fused'], start64), deltas(s32['fused'], start32), deltas(a['fused'], startapex)
                entry['fused'] = digest(f64, {n: t['shape'] for n, t in s64['fused'].items()})
                for d, acc, _ in ((f32, dev32, None), (fapex, devapex, None)):
                    e, nrm = tensor_deviation(d, f64)
                    worse(acc, 'delta_entries', e)
                    worse(acc, 'delta_norms', nrm)
            for d, acc, res in pairs:
                worse(acc, 'losses', deviation(res['losses'], s64['losses']))
                worse(acc, 'grad_norms', deviation(res['grad_norms'], s64['grad_norms']))
                e, nrm = tensor_deviation(d, d64)
                worse(acc, 'delta_entries', e)
                worse(acc, 'delta_norms', nrm)
            stages.append(entry)
            if 'fused' in s64:
                start64 = lambda n, f=s64['fused']: np.array(f[n]['values'], dtype=np.float64)
                start32 = lambda n, f=s32['fused']: np.array(f[n]['values'], dtype=np.float64)
                startapex = lambda n, f=a['fused']: np.array(f[n]['values'], dtype=np.float64)
        fixture['cases'][case] = {'inputs_sha256': export['inputs_sha256'], 'options': export['options'], 'float32_deviation': dev32, 'apex_deviation': devapex, 'stages': stages}
        print(case, 'float32', {k: f'{v:.1e}' for k, v in dev32.items()}, 'apex', {k: f'{v:.1e}' for k, v in devapex.items()})
    with open(out, 'w') as f:
        json.dump(fixture, f, separators=(',', ':'))
        f.write('\n')


if __name__ == '__main__':
    main()
