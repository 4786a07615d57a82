#!/usr/bin/env python3
"""Write the Hugging Face reference fixtures of dagrun's GPT-2 parity tests.

Builds a tiny, seeded, random GPT-2 with Hugging Face transformers, trains a tiny byte-level BPE
tokenizer with the `tokenizers` package, saves both as a Hugging Face folder, and records what
transformers computes on it:

    tests/fixtures/gpt2-tiny/config.json          HF GPT2Config
    tests/fixtures/gpt2-tiny/model.safetensors    weights as `save_pretrained` writes them
    tests/fixtures/gpt2-tiny/tokenizer.json       byte-level BPE (vocab 320, <|endoftext|> = EOS)
    tests/fixtures/gpt2-tiny-reference.json       ids, per-token log-probs, greedy continuations

Per-token log-prob of token t (t >= 1) is log softmax(logits[t-1])[ids[t]], in float32.

With `--only decoders` (or by default, after GPT-2) it also writes the Gemma and Llama fixtures
of scripts/make_decoder_fixtures.py (tiny random GemmaForCausalLM, LlamaForCausalLM,
LlamaForSequenceClassification, GemmaForSequenceClassification; sharded; float32 and bfloat16;
tests/fixtures/decoders-reference.json).

Usage (needs torch, transformers, tokenizers; scripts/torch-venv.sh provides them):
    python3 scripts/make_hf_fixtures.py [--out tests/fixtures]

The result is deterministic for a given torch/transformers version (seeded CPU float32 init).
"""
import argparse
import json
import os

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel

SEED = 20261127
EOS = "<|endoftext|>"

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A declarative experiment graph runs each stage once and caches its output.",
    "Reward models score a response to a prompt; an ensemble of heads estimates uncertainty.",
    "This movie was wonderful, the acting was great and the story moved me.",
    "This film was terrible: boring, too long, and the ending made no sense.",
    "Policies trained with a variance-aware penalty stay closer to the reference.",
    "Tokens, logits, log-probabilities and gradients flow through the transformer.",
    "She said hello, he answered goodbye, and they both laughed at the weather.",
    "Numbers like 42, 3.14 and 2026 appear in text too.",
    "Unicode works as bytes: café, naïve, Zürich, 東京.",
] * 4

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "This movie was wonderful",
    "Reward models score a response.",
    "café 東京 42!",
    "Hello",
]

GREEDY_PROMPTS = ["The movie", "A declarative"]


def build_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return tok


def build_model(vocab_size: int, eos_id: int) -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=4,
        layer_norm_epsilon=1e-5,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
    )
    torch.manual_seed(SEED)
    model = GPT2LMHeadModel(config).eval()
    # Perturb every parameter (LayerNorm gains and biases too) so that a mix-up of any two
    # weights, a missing bias or a wrong layout changes the log-probs well beyond tolerance.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))
    return model


def token_logprobs(model: GPT2LMHeadModel, ids: list[int]) -> list[float]:
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return [float(logp[t - 1, ids[t]]) for t in range(1, len(ids))]


def write_gpt2(args) -> None:
    tok = build_tokenizer()
    eos_id = tok.token_to_id(EOS)
    model = build_model(tok.get_vocab_size(), eos_id)

    folder = os.path.join(args.out, "gpt2-tiny")
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save(os.path.join(folder, "tokenizer.json"))
    # save_pretrained also writes generation_config.json; it is harmless but not needed.

    texts = []
    for text in TEXTS:
        ids = tok.encode(text).ids
        texts.append({"text": text, "ids": ids, "token_logprobs": token_logprobs(model, ids)})

    greedy = []
    for prompt in GREEDY_PROMPTS:
        ids = tok.encode(prompt).ids
        with torch.no_grad():
            out = model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                do_sample=False,
                max_new_tokens=12,
                eos_token_id=None,
                pad_token_id=eos_id,
                output_scores=True,
                return_dict_in_generate=True,
            )
        # The smallest gap between the best and second-best logit along the greedy path: how
        # far float rounding is from changing the argmax.
        gaps = [float(s[0].topk(2).values[0] - s[0].topk(2).values[1]) for s in out.scores]
        greedy.append({"prompt": prompt, "prompt_ids": ids, "ids": out.sequences[0].tolist(), "min_top2_gap": min(gaps)})

    reference = {
        "generator": "scripts/make_hf_fixtures.py",
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "seed": SEED,
        "eos_id": eos_id,
        "texts": texts,
        "greedy": greedy,
    }
    with open(os.path.join(args.out, "gpt2-tiny-reference.json"), "w") as f:
        json.dump(reference, f, indent=1)
        f.write("\n")
    print(f"wrote {folder} and gpt2-tiny-reference.json (vocab {tok.get_vocab_size()}, eos {eos_id})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))
    parser.add_argument("--only", choices=["all", "gpt2", "decoders"], default="all",
                        help="write only the GPT-2 fixture or only the Gemma/Llama fixtures")
    args = parser.parse_args()
    if args.only in ("all", "gpt2"):
        write_gpt2(args)
    if args.only in ("all", "decoders"):
        import make_decoder_fixtures

        make_decoder_fixtures.write_decoders(args.out, build_tokenizer(), TEXTS, GREEDY_PROMPTS, SEED)


if __name__ == "__main__":
    main()
