"""Hugging Face reference fixtures of dagrun's Gemma/Llama/Qwen2 decoder (stages/src/ml/decoder.rs).

Called by scripts/make_hf_fixtures.py (`--only decoders`); writes, next to the GPT-2 fixture:

    tests/fixtures/gemma-tiny/         GemmaForCausalLM (MQA, head_dim from config, tied head)
    tests/fixtures/llama-tiny/         LlamaForCausalLM (GQA 4/2, llama3 rope scaling, untied head)
    tests/fixtures/llama-rm-tiny/      LlamaForSequenceClassification (num_labels 1, pad 0)
    tests/fixtures/gemma-rm-tiny/      GemmaForSequenceClassification (num_labels 2, pad 0)
    tests/fixtures/qwen2-tiny/         Qwen2ForCausalLM (GQA 4/2, biases on q/k/v only, rope theta
                                       1e6, tied head, sliding window configured but off, as in the
                                       released Qwen2.5 configs)
    tests/fixtures/qwen2-rm-tiny/      Qwen2ForSequenceClassification (num_labels 1, pad 0)
    tests/fixtures/<name>-bf16/        gemma-tiny, llama-tiny, llama-rm-tiny, qwen2-tiny in bfloat16
    tests/fixtures/decoders-reference.json

Every folder is saved SHARDED (a small max_shard_size, so `model.safetensors.index.json` and
several `model-0000X-of-0000N.safetensors` exist) with the GPT-2 fixture's tiny tokenizer.json.
Reference outputs use eager attention. Causal LMs: per-token log-probs (log softmax of float32
logits, as for GPT-2) and greedy continuations. Sequence classifiers: scores of prompt+response
ids, one row at a time and as one right-padded batch (pad id 0 with an attention mask), one case
ending in a real EOS token (id 0 = pad id: transformers pools at the rightmost id != pad).
bfloat16: the same models cast to bfloat16 and saved; the saved folder loaded with
dtype=bfloat16 and computed in bfloat16 ("bf16"), and loaded with dtype=float32 (weights
upcast) and computed in float32 ("bf16_upcast").
"""
import json
import os
import shutil

import torch
from transformers import (
    GemmaConfig,
    GemmaForCausalLM,
    GemmaForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2ForSequenceClassification,
)

# Small enough that the tiny weights split into several shards.
MAX_SHARD_SIZE = "40KB"

REWARD_CASES = [
    ("This movie was", " wonderful, the acting was great."),
    ("Reward models score", " a response."),
    ("The quick brown fox", " jumps."),
    ("café 東京", " 42!"),
]


def gemma_config(**extra) -> GemmaConfig:
    return GemmaConfig(
        vocab_size=320,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=12,
        max_position_embeddings=128,
        rms_norm_eps=1e-6,
        hidden_act="gelu_pytorch_tanh",
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        **extra,
    )


def llama_config(**extra) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=320,
        hidden_size=32,
        intermediate_size=80,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        rms_norm_eps=1e-5,
        hidden_act="silu",
        rope_theta=500000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 256,
        },
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        **extra,
    )


def qwen2_config(**extra) -> Qwen2Config:
    # Qwen2.5's switches at a tiny size: rope theta 1e6, untied only in the 7B+ models (tied
    # here, like 0.5B-3B), `use_sliding_window: false` with a window and max_window_layers
    # still written (transformers then builds full attention on every layer).
    return Qwen2Config(
        vocab_size=320,
        hidden_size=32,
        intermediate_size=72,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
        hidden_act="silu",
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        use_sliding_window=False,
        sliding_window=16,
        max_window_layers=1,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        **extra,
    )


def perturbed(cls, config, seed: int, gemma: bool):
    torch.manual_seed(seed)
    model = cls._from_config(config, attn_implementation="eager").eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                # Gemma stores the gain as an offset from 1.
                p.copy_((0.0 if gemma else 1.0) + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))
    return model


def save(model, tokenizer_json: str, folder: str) -> None:
    if os.path.exists(folder):
        shutil.rmtree(folder)
    model.save_pretrained(folder, safe_serialization=True, max_shard_size=MAX_SHARD_SIZE)
    gen = os.path.join(folder, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    shutil.copy(tokenizer_json, os.path.join(folder, "tokenizer.json"))
    assert os.path.exists(os.path.join(folder, "model.safetensors.index.json")), folder


def causal_reference(model, tok, texts, prompts) -> dict:
    out = {"texts": [], "greedy": []}
    for text in texts:
        ids = tok.encode(text).ids
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)
        lp = [float(logp[t - 1, ids[t]]) for t in range(1, len(ids))]
        out["texts"].append({"text": text, "ids": ids, "token_logprobs": lp})
    for prompt in prompts:
        ids = tok.encode(prompt).ids
        with torch.no_grad():
            g = model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                do_sample=False,
                max_new_tokens=10,
                eos_token_id=None,
                pad_token_id=0,
                output_scores=True,
                return_dict_in_generate=True,
            )
        gaps = [float(s[0].float().topk(2).values[0] - s[0].float().topk(2).values[1]) for s in g.scores]
        out["greedy"].append(
            {"prompt": prompt, "prompt_ids": ids, "ids": g.sequences[0].tolist(), "min_top2_gap": min(gaps)}
        )
    return out


def reward_reference(model, tok) -> dict:
    cases = []
    for prompt, response in REWARD_CASES:
        ids = tok.encode(prompt).ids + tok.encode(response).ids
        cases.append({"prompt": prompt, "response": response, "ids": ids})
    # A real EOS (id 0, also the pad id) at the end: transformers pools at the token before it.
    cases.append({"prompt": None, "response": None, "ids": cases[0]["ids"] + [0]})
    for case in cases:
        with torch.no_grad():
            case["scores"] = model(torch.tensor([case["ids"]])).logits[0].float().tolist()
    width = max(len(c["ids"]) for c in cases)
    ids = torch.zeros(len(cases), width, dtype=torch.long)
    mask = torch.zeros(len(cases), width, dtype=torch.long)
    for r, c in enumerate(cases):
        ids[r, : len(c["ids"])] = torch.tensor(c["ids"])
        mask[r, : len(c["ids"])] = 1
    with torch.no_grad():
        batch = model(ids, attention_mask=mask).logits.float().tolist()
    return {"cases": cases, "right_padded_batch_scores": batch}


def reference_of(model, kind: str, tok, texts, prompts) -> dict:
    return causal_reference(model, tok, texts, prompts) if kind == "causal" else reward_reference(model, tok)


def write_decoders(out: str, tok, texts, prompts, seed: int) -> None:
    tokenizer_json = os.path.join(out, ".decoder-tokenizer.json")
    tok.save(tokenizer_json)
    specs = [
        ("gemma-tiny", GemmaForCausalLM, gemma_config(), True, "causal", True),
        ("llama-tiny", LlamaForCausalLM, llama_config(), False, "causal", True),
        ("llama-rm-tiny", LlamaForSequenceClassification, llama_config(num_labels=1), False, "reward", True),
        ("gemma-rm-tiny", GemmaForSequenceClassification, gemma_config(num_labels=2), True, "reward", False),
        ("qwen2-tiny", Qwen2ForCausalLM, qwen2_config(), False, "causal", True),
        ("qwen2-rm-tiny", Qwen2ForSequenceClassification, qwen2_config(num_labels=1), False, "reward", False),
    ]
    reference = {
        "generator": "scripts/make_decoder_fixtures.py",
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "seed": seed,
        "models": {},
    }
    for i, (name, cls, config, gemma, kind, with_bf16) in enumerate(specs):
        model = perturbed(cls, config, seed + i, gemma)
        save(model, tokenizer_json, os.path.join(out, name))
        entry = {"kind": kind, "f32": reference_of(model, kind, tok, texts, prompts)}
        if name in ("llama-tiny", "qwen2-tiny"):
            entry["inv_freq"] = model.model.rotary_emb.inv_freq.tolist()
        if name == "qwen2-tiny":
            # Every layer attends fully: the window is configured but not used.
            assert model.config.sliding_window is None, model.config.sliding_window
            assert model.config.layer_types == ["full_attention"] * 2, model.config.layer_types
            assert model.model.layers[0].self_attn.q_proj.bias is not None
            assert model.model.layers[0].self_attn.o_proj.bias is None
        if with_bf16:
            folder = os.path.join(out, name + "-bf16")
            save(perturbed(cls, config, seed + i, gemma).to(torch.bfloat16), tokenizer_json, folder)
            # Both references load the saved bf16 folder, as a user would (so non-persistent
            # buffers such as Gemma's embedding scale are rebuilt for the requested dtype).
            for key, dtype in (("bf16", torch.bfloat16), ("bf16_upcast", torch.float32)):
                loaded = cls.from_pretrained(folder, dtype=dtype, attn_implementation="eager").eval()
                entry[key] = reference_of(loaded, kind, tok, texts, prompts)
        reference["models"][name] = entry
        print(f"wrote {name}{' (+ bf16)' if with_bf16 else ''}")
    os.remove(tokenizer_json)
    with open(os.path.join(out, "decoders-reference.json"), "w") as f:
        json.dump(reference, f, indent=1)
        f.write("\n")
