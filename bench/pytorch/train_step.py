"""PyTorch CPU baseline for bench/train.ts: one full fine-tuning step (the LLaMA forward as
transformers computes it, causal-LM loss, backward, global-norm clipping at 1.0, AdamW with
betas 0.9/0.95 and no weight decay) on the same checkpoint and token ids, float32. Times each
step after two warm-up steps and prints one JSON line (median wall and CPU seconds per step).

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=2 /usr/bin/python3 train_step.py MODEL_DIR IDS.safetensors STEPS
"""
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_forward import load_model, read_safetensors, rms_norm, rotate_half  # noqa: E402


def forward_loss(cfg, w, ids):
    B, T = ids.shape
    H, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    dh = cfg.get("head_dim") or cfg["hidden_size"] // H
    eps = cfg["rms_norm_eps"]
    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, dh, 2, dtype=torch.int64).float() / dh))
    freqs = torch.outer(torch.arange(T, dtype=torch.float32), inv)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    mask = torch.full((T, T), float("-inf")).triu(1)
    x = w["model.embed_tokens.weight"][ids]
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = F.linear(h, w[p + "self_attn.q_proj.weight"]).view(B, T, H, dh).transpose(1, 2)
        k = F.linear(h, w[p + "self_attn.k_proj.weight"]).view(B, T, nkv, dh).transpose(1, 2)
        v = F.linear(h, w[p + "self_attn.v_proj.weight"]).view(B, T, nkv, dh).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // nkv, dim=1)
        v = v.repeat_interleave(H // nkv, dim=1)
        scores = torch.matmul(q, k.transpose(2, 3)) * dh ** -0.5 + mask
        a = torch.matmul(torch.softmax(scores, dim=-1), v)
        x = x + F.linear(a.transpose(1, 2).reshape(B, T, H * dh), w[p + "self_attn.o_proj.weight"])
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        x = x + F.linear(F.silu(F.linear(h, w[p + "mlp.gate_proj.weight"])) * F.linear(h, w[p + "mlp.up_proj.weight"]), w[p + "mlp.down_proj.weight"])
    x = rms_norm(x, w["model.norm.weight"], eps)
    logits = F.linear(x, w.get("lm_head.weight", w["model.embed_tokens.weight"]))
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1).long())


def main():
    cfg, w = load_model(sys.argv[1])
    ids = next(iter(read_safetensors(sys.argv[2]).values())).long()
    steps = int(sys.argv[3])
    params = {k: torch.nn.Parameter(v) for k, v in w.items()}
    opt = torch.optim.AdamW(params.values(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.0)
    times, cpu, losses = [], [], []
    for _ in range(steps + 2):
        t = time.perf_counter()
        c = time.process_time()
        opt.zero_grad(set_to_none=True)
        loss = forward_loss(cfg, params, ids)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params.values(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        losses.append(loss.item())
    seconds = statistics.median(times[2:])
    print(json.dumps({"secondsPerStep": seconds, "cpuSecondsPerStep": statistics.median(cpu[2:]),
                      "tokensPerSecond": ids.numel() / seconds, "firstLoss": losses[0],
                      "params": sum(p.numel() for p in params.values()), "torch": torch.__version__, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
