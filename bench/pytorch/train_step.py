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
from llama_forward import forward_logits, load_model, read_safetensors  # noqa: E402


def forward_loss(cfg, w, ids):
    logits = forward_logits(cfg, w, ids)
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
