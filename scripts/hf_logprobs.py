#!/usr/bin/env python3
"""Per-token log-probs of texts under a Hugging Face causal-LM folder (GPT-2, Gemma, Llama: any
architecture AutoModelForCausalLM loads), as transformers computes them (eager attention).

Used by dagrun's export test (stages/tests/ml_export_hf.rs): dagrun writes a model folder, this
script loads it with `AutoModelForCausalLM.from_pretrained` and the tokenizer with `tokenizers`, and
prints JSON on stdout:

    {"texts": [{"text": ..., "ids": [...], "token_logprobs": [...], "auto_ids": [...]}, ...],
     "eos_token": ..., "generation_eos_token_id": ...}

`auto_ids` and `eos_token` come from `AutoTokenizer.from_pretrained(MODEL_DIR)` (present when the
folder has a `tokenizer_config.json`), `generation_eos_token_id` from
`GenerationConfig.from_pretrained(MODEL_DIR)` (when it has a `generation_config.json`).

Usage: python3 scripts/hf_logprobs.py MODEL_DIR TEXT [TEXT ...]
"""
import json
import os
import sys

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    folder, texts = sys.argv[1], sys.argv[2:]
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval().float()
    tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    auto = None
    if os.path.isfile(os.path.join(folder, "tokenizer_config.json")):
        auto = AutoTokenizer.from_pretrained(folder)
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
        if auto is not None:
            out[-1]["auto_ids"] = auto(text, add_special_tokens=False).input_ids
    result = {"texts": out}
    if auto is not None:
        result["eos_token"] = auto.eos_token
    if os.path.isfile(os.path.join(folder, "generation_config.json")):
        result["generation_eos_token_id"] = GenerationConfig.from_pretrained(folder).eos_token_id
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
