#!/usr/bin/env python3
"""Scores of token-id rows under a Hugging Face sequence-classifier folder, as
`AutoModelForSequenceClassification.from_pretrained` computes them (eager attention, float32).

Used by dagrun's classifier-export test (stages/tests/ml/export_hf.rs): dagrun writes a
`*ForSequenceClassification` folder, this script loads it and scores the rows given as JSON on
the command line, all together in one right-padded batch (padded with the config's
`pad_token_id`, masked), then prints JSON on stdout:

    {"architecture": ..., "num_labels": ..., "pad_token_id": ..., "scores": [[...], ...],
     "chat_template": ... or null}

`chat_template` is what `AutoTokenizer.from_pretrained(MODEL_DIR)` reads.

Usage: python3 scripts/hf_seq_cls.py MODEL_DIR '[[ids...], [ids...]]'
"""
import json
import sys

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    folder, rows = sys.argv[1], json.loads(sys.argv[2])
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, attn_implementation="eager"
    ).eval().float()
    pad = model.config.pad_token_id
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
    tok = AutoTokenizer.from_pretrained(folder)
    print(json.dumps({
        "architecture": model.config.architectures[0],
        "num_labels": model.config.num_labels,
        "pad_token_id": pad,
        "scores": logits.tolist(),
        "chat_template": getattr(tok, "chat_template", None),
    }))


if __name__ == "__main__":
    main()
