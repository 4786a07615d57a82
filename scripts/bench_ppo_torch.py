#!/usr/bin/env python3
"""PyTorch eager doing the work of `dagrun bench ppo-step` / `dagrun bench rm-score`
(stages/src/bench.rs), with only torch (no transformers): the reference for
docs/benchmarks.md's GPU section. Runs on the machine's own torch, cpu or cuda.

ppo-step: one PPO step of GPT-2 (random init) as dagrun's `ppo` kind does it (TRL 0.11
semantics): sample `--new-tokens` tokens per prompt with a KV cache (plain sampling at
temperature 1 over the whole vocabulary, EOS stops a row), score prompt+response with a
reward model (GPT-2 backbone + K linear heads, last real token; head 0 is the reward),
log-probs of policy and frozen reference, values from a linear value head, per-token rewards
-beta*KL (+ score at the last token), GAE (gamma 1, lambda 0.95), whitened advantages, then
`--ppo-epochs` passes over shuffled mini-batches of clipped policy + value losses with Adam
(lr 1.414e-5, betas 0.9/0.999, eps 1e-8, no weight decay), skipping a mini-batch whose mean
ratio exceeds 10. Prompts: the deterministic ids of stages/src/bench.rs (row i: length
min + i mod (max-min+1), token j: (7919 i + 104729 j + 13) mod (vocab-1)). Phases are timed
with a device synchronisation at each phase's end.

rm-score: `--iters` reward-model forward passes (no grad) of batch x len tokens, rewards
copied to the host each time.

Prints one JSON object (the same fields as dagrun's).

Usage: python3 scripts/bench_ppo_torch.py ppo-step [--device cpu|cuda] [--model small|tiny]
           [--batch 128] [--mini-batch 128] [--ppo-epochs 4] [--min-prompt 2] [--max-prompt 7]
           [--new-tokens 10] [--heads 10] [--warmup 1] [--steps 3] [--seed 0]
       python3 scripts/bench_ppo_torch.py rm-score [--device ..] [--model ..] [--heads 10]
           [--batch 128] [--len 64] [--warmup 2] [--iters 10] [--seed 0]
"""
import argparse
import json
import math
import statistics
import time

import torch
from torch import nn
import torch.nn.functional as F

CONFIGS = {
    "small": dict(vocab=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12),
    "tiny": dict(vocab=1000, n_positions=64, n_embd=32, n_layer=2, n_head=4),
}


class Block(nn.Module):
    def __init__(self, e, h):
        super().__init__()
        self.h = h
        self.ln_1 = nn.LayerNorm(e, eps=1e-5)
        self.c_attn = nn.Linear(e, 3 * e)
        self.attn_proj = nn.Linear(e, e)
        self.ln_2 = nn.LayerNorm(e, eps=1e-5)
        self.c_fc = nn.Linear(e, 4 * e)
        self.mlp_proj = nn.Linear(4 * e, e)

    def forward(self, x, bias, past):
        b, t, e = x.shape
        d = e // self.h
        q, k, v = self.c_attn(self.ln_1(x)).split(e, dim=2)
        q, k, v = (z.view(b, t, self.h, d).transpose(1, 2) for z in (q, k, v))
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        # Explicit matmul + additive mask, as dagrun's attention.
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d) + bias
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, t, e)
        x = x + self.attn_proj(y)
        x = x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))
        return x, (k, v)


class Gpt2(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.wte = nn.Embedding(c["vocab"], c["n_embd"])
        self.wpe = nn.Embedding(c["n_positions"], c["n_embd"])
        self.h = nn.ModuleList(Block(c["n_embd"], c["n_head"]) for _ in range(c["n_layer"]))
        self.ln_f = nn.LayerNorm(c["n_embd"], eps=1e-5)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def hidden(self, ids, mask, cache=None):
        """ids/mask [b, t] (mask: 1 real, 0 padding). With a cache (dict), ids are the new
        tokens and keys/values/mask of earlier calls are reused."""
        b, t = ids.shape
        if cache is not None and "mask" in cache:
            full_mask = torch.cat([cache["mask"], mask], dim=1)
        else:
            full_mask = mask
        past_len = full_mask.shape[1] - t
        pos = (full_mask.cumsum(1) - 1).clamp(min=0)[:, past_len:]
        x = self.wte(ids) + self.wpe(pos)
        tk = full_mask.shape[1]
        causal = torch.ones(t, tk, dtype=torch.bool, device=ids.device).tril(past_len)
        allowed = causal[None, None] & full_mask[:, None, None, :].bool()
        bias = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device)
        bias.masked_fill_(~allowed, torch.finfo(x.dtype).min)
        pasts = cache.get("kv") if cache is not None else None
        new = []
        for i, block in enumerate(self.h):
            x, kv = block(x, bias, pasts[i] if pasts is not None else None)
            new.append(kv)
        if cache is not None:
            cache["kv"] = new
            cache["mask"] = full_mask
        return self.ln_f(x)

    def logits(self, hidden):
        return hidden @ self.wte.weight.t()


class PolicyValue(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.lm = Gpt2(c)
        self.v_head = nn.Linear(c["n_embd"], 1)
        nn.init.normal_(self.v_head.weight, std=0.02)
        nn.init.zeros_(self.v_head.bias)


class RewardModel(nn.Module):
    def __init__(self, c, k):
        super().__init__()
        self.backbone = Gpt2(c)
        self.heads = nn.Linear(c["n_embd"], k)

    def forward(self, ids, mask):
        h = self.backbone.hidden(ids, mask)
        last = mask.sum(1) - 1  # right padding
        return self.heads(h[torch.arange(ids.shape[0], device=ids.device), last])


def prompt_ids(first, n, lo, hi, vocab):
    return [[(7919 * i + 104729 * j + 13) % (vocab - 1) for j in range(lo + i % (hi - lo + 1))]
            for i in range(first, first + n)]


def pad_rows(rows, pad, left, device):
    t = max(len(r) for r in rows)
    ids = [[pad] * (t - len(r)) + r if left else r + [pad] * (t - len(r)) for r in rows]
    mask = [[0] * (t - len(r)) + [1] * len(r) if left else [1] * len(r) + [0] * (t - len(r))
            for r in rows]
    return (torch.tensor(ids, device=device), torch.tensor(mask, device=device))


def token_logprobs(logits, ids):
    """[b, t-1]: log p(ids[:, i+1] | ids[:, :i+1])."""
    return torch.log_softmax(logits[:, :-1], -1).gather(2, ids[:, 1:, None]).squeeze(2)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def lapper(parts, device):
    """With `parts` (--profile): lap(name, since) waits for the device, adds the seconds since
    `since` to parts[name] and returns now; without, it returns `since` and waits for nothing."""
    def lap(name, since):
        if parts is None:
            return since
        sync(device)
        now = time.perf_counter()
        parts[name] += now - since
        return now
    return lap


@torch.no_grad()
def generate(lm, prompts, new_tokens, eos, device, gen, parts=None):
    """Sampling as transformers' generate does it (on the device). With `parts` (--profile),
    waits for the device after the model and after the sampling, and adds the seconds to
    parts["generation_model"], ["generation_sampling"] and ["generation_to_host"] (the
    per-step stop check and the final copy of the ids), dagrun's split of the phase."""
    ids, mask = pad_rows(prompts, eos, True, device)
    b = ids.shape[0]
    cache = {}
    done = torch.zeros(b, dtype=torch.bool, device=device)
    out = []

    lap = lapper(parts, device)
    t = time.perf_counter()
    for _ in range(new_tokens):
        logits = lm.logits(lm.hidden(ids, mask, cache)[:, -1])
        t = lap("generation_model", t)
        nxt = torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=gen).squeeze(1)
        nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
        out.append(torch.where(done, torch.full_like(nxt, -1), nxt))
        mask = (~done).long()[:, None]
        done = done | (nxt == eos)
        ids = nxt[:, None]
        t = lap("generation_sampling", t)
        if bool(done.all()):
            break
        t = lap("generation_to_host", t)
    gen_ids = torch.stack(out, 1).tolist()  # host: the sequences, as dagrun returns them
    lap("generation_to_host", t)
    responses = [[x for x in row if x >= 0] for row in gen_ids]
    return [p + r for p, r in zip(prompts, responses)], responses


def ppo_step(a, pv, ref, rm, opt, prompts, eos, device, gen):
    times = {}
    gen_parts = dict.fromkeys(("generation_model", "generation_to_host", "generation_sampling"), 0.0)
    t0 = time.perf_counter()
    seqs, responses = generate(pv.lm, prompts, a.new_tokens, eos, device, gen,
                               gen_parts if a.profile else None)
    sync(device)
    times["generation"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    with torch.no_grad():
        rm_rows = [s[-128:] for s in seqs]
        ids, mask = pad_rows(rm_rows, eos, False, device)
        scores = rm(ids, mask)[:, 0].float()  # aggregation `member`, member 0
        scores_host = scores.tolist()
    times["scoring"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    b = len(seqs)
    with torch.no_grad():
        ids, mask = pad_rows(seqs, eos, False, device)
        h = pv.lm.hidden(ids, mask)
        logits = pv.lm.logits(h)
        values = pv.v_head(h).squeeze(2)[:, :-1]
        lsm = torch.log_softmax(logits[:, :-1], -1)
        ent = -(lsm.exp() * lsm).sum(-1)
        logp = lsm.gather(2, ids[:, 1:, None]).squeeze(2)
        ref_logp = token_logprobs(ref.logits(ref.hidden(ids, mask)), ids)
        w = ids.shape[1] - 1
        pl = torch.tensor([len(s) - len(r) for s, r in zip(seqs, responses)], device=device)
        nl = torch.tensor([len(r) for r in responses], device=device)
        col = torch.arange(w, device=device)[None]
        resp = ((col >= pl[:, None] - 1) & (col < (pl + nl)[:, None] - 1)).float()
        kl = (logp - ref_logp) * resp
        rewards = -a.beta * kl
        last = (pl + nl - 2).clamp(min=0)
        rewards[torch.arange(b, device=device), last] += scores
        adv = torch.zeros_like(rewards)
        lastgae = torch.zeros(b, device=device)
        for c in reversed(range(w)):
            nextv = values[:, c + 1] * resp[:, c + 1] if c + 1 < w else torch.zeros(b, device=device)
            delta = rewards[:, c] + a.gamma * nextv - values[:, c]
            lastgae = (delta + a.gamma * a.lam * lastgae) * resp[:, c]
            adv[:, c] = lastgae
        returns = adv + values
        n = resp.sum()
        mean = (adv * resp).sum() / n
        var = (((adv - mean) * resp) ** 2).sum() / (n - 1)
        adv = (adv - mean) * torch.rsqrt(var + 1e-8) * resp
        stats = {"kl": float(kl.sum() / b), "entropy": float((ent * resp).sum() / n)}
    times["forward"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    skipped, ratios = 0, []
    parts = {"update_forward": 0.0, "update_backward": 0.0, "update_optimizer": 0.0}

    part = lapper(parts if a.profile else None, device)

    for _ in range(a.ppo_epochs):
        rows = torch.randperm(b, generator=gen, device=device if gen.device.type == "cuda" else "cpu").tolist()
        for s in range(0, b, a.mini_batch):
            mb = rows[s:s + a.mini_batch]
            t_part = time.perf_counter()
            mb_ids, mb_mask = pad_rows([seqs[r] for r in mb], eos, False, device)
            wm = mb_ids.shape[1] - 1
            sel = torch.tensor(mb, device=device)
            m = resp[sel, :wm]
            old_lp, old_v = logp[sel, :wm], values[sel, :wm]
            mb_adv, mb_ret = adv[sel, :wm], returns[sel, :wm]
            h = pv.lm.hidden(mb_ids, mb_mask)
            new_lp = token_logprobs(pv.lm.logits(h), mb_ids)
            v = pv.v_head(h).squeeze(2)[:, :-1]
            nm = m.sum().clamp(min=1)
            ratio = (new_lp - old_lp).exp()
            pg = (torch.max(-mb_adv * ratio, -mb_adv * ratio.clamp(1 - a.cliprange, 1 + a.cliprange)) * m).sum() / nm
            vclip = old_v + (v - old_v).clamp(-a.cliprange, a.cliprange)
            vf = 0.5 * (torch.max((v - mb_ret) ** 2, (vclip - mb_ret) ** 2) * m).sum() / nm
            ratio_mean = float((ratio.detach() * m).sum() / nm)
            float(pg.detach()), float(vf.detach())  # dagrun reads both losses back too
            if ratio_mean > 10.0:
                skipped += 1
                continue
            t_part = part("update_forward", t_part)
            opt.zero_grad(set_to_none=True)
            (pg + a.vf_coef * vf).backward()
            t_part = part("update_backward", t_part)
            opt.step()
            part("update_optimizer", t_part)
            ratios.append(ratio_mean)
    sync(device)
    times["update"] = time.perf_counter() - t0
    times["total"] = sum(times.values())
    times.update(parts)
    times.update(gen_parts)
    stats.update(score=sum(scores_host) / b, response_length=sum(map(len, responses)) / b,
                 mean_ratio=sum(ratios) / max(len(ratios), 1), skipped=skipped)
    return times, stats


def device_info(device):
    info = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="what", required=True)
    for name in ("ppo-step", "rm-score"):
        s = sub.add_parser(name)
        s.add_argument("--device", default="cpu")
        s.add_argument("--model", default="small", choices=sorted(CONFIGS))
        s.add_argument("--heads", type=int, default=10)
        s.add_argument("--batch", type=int, default=128)
        s.add_argument("--seed", type=int, default=0)
        if name == "ppo-step":
            s.add_argument("--mini-batch", type=int, default=128)
            s.add_argument("--ppo-epochs", type=int, default=4)
            s.add_argument("--min-prompt", type=int, default=2)
            s.add_argument("--max-prompt", type=int, default=7)
            s.add_argument("--new-tokens", type=int, default=10)
            s.add_argument("--warmup", type=int, default=1)
            s.add_argument("--steps", type=int, default=3)
            s.add_argument("--profile", action="store_true",
                           help="also time the update's parts (loss forward, backward, Adam)")
        else:
            s.add_argument("--len", type=int, default=64)
            s.add_argument("--warmup", type=int, default=2)
            s.add_argument("--iters", type=int, default=10)
    a = p.parse_args()
    a.beta, a.gamma, a.lam, a.cliprange, a.vf_coef, a.lr = 0.2, 1.0, 0.95, 0.2, 0.1, 1.414e-5
    device = torch.device(a.device)
    c = CONFIGS[a.model]
    eos = c["vocab"] - 1
    torch.manual_seed(a.seed)
    rm = RewardModel(c, a.heads).to(device).eval()
    for q in rm.parameters():
        q.requires_grad_(False)
    n_params = sum(q.numel() for q in rm.backbone.parameters())  # LM head tied to wte
    base = {"impl": "pytorch-eager", "what": a.what, "device": device_info(device),
            "bench": {k: v for k, v in vars(a).items() if k not in ("what", "device")},
            "params": n_params}

    if a.what == "rm-score":
        rows = [[(7919 * i + 104729 * j + 13) % (c["vocab"] - 1) for j in range(a.len)]
                for i in range(a.batch)]
        ids, mask = pad_rows(rows, 0, False, device)
        checksum = 0.0
        with torch.inference_mode():
            for _ in range(a.warmup):
                checksum += rm(ids, mask).cpu()[0, 0].item()
            t0 = time.perf_counter()
            for _ in range(a.iters):
                checksum += rm(ids, mask).cpu()[0, 0].item()
            secs = time.perf_counter() - t0
        n = a.batch * a.iters
        print(json.dumps({**base, "seconds": secs, "sequences_per_s": n / secs,
                          "tokens_per_s": n * a.len / secs, "checksum": checksum}))
        return

    t_setup = time.perf_counter()
    pv = PolicyValue(c).to(device)
    ref = Gpt2(c).to(device).eval()
    ref.load_state_dict(pv.lm.state_dict())
    for q in ref.parameters():
        q.requires_grad_(False)
    opt = torch.optim.Adam(pv.parameters(), lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    gen = torch.Generator(device=device).manual_seed(a.seed)
    sync(device)
    setup = time.perf_counter() - t_setup
    warm, timed, stats = [], [], []
    for step in range(a.warmup + a.steps):
        prompts = prompt_ids(step * a.batch, a.batch, a.min_prompt, a.max_prompt, c["vocab"])
        times, st = ppo_step(a, pv, ref, rm, opt, prompts, eos, device, gen)
        (warm if step < a.warmup else timed).append(times)
        stats.append({"step": step + 1, **st})
    med = {k: statistics.median(t[k] for t in timed) for k in timed[0]} if timed else {}
    print(json.dumps({**base, "setup_s": setup, "warmup_steps": warm, "steps": timed,
                      "median": med, "stats": stats}))


if __name__ == "__main__":
    main()
