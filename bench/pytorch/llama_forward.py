"""PyTorch CPU baseline for bench/eval.ts: the LLaMA forward pass (as transformers computes it)
over the same checkpoint and token ids, float32, timed after a warm-up; prints one JSON line.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=2 /usr/bin/python3 llama_forward.py MODEL_DIR IDS.safetensors
"""
import json
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        raw = data[b:end]
        if e["dtype"] == "F32":
            a = np.frombuffer(raw, dtype=np.float32)
        elif e["dtype"] == "F16":
            a = np.frombuffer(raw, dtype=np.float16).astype(np.float32)
        elif e["dtype"] == "BF16":
            a = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif e["dtype"] == "I32":
            a = np.frombuffer(raw, dtype=np.int32)
        else:
            raise SystemExit(f"{path}: dtype {e['dtype']} not handled")
        out[name] = torch.from_numpy(a.copy()).reshape(e["shape"])
    return out


def load_model(d):
    cfg = json.load(open(os.path.join(d, "config.json")))
    w = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors"):
            w.update(read_safetensors(os.path.join(d, f)))
    return cfg, w


def rms_norm(x, weight, eps):
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def forward_logits(cfg, w, ids):
    """Logits [B, T, V] of transformers' LlamaForCausalLM (eager attention) for weights `w`; differentiable."""
    B, T = ids.shape
    H, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    dh = cfg.get("head_dim") or cfg["hidden_size"] // H
    eps = cfg["rms_norm_eps"]
    # transformers ≥ 5 writes rope_parameters.rope_theta; older configs a top-level rope_theta.
    theta = cfg.get("rope_theta", (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0))
    inv = 1.0 / (theta ** (torch.arange(0, dh, 2, dtype=torch.int64).float() / dh))
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
        # transformers' eager attention (this torch predates scaled_dot_product_attention)
        scores = torch.matmul(q, k.transpose(2, 3)) * dh ** -0.5 + mask
        a = torch.matmul(torch.softmax(scores, dim=-1), v)
        x = x + F.linear(a.transpose(1, 2).reshape(B, T, H * dh), w[p + "self_attn.o_proj.weight"])
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        g = F.linear(h, w[p + "mlp.gate_proj.weight"])
        u = F.linear(h, w[p + "mlp.up_proj.weight"])
        x = x + F.linear(F.silu(g) * u, w[p + "mlp.down_proj.weight"])
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return F.linear(x, head)


def forward_nll(cfg, w, ids):
    logp = torch.log_softmax(forward_logits(cfg, w, ids)[:, :-1], dim=-1)
    return -logp.gather(-1, ids[:, 1:, None].long()).mean().item()


def main():
    cfg, w = load_model(sys.argv[1])
    tensors = read_safetensors(sys.argv[2])
    # `input_ids` when the file names it (a reference_outputs file holds more), else its only tensor.
    ids = (tensors["input_ids"] if "input_ids" in tensors else next(iter(tensors.values()))).long()
    with torch.inference_mode():
        forward_nll(cfg, w, ids)  # warm-up
        runs, cpu = [], []
        for _ in range(3):
            t, c = time.perf_counter(), time.process_time()
            nll = forward_nll(cfg, w, ids)
            runs.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    seconds = min(runs)
    print(json.dumps({"meanNll": nll, "seconds": seconds, "cpuSeconds": min(cpu), "tokensPerSecond": ids.numel() / seconds,
                      "torch": torch.__version__, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
