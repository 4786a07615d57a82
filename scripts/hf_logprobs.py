#!/usr/bin/env python3
"""Per-token log-probs of texts under a Hugging Face causal-LM folder (GPT-2, Gemma, Llama: any
architecture AutoModelForCausalLM loads), as transformers computes them (eager attention).

Used by dagrun's export test (stages/tests/ml_export_hf.rs): dagrun writes a model folder, this
script loads it with `AutoModelForCausalLM.from_pretrained` and the tokenizer with `tokenizers`, and
prints JSON on stdout:

    {"texts": [{"text": ..., "ids": [...], "token_logprobs": [...]}, ...]}

Usage: python3 scripts/hf_logprobs.py MODEL_DIR TEXT [TEXT ...]
"""
import json
import os
import sys

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    folder, texts = sys.argv[1], sys.argv[2:]
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval().float()
    tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    out = []
    for text in texts:
        ids = tok.encode(text).ids
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)
        out.append({
            "text": text,
            "ids": ids,
            "token_logprobs": [float(logp[t - 1, ids[t]]) for t in range(1, len(ids))],
        })
    json.dump({"texts": out}, sys.stdout)


if __name__ == "__main__":
    main()
