#!/usr/bin/env python3
"""Generates the decoder golden fixtures under tests/fixtures/decoders/ from transformers.

Tiny random-weight GPT-2, Llama (with Llama 3 rope scaling), Mistral, Qwen2 (q/k/v biases, tied
embeddings), Qwen3 (per-head q/k norms, explicit head_dim), Gemma 2 (soft-capping, sliding
windows), Gemma 3 (local and global RoPE; also as the text model of its multimodal checkpoint) and Phi-3 (fused projections, partial rotary; and with LongRoPE) models in
the Hugging Face layout,
sharing a small byte-level BPE tokenizer trained here. For each, transformers gives:
  * logits of a left-padded prompt batch (attention mask and position ids as `generate` makes
    them): reference/logits.npy, reference/input_ids.npy, reference/attention_mask.npy;
  * greedy continuations of 20 tokens from `model.generate`: reference/greedy.json.

usage: python3 tests/golden/generate_decoders.py   (versions: tests/golden/requirements.txt)
"""
import json
import pathlib
import shutil

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

OUT = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "decoders"
VOCAB = 320
CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome.",
    "Once upon a time there was a small robot who loved to read books about the sea.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "Rust guarantees memory safety without a garbage collector; café, naïve, 東京, 🙂.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14159 2026-11-21",
] * 20
PROMPTS = ["The capital of France is", "Once upon a", "def add(a, b):\n    return", "café 🙂"]


def train_tokenizer(path):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    tok.save(str(path))
    return tok


def randomize(model, seed, scale=0.25, norm_center=1.0):
    """Seeded normal weights: `scale` of a unit normal, norm scales `norm_center` ± 0.2."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name and name.endswith("weight"):
                p.copy_(norm_center + 0.2 * noise)
            else:
                p.copy_(scale * noise)


COMMON = dict(vocab_size=VOCAB, bos_token_id=0, eos_token_id=0)
CASES = [
    dict(name="gpt2", cls="GPT2LMHeadModel", cfg=dict(model_type="gpt2", n_positions=64, n_embd=32, n_layer=2,
                                                    n_head=4, activation_function="gelu_new")),
    dict(name="llama", cls="LlamaForCausalLM",
         cfg=dict(model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, rope_theta=10000.0,
                  rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                    original_max_position_embeddings=16))),
    dict(name="mistral", cls="MistralForCausalLM",
         cfg=dict(model_type="mistral", hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=64, sliding_window=None)),
    dict(name="qwen2", cls="Qwen2ForCausalLM",
         cfg=dict(model_type="qwen2", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                  tie_word_embeddings=True, use_sliding_window=False)),
    dict(name="qwen3", cls="Qwen3ForCausalLM",
         cfg=dict(model_type="qwen3", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
                  tie_word_embeddings=False)),
    # Windows of 4 tokens, so that the prompts and continuations reach past them; soft caps low
    # enough to bite; a query scalar other than head_dim.
    dict(name="gemma2", cls="Gemma2ForCausalLM",
         cfg=dict(model_type="gemma2", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24,
                  max_position_embeddings=64, sliding_window=4, attn_logit_softcapping=3.0,
                  final_logit_softcapping=5.0, pad_token_id=0)),
    # Six layers: five sliding (local RoPE base 10000), one global (base 1e6, linear scaling).
    dict(name="gemma3", cls="Gemma3ForCausalLM",
         cfg=dict(model_type="gemma3_text", hidden_size=32, intermediate_size=64, num_hidden_layers=6,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
                  max_position_embeddings=64, sliding_window=4, pad_token_id=0,
                  rope_parameters=dict(full_attention=dict(rope_type="linear", factor=2.0, rope_theta=1e6),
                                       sliding_attention=dict(rope_type="default", rope_theta=10000.0)))),
    # Half the head dimensions rotate; every layer slides over 4 tokens.
    dict(name="phi3", cls="Phi3ForCausalLM",
         cfg=dict(model_type="phi3", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                  original_max_position_embeddings=64, sliding_window=4, pad_token_id=0,
                  rope_parameters=dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.5))),
    # LongRoPE (Phi-3.5, Phi-4-mini) over an original context of 8 positions: the padded prompts
    # (9 tokens) run on the long factors, the greedy continuations cross from short to long.
    dict(name="phi3_longrope", cls="Phi3ForCausalLM",
         cfg=dict(model_type="phi3", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                  original_max_position_embeddings=8, sliding_window=None, pad_token_id=0,
                  rope_parameters=dict(rope_type="longrope", rope_theta=10000.0, partial_rotary_factor=1.0,
                                       original_max_position_embeddings=8,
                                       short_factor=[1.0, 1.2, 1.5, 2.0], long_factor=[1.5, 2.5, 4.0, 8.0]))),
    # Gemma 3's multimodal checkpoint (model_type gemma3, weights under `language_model.`): its
    # text model, with a one-layer vision tower that text prompts leave unused.
    dict(name="gemma3_mm", cls="Gemma3ForConditionalGeneration",
         cfg=dict(model_type="gemma3", mm_tokens_per_image=4,
                  text_config=dict(COMMON, hidden_size=32, intermediate_size=64, num_hidden_layers=6,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                   query_pre_attn_scalar=16, max_position_embeddings=64, sliding_window=4,
                                   pad_token_id=0),
                  vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                     num_attention_heads=2, image_size=28, patch_size=14))),
]


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    tok_path = OUT / "tokenizer.json"
    train_tokenizer(tok_path)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tok_path), eos_token="<|endoftext|>",
                                                pad_token="<|endoftext|>", padding_side="left")
    for i, case in enumerate(CASES):
        torch.manual_seed(i)
        # A multimodal config carries the common settings in its text model's.
        cfg = {} if "text_config" in case["cfg"] else dict(COMMON)
        cfg.update({k: v for k, v in case["cfg"].items() if k != "model_type"})
        config = transformers.AutoConfig.for_model(case["cfg"]["model_type"], **cfg)
        model = getattr(transformers, case["cls"])(config).eval()
        randomize(model, seed=200 + i)
        root = OUT / case["name"]
        model.save_pretrained(root / "model", safe_serialization=True)
        model.generation_config.save_pretrained(root / "model")
        shutil.copy(tok_path, root / "model" / "tokenizer.json")

        enc = fast(PROMPTS, padding=True, return_tensors="pt")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        positions = mask.long().cumsum(-1) - 1
        positions.masked_fill_(mask == 0, 1)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=20, do_sample=False,
                                 pad_token_id=0, eos_token_id=0)
        greedy = []
        for row in out[:, ids.shape[1]:].tolist():
            cut = row.index(0) + 1 if 0 in row else len(row)
            greedy.append(row[:cut])
        record = {"prompts": PROMPTS, "greedy": greedy}
        if case["cfg"].get("rope_parameters", {}).get("rope_type") == "longrope":
            # LongRoPE picks its table by the furthest position of a pass, so a prompt alone
            # (short table until it passes the original context) continues differently.
            record["greedy_alone"] = []
            for prompt in PROMPTS:
                one = fast([prompt], return_tensors="pt")
                with torch.no_grad():
                    out = model.generate(**one, max_new_tokens=20, do_sample=False, pad_token_id=0, eos_token_id=0)
                row = out[0, one["input_ids"].shape[1]:].tolist()
                record["greedy_alone"].append(row[: row.index(0) + 1] if 0 in row else row)
        ref = root / "reference"
        ref.mkdir()
        np.save(ref / "input_ids.npy", ids.numpy().astype(np.int64))
        np.save(ref / "attention_mask.npy", mask.numpy().astype(np.int64))
        np.save(ref / "logits.npy", logits.numpy().astype(np.float32))
        (ref / "greedy.json").write_text(json.dumps(record, indent=1) + "\n")
        print(f"{case['name']}: {sum(p.numel() for p in model.parameters())} parameters; greedy lengths "
              f"{[len(g) for g in greedy]}")
    tok_path.unlink()
    (OUT / "VERSIONS").write_text(f"torch {torch.__version__}\ntransformers {transformers.__version__}\n")


if __name__ == "__main__":
    main()
