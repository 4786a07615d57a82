#!/usr/bin/env python3
"""What a reward model reads, as transformers tokenises it, for dagrun's reward reader
(`stages/src/ml/reward.rs`, tested in `stages/tests/ml/reward.rs`).

Writes `tests/fixtures/reward-reader.json`: a list of cases, each a tokenizer folder (under
`tests/fixtures`), a chat template, a prompt, a response, `max_len`, and the text and token ids
the reward model must read:

  plain      the text is dagrun's `plain` join (one space between prompt and response unless
             either side has whitespace at the join); ids are `tokenizer(text)` with the special
             tokens its post-processor adds (a BOS for Gemma's and Llama's tokenizers, nothing
             for GPT-2's), truncated on the left to `max_len` as transformers does with
             `truncation_side="left"` (the BOS stays: truncation comes before special tokens)
  gemma, llama3, llama3.1
             the text is `apply_chat_template(messages, tokenize=False)` with the models'
             published templates; ids are `apply_chat_template(tokenize=True)`; truncated, the
             BOS (which the template writes) and then the last `max_len - 1` tokens: the text
             after its BOS tokenised by `tokenizer(..., truncation=True, max_length=max_len)`
             with left truncation, whose post-processor adds the same BOS back

Uses the tiny tokenizers of `tests/fixtures/chat/` and `tests/fixtures/gpt2-tiny/` (run
`scripts/make_chat_fixtures.py` first if they are missing). No downloads.

    /opt/dagrun/torch-venv/bin/python scripts/make_reward_reader_fixtures.py
"""

import json
import os
import sys

from transformers import PreTrainedTokenizerFast

sys.path.insert(0, os.path.dirname(__file__))
from make_chat_fixtures import GEMMA, LLAMA3, LLAMA31  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
OUT = os.path.join(FIXTURES, "reward-reader.json")

TEMPLATES = {"gemma": GEMMA, "llama3": LLAMA3, "llama3.1": LLAMA31}
# template name → (tokenizer folder, bos, eos)
CHAT_TOKENIZERS = {
    "gemma": ("chat/gemma", "<bos>", "<eos>"),
    "llama3": ("chat/llama3", "<|begin_of_text|>", "<|eot_id|>"),
    "llama3.1": ("chat/llama3", "<|begin_of_text|>", "<|eot_id|>"),
}
PAIRS = [
    ("the movie", "was great"),
    ("What did you think of the film?", "  A slow start, then a fine ending. "),
    ("a long prompt that goes on and on about the plot and the actors", "it was fine"),
]


def plain_join(prompt, response):
    if not prompt or not response or prompt[-1].isspace() or response[0].isspace():
        return prompt + response
    return prompt + " " + response


def tokenizer(folder, bos=None, eos=None):
    path = os.path.join(FIXTURES, folder, "tokenizer.json")
    kwargs = {}
    if bos:
        kwargs["bos_token"] = bos
    if eos:
        kwargs["eos_token"] = eos
    hf = PreTrainedTokenizerFast(tokenizer_file=path, **kwargs)
    hf.truncation_side = "left"
    return hf


def ids_of(result):
    # transformers 5 returns a BatchEncoding by default; 4.x a list.
    if hasattr(result, "keys"):
        return list(result["input_ids"])
    return list(result)


def main():
    cases = []
    # plain, on a tokenizer without a BOS (GPT-2) and on two that add one.
    for folder in ["gpt2-tiny", "chat/gemma", "chat/llama3"]:
        hf = tokenizer(folder)
        for prompt, response in PAIRS:
            text = plain_join(prompt, response)
            full = hf(text)["input_ids"]
            for max_len in [len(full) + 5, 6]:
                ids = hf(text, truncation=True, max_length=max_len)["input_ids"]
                cases.append({
                    "tokenizer": folder, "template": "plain", "prompt": prompt,
                    "response": response, "max_len": max_len, "text": text, "ids": ids,
                    "truncated": len(full) > max_len,
                })
    for name, template in TEMPLATES.items():
        folder, bos, eos = CHAT_TOKENIZERS[name]
        hf = tokenizer(folder, bos, eos)
        for prompt, response in PAIRS:
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
            text = hf.apply_chat_template(messages, tokenize=False, chat_template=template)
            full = ids_of(hf.apply_chat_template(messages, tokenize=True, chat_template=template))
            assert text.startswith(bos) and full[0] == hf.convert_tokens_to_ids(bos), name
            rest = text[len(bos):]
            assert hf(rest)["input_ids"] == full, "the post-processor adds the template's BOS"
            for max_len in [len(full) + 5, 8]:
                ids = hf(rest, truncation=True, max_length=max_len)["input_ids"]
                cases.append({
                    "tokenizer": folder, "template": name, "prompt": prompt,
                    "response": response, "max_len": max_len, "text": text, "ids": ids,
                    "truncated": len(full) > max_len,
                })
    with open(OUT, "w") as f:
        json.dump(cases, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
