#!/usr/bin/env python3
"""PyTorch eager baseline for stages/examples/bench_gpt2.rs: the same work with Hugging Face
transformers' GPT2LMHeadModel (random init, eager attention, float32, CPU unless --device).

Prints one JSON object per measurement (forward+backward tokens/s of a batch x seq training
step; greedy generation tokens/s with the KV cache), like the Rust benchmark.

Usage: python3 scripts/bench_gpt2_torch.py [--model small|tiny] [--batch 8] [--seq 128]
           [--iters 3] [--gen-batch 8] [--gen-prompt 16] [--gen-tokens 32] [--device cpu]
"""
import argparse
import json
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="small")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--gen-batch", type=int, default=8)
    p.add_argument("--gen-prompt", type=int, default=16)
    p.add_argument("--gen-tokens", type=int, default=32)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()

    if a.model == "small":
        config = GPT2Config()
    else:
        config = GPT2Config(vocab_size=1000, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    config.resid_pdrop = config.embd_pdrop = config.attn_pdrop = 0.0
    torch.manual_seed(0)
    model = GPT2LMHeadModel._from_config(config, attn_implementation="eager").to(a.device)
    model.train()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (a.batch, a.seq), generator=g).to(a.device)

    def step():
        model.zero_grad(set_to_none=True)
        loss = model(ids, labels=ids).loss
        loss.backward()
        float(model.transformer.wte.weight.grad.sum())

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(a.iters):
        step()
    secs = time.perf_counter() - t0
    print(json.dumps({
        "impl": "pytorch-eager", "device": a.device, "model": a.model, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "what": "forward+backward", "batch": a.batch,
        "seq": a.seq, "iters": a.iters, "seconds": secs,
        "tokens_per_s": a.batch * a.seq * a.iters / secs,
    }))

    model.eval()
    prompts = torch.randint(0, config.vocab_size, (a.gen_batch, a.gen_prompt), generator=g).to(a.device)
    mask = torch.ones_like(prompts)
    kw = dict(do_sample=False, eos_token_id=None, pad_token_id=0, use_cache=True)
    with torch.no_grad():
        model.generate(prompts[:1], attention_mask=mask[:1], max_new_tokens=2, min_new_tokens=2, **kw)
        t0 = time.perf_counter()
        out = model.generate(prompts, attention_mask=mask, max_new_tokens=a.gen_tokens,
                             min_new_tokens=a.gen_tokens, **kw)
        secs = time.perf_counter() - t0
    new = (out.shape[1] - a.gen_prompt) * a.gen_batch
    print(json.dumps({
        "impl": "pytorch-eager", "device": a.device, "model": a.model, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "what": "generate", "batch": a.gen_batch,
        "prompt": a.gen_prompt, "new_tokens": a.gen_tokens, "seconds": secs,
        "tokens_per_s": new / secs,
    }))


if __name__ == "__main__":
    main()
