#!/usr/bin/env python3
"""Reference outputs of Hugging Face's chat templates for dagrun's `ml/io/chat.rs`.

Writes `tests/fixtures/chat/`:
  gemma/tokenizer.json, llama3/tokenizer.json, qwen2.5/tokenizer.json
                  tiny tokenizers with the models' special tokens
  <template>/     per template (gemma, gemma3, llama3, llama3.1, qwen2.5): a model folder's
                  text files as the hub has them: `config.json` (its model_type),
                  `tokenizer.json` (a copy of the family's) and `tokenizer_config.json` with
                  the `chat_template` and the special tokens' strings
  expected.json   per template: its source, and per conversation the rendered text
                  (`apply_chat_template(tokenize=False)`) without and with
                  `add_generation_prompt=True`, the ids (`tokenize=True`), plus the ids that
                  tokenising the text again *with* special tokens gives (the double-BOS mistake
                  to avoid); or the error the template raises

No weights or downloads: the tokenizers are byte-level BPEs trained here on a few sentences,
with the special tokens of Gemma, Llama-3 and Qwen2.5 added. The templates are the models'
published ones, the `chat_template` strings of the `tokenizer_config.json` of
google/gemma-2b-it, google/gemma-3-*-it (string contents only), meta-llama/Meta-Llama-3-8B-Instruct,
meta-llama/Llama-3.1-8B-Instruct and Qwen/Qwen2.5-*-Instruct, transcribed below as literal
strings (this machine cannot reach the hub). dagrun carries the same texts as its named
templates (`ml/io/chat.rs`), and its tests check they are byte-equal to these.

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

# Qwen/Qwen2.5-*-Instruct (0.5B to 72B share it; whitespace as published).
QWEN25 = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
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
    # What a policy is prompted with: the conversation so far, then the generation prompt.
    "prompt_only": [
        {"role": "user", "content": "Write a poem about the sea."},
    ],
    "system_prompt_only": [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "café 東京?"},
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
    if bos is None:
        return tok
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
    # Qwen2.5's tokenizer has no BOS (bos_token null): its post-processor adds nothing, so
    # tokenising the text again with special tokens gives the same ids.
    qwen = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    # tokenizer folder: (special tokens, bos (added by the post-processor), eos, model_type)
    families = {
        "gemma": (["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"], "<bos>", "<eos>", "gemma"),
        "llama3": (llama, "<|begin_of_text|>", "<|eot_id|>", "llama"),
        "qwen2.5": (qwen, None, "<|im_end|>", "qwen2"),
    }
    # template name: (tokenizer folder, chat template). `gemma` is google/gemma-2b-it's own
    # (a system message raises); `gemma3` is dagrun's named `gemma` template.
    setups = {
        "gemma": ("gemma", GEMMA),
        "gemma3": ("gemma", GEMMA3),
        "llama3": ("llama3", LLAMA3),
        "llama3.1": ("llama3", LLAMA31),
        "qwen2.5": ("qwen2.5", QWEN25),
    }
    tokenizers = {}
    for folder_name, (specials, bos, _eos, _mt) in families.items():
        tok = tiny_tokenizer(specials, bos)
        tokenizers[folder_name] = tok
        folder = os.path.join(OUT, folder_name)
        os.makedirs(folder, exist_ok=True)
        tok.save(os.path.join(folder, "tokenizer.json"))
    for name, (folder_name, template) in setups.items():
        specials, bos, eos, model_type = families[folder_name]
        tok = tokenizers[folder_name]
        hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos)
        # The model folder as the hub has it (text files only).
        folder = os.path.join(OUT, name)
        os.makedirs(folder, exist_ok=True)
        if folder != os.path.join(OUT, folder_name):
            tok.save(os.path.join(folder, "tokenizer.json"))
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump({"model_type": model_type}, f, indent=1)
            f.write("\n")
        config = {"bos_token": bos, "eos_token": eos, "chat_template": template}
        if name == "gemma":
            # Gemma's hub config writes special tokens as AddedToken dicts; both forms occur.
            config["bos_token"] = {"content": bos, "lstrip": False, "normalized": False,
                                   "rstrip": False, "single_word": False, "__type": "AddedToken"}
        with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
            json.dump(config, f, indent=1, ensure_ascii=False)
            f.write("\n")
        cases = {}
        for cname, conv in CONVERSATIONS.items():
            try:
                text = hf.apply_chat_template(conv, tokenize=False, chat_template=template)
            except Exception as e:  # jinja's TemplateError from raise_exception
                cases[cname] = {"messages": conv, "error": str(e)}
                continue
            gen = hf.apply_chat_template(conv, tokenize=False, chat_template=template, add_generation_prompt=True)
            ids = ids_of(hf.apply_chat_template(conv, tokenize=True, chat_template=template))
            assert ids == hf(text, add_special_tokens=False)["input_ids"], cname
            with_specials = hf(text, add_special_tokens=True)["input_ids"]
            if bos is not None:
                assert with_specials[:2] == [tok.token_to_id(bos)] * 2, "the post-processor adds a BOS"
                assert ids.count(tok.token_to_id(bos)) == 1, cname
            cases[cname] = {
                "messages": conv,
                "text": text,
                "text_with_generation_prompt": gen,
                "ids": ids,
                "ids_with_special_tokens": with_specials,
            }
        if name == "gemma":
            assert "System role not supported" in cases["system"]["error"]
        expected[name] = {
            "template": template,
            "bos_token": bos,
            "eos_token": eos,
            "tokenizer": folder_name,
            "folder": name,
            "cases": cases,
        }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
