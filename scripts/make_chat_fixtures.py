#!/usr/bin/env python3
"""Reference outputs of Hugging Face's chat templates for dagrun's `ml/chat.rs`.

Writes `tests/fixtures/chat/`:
  gemma/tokenizer.json, llama3/tokenizer.json   tiny tokenizers with the models' special tokens
  expected.json   per template and conversation: the rendered text
                  (`apply_chat_template(tokenize=False)`) and the ids
                  (`apply_chat_template(tokenize=True)`), plus the ids that tokenising the text
                  again *with* special tokens gives (the double-BOS mistake to avoid)

No weights or downloads: the tokenizers are byte-level BPEs trained here on a few sentences,
with the special tokens of Gemma and Llama-3 added. The templates are the models' published
ones (the `chat_template` of google/gemma-2b-it, google/gemma-3-*-it for a system message,
and meta-llama/Meta-Llama-3-8B-Instruct), copied below.

    /opt/dagrun/torch-venv/bin/python scripts/make_chat_fixtures.py
"""

import json
import os

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "chat")

# google/gemma-2b-it (Gemma 1 and 2 use the same template): a system message raises.
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)

# Gemma 3's template (string contents only): a system message becomes a prefix of the first
# user turn, followed by a blank line. dagrun's `gemma` template does this for all Gemmas.
GEMMA3 = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = \"\" -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}"
    "{%- endif -%}"
    "{%- if (message['role'] == 'assistant') -%}{%- set role = \"model\" -%}{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{'<start_of_turn>model\n'}}{%- endif -%}"
)

# meta-llama/Meta-Llama-3-8B-Instruct.
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

CORPUS = [
    "the movie was great and the actors were wonderful",
    "a dull film with a boring plot",
    "What is the capital of France? Paris is the capital.",
    "Write a poem about the sea.\nThe sea is wide and blue.",
    "You are a helpful assistant. Answer briefly.",
] * 4

CONVERSATIONS = {
    "single_turn": [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris is the capital."},
    ],
    "untrimmed": [
        {"role": "user", "content": "  the movie was \n"},
        {"role": "assistant", "content": "\ngreat and wonderful  "},
    ],
    "multi_turn": [
        {"role": "user", "content": "Write a poem about the sea."},
        {"role": "assistant", "content": "The sea is wide and blue."},
        {"role": "user", "content": "a dull film"},
        {"role": "assistant", "content": "with a boring plot"},
    ],
    "system": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ],
}


def tiny_tokenizer(specials, bos):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    # Like Gemma's and Llama-3's own tokenizers: encoding with special tokens adds the BOS.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    return tok


def ids_of(result):
    # transformers 5 returns a BatchEncoding by default; 4.x a list.
    if hasattr(result, "keys"):
        return list(result["input_ids"])
    return list(result)


def main():
    expected = {}
    setups = {
        "gemma": (["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"], "<bos>", "<eos>", GEMMA),
        "llama3": (
            ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
            "<|begin_of_text|>",
            "<|eot_id|>",
            LLAMA3,
        ),
    }
    for name, (specials, bos, eos, template) in setups.items():
        tok = tiny_tokenizer(specials, bos)
        folder = os.path.join(OUT, name)
        os.makedirs(folder, exist_ok=True)
        tok.save(os.path.join(folder, "tokenizer.json"))
        hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos)
        cases = {}
        for cname, conv in CONVERSATIONS.items():
            tmpl = template
            if name == "gemma" and conv[0]["role"] == "system":
                tmpl = GEMMA3
                try:
                    hf.apply_chat_template(conv, tokenize=False, chat_template=GEMMA)
                    raise SystemExit("the Gemma 1/2 template accepted a system message")
                except Exception as e:  # jinja's TemplateError
                    if "System role not supported" not in str(e):
                        raise
            text = hf.apply_chat_template(conv, tokenize=False, chat_template=tmpl)
            ids = ids_of(hf.apply_chat_template(conv, tokenize=True, chat_template=tmpl))
            assert ids == hf(text, add_special_tokens=False)["input_ids"], cname
            with_specials = hf(text, add_special_tokens=True)["input_ids"]
            assert with_specials[:2] == [tok.token_to_id(bos)] * 2, "the post-processor adds a BOS"
            assert ids.count(tok.token_to_id(bos)) == 1, cname
            cases[cname] = {
                "messages": conv,
                "text": text,
                "ids": ids,
                "ids_with_special_tokens": with_specials,
            }
        expected[name] = {"bos_token": bos, "cases": cases}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
