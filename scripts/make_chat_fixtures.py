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
meta-llama/Meta-Llama-3-8B-Instruct and meta-llama/Llama-3.1-8B-Instruct), copied below.
Llama-3.1 shares the Llama-3 tokenizer folder.

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

# meta-llama/Llama-3.1-8B-Instruct (whitespace as published; the tool-calling branches are
# not exercised: dagrun renders conversations of system/user/assistant messages).
LLAMA31 = """{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\n\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

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
    llama = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    # template name: (tokenizer folder, special tokens, bos, eos, chat template)
    setups = {
        "gemma": ("gemma", ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"], "<bos>", "<eos>", GEMMA),
        "llama3": ("llama3", llama, "<|begin_of_text|>", "<|eot_id|>", LLAMA3),
        "llama3.1": ("llama3", llama, "<|begin_of_text|>", "<|eot_id|>", LLAMA31),
    }
    tokenizers = {}
    for name, (folder_name, specials, bos, eos, template) in setups.items():
        if folder_name not in tokenizers:
            tokenizers[folder_name] = tiny_tokenizer(specials, bos)
            folder = os.path.join(OUT, folder_name)
            os.makedirs(folder, exist_ok=True)
            tokenizers[folder_name].save(os.path.join(folder, "tokenizer.json"))
        tok = tokenizers[folder_name]
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
        expected[name] = {"bos_token": bos, "tokenizer": folder_name, "cases": cases}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
