#!/usr/bin/env python3
"""An independent PyTorch implementation of one apex training stage, from the spec
(docs: /work/shared/APEX-METHOD.md §2-§5; README's loss rules), to check apex's trainer.

It reads what only apex's seeded Rng can say (written by scripts/pytorch/export-apex-run.ts):
the training sequences and loss masks, the sequence indices of every micro-batch, the analysis's
calibration sample, the operators' initial B1 and LoRA's initial A. Everything else is computed
here, without apex's code: the selected units P/N/E per layer (§2: rank counts of the head and
channel activation norms per micro-batch, over the calibration sample for stage 1 and over the
previous stage's training micro-batches, operators applied, for a later stage; reported when they
differ from apex's), the LLaMA forward pass (RMSNorm, rotary embeddings, GQA
attention, SwiGLU, tied or untied lm_head), the causal-LM loss (position t predicts token t+1,
counted where the loss mask is 1 at t+1; a step's loss is the sum of its micro-batches' token
losses over all their targets), the operator-augmented forward of §3 (the output side on the
activations of v/gate/up: y_N <- a*y_N + M*y_P, y_P <- b*y_P; the input side on the o/down
weights: W[:, N] <- W[:, N]*diag(a) + W[:, P]*M^T, o_proj per GQA slot), the Monarch product
of §3 step by step, LoRA (W + alpha/r * B*A), autograd gradients, structured's masks (the
rows/columns of N u P u E, embeddings whole; nothing else changes: gradients and decay
masked), global-norm clipping (torch.nn.utils.clip_grad_norm_), torch.optim.AdamW
(β from the options, ε 1e-8; decay on matrices, not on vectors: norms, a, b), and the
learning-rate plan of §5 (one plan over all stages: ⌊3%⌋ linear warm-up, then cosine to 0).

    OMP_NUM_THREADS=1 /usr/bin/python3 scripts/pytorch/train_reference.py IN.json OUT.json [--dtype float32|float64]

IN.json is an export of scripts/pytorch/export-apex-run.ts (one case, one or more stages; each
stage after the first starts from the fusion (§3) of the one before, with the learning rate of
§5 continuing across the boundary and fresh AdamW moments).

Tested with torch 1.13 (CPU), numpy, no transformers.
"""
import argparse
import json
import math
import os
import struct
import sys

os.environ.setdefault('OMP_NUM_THREADS', '1')

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


# --- checkpoint -------------------------------------------------------------------------------

def read_safetensors(path):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == '__metadata__':
            continue
        if info['dtype'] != 'F32':
            raise ValueError(f'{name}: only F32 checkpoints are supported here, got {info["dtype"]}')
        a, b = info['data_offsets']
        out[name] = np.frombuffer(data[a:b], dtype='<f4').reshape(info['shape']).copy()
    return out


class Config:
    def __init__(self, d):
        self.hidden = d['hidden_size']
        self.layers = d['num_hidden_layers']
        self.heads = d['num_attention_heads']
        self.kv_heads = d.get('num_key_value_heads', self.heads)
        self.head_dim = d.get('head_dim', self.hidden // self.heads)
        self.eps = d['rms_norm_eps']
        rope = d.get('rope_parameters') or {}
        self.theta = rope.get('rope_theta', d.get('rope_theta', 10000.0))
        self.tied = d.get('tie_word_embeddings', False)
        self.vocab = d['vocab_size']


PROJ = {
    'q_proj': 'self_attn.q_proj', 'k_proj': 'self_attn.k_proj', 'v_proj': 'self_attn.v_proj', 'o_proj': 'self_attn.o_proj',
    'gate_proj': 'mlp.gate_proj', 'up_proj': 'mlp.up_proj', 'down_proj': 'mlp.down_proj',
}


def wname(layer, key):
    return f'model.layers.{layer}.{PROJ[key]}.weight'


# --- Monarch (§3) -----------------------------------------------------------------------------

def monarch_dense(B1, B2):
    """M (n x n) with M @ x computed exactly as §3's four steps, applied to the identity's columns."""
    nb, bs, _ = B1.shape
    n = nb * bs
    X = torch.eye(n, dtype=B1.dtype)
    xb = X.reshape(nb, bs, n)                               # step 1: x viewed as [nb, bs]
    u = torch.einsum('jab,jbc->jac', B1, xb)                # u_j = B1[j] x_j
    v = u.reshape(bs, nb, n).transpose(0, 1)                # step 2: u as [bs, nb], transposed
    w = torch.einsum('jab,jbc->jac', B2, v)                 # step 3: w_j = B2[j] v_j
    return w.transpose(0, 1).reshape(n, n)                  # step 4: w as [nb, bs] -> [bs, nb], flattened


def head_cols(units, head_dim):
    """Indices of the d_h features of each unit (head-major)."""
    return [u * head_dim + i for u in units for i in range(head_dim)]


# --- model ------------------------------------------------------------------------------------

def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


class Model:
    def __init__(self, cfg, params, operators=None, lora=None, lora_scale=None):
        self.record = None               # a list: forward appends (layer, head-unit norms, channel norms)
        self.cfg = cfg
        self.p = params                  # name -> tensor (model tensors)
        self.ops = operators or {}       # layer -> {'attn': {...}, 'mlp': {...}}
        self.lora = lora or {}           # (layer, key) -> (A, B)
        self.lora_scale = lora_scale

    def weight(self, layer, key):
        W = self.p[wname(layer, key)]
        ab = self.lora.get((layer, key))
        if ab is not None:
            A, B = ab
            W = W + self.lora_scale * (B @ A)
        return W

    def forward(self, ids):
        cfg = self.cfg
        B, T = ids.shape
        emb = self.p['model.embed_tokens.weight']
        x = emb[ids]
        dt = x.dtype
        inv = 1.0 / (cfg.theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float64) / cfg.head_dim))
        freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv)
        ang = torch.cat([freqs, freqs], dim=-1)
        cos, sin = ang.cos().to(dt), ang.sin().to(dt)
        causal = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        rep = cfg.heads // cfg.kv_heads
        hd = cfg.head_dim
        for i in range(cfg.layers):
            ops = self.ops.get(i, {})
            h = rms_norm(x, self.p[f'model.layers.{i}.input_layernorm.weight'], cfg.eps)
            q = h @ self.weight(i, 'q_proj').T
            k = h @ self.weight(i, 'k_proj').T
            v = h @ self.weight(i, 'v_proj').T
            Wo = self.weight(i, 'o_proj')
            attn = ops.get('attn')
            if attn is not None:
                M = monarch_dense(attn['B1'], attn['B2'])
                P, N = head_cols(attn['P'], hd), head_cols(attn['N'], hd)
                vP, vN = v[..., P], v[..., N]
                v = v.clone()
                v[..., N] = attn['a'] * vN + vP @ M.T       # y_N <- a*y_N + M y_P (unscaled y_P)
                v[..., P] = attn['b_v'] * vP                # y_P <- b*y_P
                # o_proj columns: per GQA slot j, the query heads g*rep + j of the P / N groups.
                Wo = Wo.clone()
                for j in range(rep):
                    Pj = head_cols([g * rep + j for g in attn['P']], hd)
                    Nj = head_cols([g * rep + j for g in attn['N']], hd)
                    Wo[:, Nj] = Wo[:, Nj] * attn['a'] + Wo[:, Pj] @ M.T
            q = q.view(B, T, cfg.heads, hd).transpose(1, 2)
            k = k.view(B, T, cfg.kv_heads, hd).transpose(1, 2)
            v = v.view(B, T, cfg.kv_heads, hd).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            k = k.repeat_interleave(rep, dim=1)             # HF repeat_kv: head h reads KV head h // rep
            v = v.repeat_interleave(rep, dim=1)
            s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
            s = s.masked_fill(causal, float('-inf'))
            o = torch.softmax(s, dim=-1) @ v
            o = o.transpose(1, 2).reshape(B, T, cfg.heads * hd)
            if self.record is not None:
                # §2: A_h = ‖o[:, h·d_h:(h+1)·d_h]‖_F over the micro-batch's tokens (all real here),
                # the unit is the KV group: A_g = sqrt(Σ_{h in g} A_h²); with operators, as the augmented model computes it.
                heads = o.detach().reshape(B * T, cfg.heads, hd).pow(2).sum(dim=(0, 2))
                groups = heads.reshape(cfg.kv_heads, rep).sum(1).sqrt()
            x = x + o @ Wo.T
            h = rms_norm(x, self.p[f'model.layers.{i}.post_attention_layernorm.weight'], cfg.eps)
            g = h @ self.weight(i, 'gate_proj').T
            u = h @ self.weight(i, 'up_proj').T
            Wd = self.weight(i, 'down_proj')
            mlp = ops.get('mlp')
            if mlp is not None:
                M = monarch_dense(mlp['B1'], mlp['B2'])
                P, N = mlp['P'], mlp['N']
                gP, gN, uP, uN = g[..., P], g[..., N], u[..., P], u[..., N]
                g, u = g.clone(), u.clone()
                g[..., N] = mlp['a'] * gN + gP @ M.T
                g[..., P] = mlp['b_gate'] * gP
                u[..., N] = mlp['a'] * uN + uP @ M.T
                u[..., P] = mlp['b_up'] * uP
                Wd = Wd.clone()
                Wd[:, N] = Wd[:, N] * mlp['a'] + Wd[:, P] @ M.T
            if self.record is not None:
                # §2: A_c = ‖silu(x·W_gateᵀ)[:, c]‖₂, the gate branch after its activation (and after the gate transform).
                self.record.append((i, groups, torch.nn.functional.silu(g.detach()).reshape(B * T, -1).pow(2).sum(0).sqrt()))
            x = x + (torch.nn.functional.silu(g) * u) @ Wd.T
        x = rms_norm(x, self.p['model.norm.weight'], cfg.eps)
        head = emb if cfg.tied else self.p['lm_head.weight']
        return x @ head.T


def token_nll_sum(logits, ids, mask):
    """Σ over targets of −log p(token t+1 | ≤ t), targets where mask[t+1] = 1; and their count."""
    lp = torch.log_softmax(logits[:, :-1], dim=-1)
    nll = -lp.gather(-1, ids[:, 1:, None])[..., 0]
    w = mask[:, 1:]
    return (nll * w).sum(), w.sum()


# --- learning-rate plan (§5) -------------------------------------------------------------------

def cosine_with_warmup(j, base, n, w):
    """One segment of the plan (the reference's transformers cosine schedule): warm-up from 0 over w steps, cosine to 0 at n."""
    if j < w:
        return base * j / w
    progress = min(1.0, (j - w) / max(1, n - w))
    return max(0.0, base * 0.5 * (1 + math.cos(math.pi * progress)))


def lr_at(step, peak, total, starts):
    """§5: one plan over all `total` steps: ⌊3%⌋ warm-up, cosine to 0. At each later stage start b the
    schedule continues from the rate it gives at b: ⌊0.5%⌋ of the remaining steps of warm-up back to
    it, then cosine from it to 0 over the remaining steps (the reference's int() for both counts)."""
    base, start, n, w = peak, 0, total, int(total * 0.03)
    for b in starts:
        if b == 0 or b > step:
            continue
        base = cosine_with_warmup(b - start, base, n, w)
        start, n = b, total - b
        w = int(n * 0.005)
    return cosine_with_warmup(step - start, base, n, w)


def fuse(cfg, params, operators):
    """§3 fusion of a stage: the trained weights, then W[N] <- diag(a) W[N] + M W[P] (unscaled W[P]),
    W[P] <- diag(b) W[P] on the rows of v (KV heads) and gate/up; W[:, N] <- W[:, N] diag(a) + W[:, P] M^T
    on the columns of o (per GQA slot) and down."""
    out = {k: v.detach().clone() for k, v in params.items()}
    rep = cfg.heads // cfg.kv_heads
    hd = cfg.head_dim
    with torch.no_grad():
        for i, ops in operators.items():
            attn, mlp = ops.get('attn'), ops.get('mlp')
            if attn is not None:
                M = monarch_dense(attn['B1'], attn['B2'])
                P, N = head_cols(attn['P'], hd), head_cols(attn['N'], hd)
                W = out[wname(i, 'v_proj')]
                WP = W[P].clone()
                W[N] = attn['a'][:, None] * W[N] + M @ WP
                W[P] = attn['b_v'][:, None] * WP
                O = out[wname(i, 'o_proj')]
                for j in range(rep):
                    Pj = head_cols([g * rep + j for g in attn['P']], hd)
                    Nj = head_cols([g * rep + j for g in attn['N']], hd)
                    O[:, Nj] = O[:, Nj] * attn['a'] + O[:, Pj] @ M.T
            if mlp is not None:
                M = monarch_dense(mlp['B1'], mlp['B2'])
                P, N = mlp['P'], mlp['N']
                for key, b in (('gate_proj', 'b_gate'), ('up_proj', 'b_up')):
                    W = out[wname(i, key)]
                    WP = W[P].clone()
                    W[N] = mlp['a'][:, None] * W[N] + M @ WP
                    W[P] = mlp[b][:, None] * WP
                D = out[wname(i, 'down_proj')]
                D[:, N] = D[:, N] * mlp['a'] + D[:, P] @ M.T
    return out


# --- stage ------------------------------------------------------------------------------------

def selection_size(n, ratio, s=1):
    """§2: k = ⌊n·ratio/2^s⌋, 1 when that is 0 and n ≥ 2, never more than ⌊n/2⌋."""
    k = math.floor(n * ratio / 2 ** s + 1e-9)
    if k == 0 and n >= 2:
        k = 1
    return min(k, n // 2)


def rank_count(norms, k):
    """§2: +1 for the micro-batch's Top-k by A, −1 for its Min-k; ties by unit index, lower first."""
    a = norms.tolist()
    out = [0] * len(a)
    for u in sorted(range(len(a)), key=lambda u: (-a[u], u))[:k]:
        out[u] += 1
    for u in sorted(range(len(a)), key=lambda u: (a[u], u))[:k]:
        out[u] -= 1
    return out


def select(scores, k, tuned_ratio):
    """§2/§4: P = the k highest scores (score desc, index asc); N = the k lowest of the rest (score asc,
    index asc); E = the next lowest after N up to max(2k, ⌊n·tuned ratio⌋) directly-tuned units."""
    n = len(scores)
    P = sorted(range(n), key=lambda u: (-scores[u], u))[:k]
    rest = sorted((u for u in range(n) if u not in P), key=lambda u: (scores[u], u))
    tuned = min(n, max(2 * k, math.floor(n * tuned_ratio + 1e-9)))
    return {'P': P, 'N': rest[:k], 'E': rest[k:tuned - k]}


def select_model(counts, o):
    """The units of every layer from its (head-unit, channel) scores; E only for structured."""
    ratio = o.get('ratio', 0.375)
    tuned = o['setting'] == 'structured'
    out = []
    for i, (h, c) in enumerate(counts):
        kh, kc = selection_size(len(h), ratio), selection_size(len(c), ratio)
        out.append({'layer': i, 'heads': select(h, kh, o['tuned_attn_ratio'] if tuned else 0), 'channels': select(c, kc, o['tuned_ffn_ratio'] if tuned else 0)})
    return out


def analyse(inp, cfg, base, dtype):
    """§2's initial assessment: the base model's forward over the calibration sample (apex's seeded
    choice, in its order) in micro-batches of the batch size, rank counts summed; the selection."""
    model = Model(cfg, base)
    model.record = []
    seqs = torch.tensor(inp['sequences'], dtype=torch.long)
    cal = inp['calibration']
    bs = inp['options']['batch_size']
    counts = [[[0] * cfg.kv_heads, None] for _ in range(cfg.layers)]
    ratio = inp['options'].get('ratio', 0.375)
    with torch.no_grad():
        for start in range(0, len(cal), bs):
            model.forward(seqs[cal[start:start + bs]])
            for i, heads, chans in model.record:
                counts[i][0] = [x + y for x, y in zip(counts[i][0], rank_count(heads, selection_size(cfg.kv_heads, ratio)))]
                counts[i][1] = [x + y for x, y in zip(counts[i][1] or [0] * len(chans), rank_count(chans, selection_size(len(chans), ratio)))]
            model.record.clear()
    return select_model(counts, inp['options'])


def run(inp, dtype):
    """Every stage of the case, each from the fused model of the one before."""
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
    model_dir = os.path.join(root, inp['model'])
    cfg = Config(json.load(open(os.path.join(model_dir, 'config.json'))))
    base = {k: torch.tensor(v, dtype=dtype) for k, v in read_safetensors(os.path.join(model_dir, 'model.safetensors')).items()}
    stages = []
    selection = analyse(inp, cfg, base, dtype) if inp['options']['method'] == 'apex' else None
    for k, st in enumerate(inp['stages']):
        matches = None
        if selection is not None:
            # Stage 1 selects by the analysis of the base model, a later stage by the counts its predecessor
            # recorded while training (§2, §5): the reference's own, which should be apex's.
            key = lambda sel: [{k: x[k] for k in ('layer', 'heads', 'channels')} for x in sel]
            matches = key(selection) == key(st['selection'])
            if not matches:
                print(f"{inp['case']} stage {st['stage']}: the reference selects other units than apex", file=sys.stderr)
            st = dict(st, selection=selection)
        result, params, operators, counts = run_stage(inp, st, cfg, base, dtype)
        result['selection'] = st['selection']
        result['selection_matches_apex'] = matches
        if counts is not None:
            o = inp['options']
            selection = select_model(counts, inp['options'])
            result['selection_next'] = selection
        if k + 1 < len(inp['stages']):
            base = fuse(cfg, params, operators)
            result['fused'] = {name: {'shape': list(t.shape), 'values': t.to(torch.float64).reshape(-1).tolist()} for name, t in base.items()}
        stages.append(result)
    return {'case': inp['case'], 'dtype': str(dtype), 'torch': torch.__version__, 'stages': stages}


def run_stage(inp, st, cfg, base, dtype):
    o = inp['options']
    method, setting = o['method'], o['setting']

    params = {k: v.clone() for k, v in base.items()}
    trainable = {}      # name -> tensor (leaf, requires grad)
    masks = {}          # name -> bool tensor of the entries that may change (absent: all)

    if method == 'vanilla' or setting == 'full':
        for k in params:
            trainable[k] = params[k]
    elif setting == 'structured':
        rep = cfg.heads // cfg.kv_heads
        if o['train_embeddings']:
            trainable['model.embed_tokens.weight'] = params['model.embed_tokens.weight']
            if not cfg.tied:
                trainable['lm_head.weight'] = params['lm_head.weight']
        for s in st['selection']:
            i = s['layer']
            groups = sorted(set(s['heads']['P']) | set(s['heads']['N']) | set(s['heads']['E']))
            chans = sorted(set(s['channels']['P']) | set(s['channels']['N']) | set(s['channels']['E']))
            qheads = [g * rep + j for g in groups for j in range(rep)]
            sets = {
                'q_proj': ('rows', head_cols(qheads, cfg.head_dim)), 'k_proj': ('rows', head_cols(groups, cfg.head_dim)),
                'v_proj': ('rows', head_cols(groups, cfg.head_dim)), 'o_proj': ('cols', head_cols(qheads, cfg.head_dim)),
                'gate_proj': ('rows', chans), 'up_proj': ('rows', chans), 'down_proj': ('cols', chans),
            }
            for key, (axis, idx) in sets.items():
                if not idx:
                    continue
                name = wname(i, key)
                m = torch.zeros(params[name].shape, dtype=torch.bool)
                if axis == 'rows':
                    m[idx, :] = True
                else:
                    m[:, idx] = True
                trainable[name] = params[name]
                masks[name] = m

    operators = {}
    if method == 'apex':
        for s in st['selection']:
            i = s['layer']
            t = lambda f, kind: torch.tensor(st['initial'][f'model.layers.{i}.{kind}.apex.{f}']['values'], dtype=dtype).reshape(st['initial'][f'model.layers.{i}.{kind}.apex.{f}']['shape'])
            ops = {}
            if s['heads']['P']:
                ops['attn'] = {'P': s['heads']['P'], 'N': s['heads']['N'], **{f: t(f, 'self_attn') for f in ('B1', 'B2', 'a', 'b_v')}}
                for f in ('B1', 'B2', 'a', 'b_v'):
                    trainable[f'model.layers.{i}.self_attn.apex.{f}'] = ops['attn'][f]
            if s['channels']['P']:
                ops['mlp'] = {'P': s['channels']['P'], 'N': s['channels']['N'], **{f: t(f, 'mlp') for f in ('B1', 'B2', 'a', 'b_gate', 'b_up')}}
                for f in ('B1', 'B2', 'a', 'b_gate', 'b_up'):
                    trainable[f'model.layers.{i}.mlp.apex.{f}'] = ops['mlp'][f]
            operators[i] = ops

    lora, scale = {}, None
    if method == 'lora':
        r = o['lora_rank']
        alpha = o['lora_alpha'] if o['lora_alpha'] is not None else 2 * r
        scale = alpha / r
        for i in range(cfg.layers):
            for key in PROJ:
                stem = wname(i, key)[:-len('.weight')]
                A = st['initial'][f'{stem}.lora_A.weight']
                A = torch.tensor(A['values'], dtype=dtype).reshape(A['shape'])
                B = torch.zeros(params[wname(i, key)].shape[0], r, dtype=dtype)
                lora[(i, key)] = (A, B)
                trainable[f'{stem}.lora_A.weight'] = A
                trainable[f'{stem}.lora_B.weight'] = B

    for t in trainable.values():
        t.requires_grad_(True)
    model = Model(cfg, params, operators, lora, scale)
    counts = None
    if method == 'apex':
        # The score recorder (§2): rank counts over the stage's training micro-batches, the next stage's scores.
        model.record = []
        counts = [[[0] * cfg.kv_heads, None] for _ in range(cfg.layers)]

    # AdamW: matrices decay, vectors (norms, a, b) do not; a masked matrix decays on its entries only (by hand).
    wd = o['weight_decay']
    groups = {'decay': [], 'plain': []}
    masked_decay = []
    for name, t in trainable.items():
        if t.dim() > 1 and name in masks:
            masked_decay.append(name)
            groups['plain'].append(t)
        elif t.dim() > 1:
            groups['decay'].append(t)
        else:
            groups['plain'].append(t)
    opt = torch.optim.AdamW([{'params': groups['decay'], 'weight_decay': wd}, {'params': groups['plain'], 'weight_decay': 0.0}],
                            lr=o['lr'], betas=(o['beta1'], o['beta2']), eps=1e-8)

    seqs = torch.tensor(inp['sequences'], dtype=torch.long)
    lmask = torch.tensor(inp['loss_masks'], dtype=dtype) if inp['loss_masks'] is not None else torch.ones(seqs.shape, dtype=dtype)
    total = o['steps'] * o['total_stages']
    starts = [i * o['steps'] for i in range(o['total_stages'])]
    offset = (st['stage'] - 1) * o['steps']
    losses, lrs, norms = [], [], []
    tparams = list(trainable.values())
    for step in range(o['steps']):
        micro = st['batches'][step * o['grad_accum']:(step + 1) * o['grad_accum']]
        targets = sum(float(lmask[b][:, 1:].sum()) for b in micro)
        for t in tparams:
            t.grad = None
        loss_total = 0.0
        for b in micro:
            ids = seqs[b]
            nll, _ = token_nll_sum(model.forward(ids), ids, lmask[b])
            if model.record is not None:
                for i, heads, chans in model.record:
                    kh, kc = selection_size(cfg.kv_heads, o.get('ratio', 0.375)), selection_size(len(chans), o.get('ratio', 0.375))
                    counts[i][0] = [x + y for x, y in zip(counts[i][0], rank_count(heads, kh))]
                    counts[i][1] = [x + y for x, y in zip(counts[i][1] or [0] * len(chans), rank_count(chans, kc))]
                model.record.clear()
            (nll / targets).backward()
            loss_total += float(nll.detach())
        for name, m in masks.items():
            trainable[name].grad.mul_(m)
        norm = float(torch.nn.utils.clip_grad_norm_(tparams, o['grad_clip'])) if o['grad_clip'] > 0 else float(torch.sqrt(sum((t.grad ** 2).sum() for t in tparams)))
        lr = lr_at(offset + step, o['lr'], total, starts)
        with torch.no_grad():
            for name in masked_decay:
                t = trainable[name]
                t.copy_(torch.where(masks[name], t * (1 - lr * wd), t))
        for g in opt.param_groups:
            g['lr'] = lr
        opt.step()
        losses.append(loss_total / targets)
        lrs.append(lr)
        norms.append(norm)
    final = {k: {'shape': list(t.shape), 'values': t.detach().to(torch.float64).reshape(-1).tolist()} for k, t in trainable.items()}
    return {'stage': st['stage'], 'losses': losses, 'lrs': lrs, 'grad_norms': norms, 'final': final}, params, operators, counts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('input')
    ap.add_argument('output')
    ap.add_argument('--dtype', choices=['float32', 'float64'], default='float32')
    a = ap.parse_args()
    inp = json.load(open(a.input))
    out = run(inp, getattr(torch, a.dtype))
    json.dump(out, open(a.output, 'w'))
    for st in out['stages']:
        print(a.output, 'stage', st['stage'], ' '.join(f'{l:.4f}' for l in st['losses']))


if __name__ == '__main__':
    main()
