#!/usr/bin/env python3
"""Generates the BERT-family golden fixtures under tests/fixtures/bert/ from transformers.

Each case is a tiny model with random weights (scaled up from transformers' init so that every
part of the network matters), saved in the Hugging Face layout, plus input tensors and the
reference outputs PyTorch computes for them. The Rust tests import each model as a package,
run the inputs and compare (max abs error <= 1e-4).

usage: python3 tests/golden/generate_bert.py   (versions: tests/golden/requirements.txt)
"""
import json
import pathlib
import shutil

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

OUT = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "bert"
VOCAB = 99
WORDS = ("the a man woman is eating food bread piece of dog cat runs fast slow red blue green "
         "house car tree sky sun moon star water fire earth wind play plays playing ##s ##ing ##ed "
         "un ##able happy sad big small").split()


def randomize(model, seed):
    """Replaces the tiny init with larger random values so that errors cannot hide."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.2 * noise)
            else:
                p.copy_(0.3 * noise)


def wordpiece_tokenizer(path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    vocab += [f"[unused{i}]" for i in range(VOCAB - len(vocab))]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    # Like all-MiniLM-L6-v2's tokenizer.json: fixed padding and a short truncation that the
    # package's settings must override.
    tok.enable_padding(pad_id=0, pad_token="[PAD]", length=16)
    tok.enable_truncation(max_length=8)
    tok.save(str(path))


def random_batch(rng, lengths, seq, pad_id, cls_id, sep_id, type_ids):
    batch = len(lengths)
    ids = np.full((batch, seq), pad_id, dtype=np.int64)
    mask = np.zeros((batch, seq), dtype=np.int64)
    types = np.zeros((batch, seq), dtype=np.int64)
    for b, n in enumerate(lengths):
        ids[b, :n] = rng.integers(5, VOCAB, size=n)
        ids[b, 0], ids[b, n - 1] = cls_id, sep_id
        mask[b, :n] = 1
        if type_ids:
            types[b, n // 2:n] = 1
    return ids, mask, types


def save(dirpath, tensors):
    dirpath.mkdir(parents=True, exist_ok=True)
    for name, value in tensors.items():
        np.save(dirpath / f"{name}.npy", value)


def run(model, inputs):
    """Reference outputs: the base model's hidden states and pooler, and the head's logits."""
    tensors = {k: torch.from_numpy(v) for k, v in inputs.items()}
    with torch.no_grad():
        base = model.base_model(**tensors)
        result = {"last_hidden_state": base.last_hidden_state.numpy().astype(np.float32)}
        if getattr(base, "pooler_output", None) is not None:
            result["pooler_output"] = base.pooler_output.numpy().astype(np.float32)
        if model is not model.base_model:
            result["logits"] = model(**tensors).logits.numpy().astype(np.float32)
    return result


CASES = [
    # name, config class, model class, config overrides, inputs given, tokenizer
    dict(name="bert_gelu_pooler", cls="BertModel", cfg=dict(model_type="bert", hidden_act="gelu"),
         inputs=("input_ids", "attention_mask", "token_type_ids"), tokenizer=True),
    dict(name="bert_relu_single_type", cls="BertModel", kwargs=dict(add_pooling_layer=False),
         cfg=dict(model_type="bert", hidden_act="relu", type_vocab_size=1, layer_norm_eps=1e-5),
         inputs=("input_ids", "attention_mask")),
    dict(name="bert_gelu_new_classifier", cls="BertForSequenceClassification",
         cfg=dict(model_type="bert", hidden_act="gelu_new", num_labels=3,
                  id2label={0: "negative", 1: "neutral", 2: "positive"},
                  label2id={"negative": 0, "neutral": 1, "positive": 2}),
         inputs=("input_ids", "attention_mask")),
    dict(name="roberta_gelu", cls="RobertaModel",
         cfg=dict(model_type="roberta", hidden_act="gelu", pad_token_id=1, bos_token_id=0,
                  eos_token_id=2, type_vocab_size=1, max_position_embeddings=42, layer_norm_eps=1e-5),
         inputs=("input_ids", "attention_mask")),
    dict(name="xlm_roberta_silu_classifier", cls="XLMRobertaForSequenceClassification",
         cfg=dict(model_type="xlm-roberta", hidden_act="silu", pad_token_id=1, num_labels=2,
                  type_vocab_size=1, max_position_embeddings=42),
         inputs=("input_ids", "attention_mask")),
]


def main():
    torch.manual_seed(0)
    if OUT.exists():
        shutil.rmtree(OUT)
    rng = np.random.default_rng(1234)
    for i, case in enumerate(CASES):
        model_type = case["cfg"]["model_type"]
        config_cls = transformers.AutoConfig.for_model(model_type).__class__
        cfg = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=37, max_position_embeddings=40)
        cfg.update({k: v for k, v in case["cfg"].items() if k != "model_type"})
        config = config_cls(**cfg)
        model = getattr(transformers, case["cls"])(config, **case.get("kwargs", {})).eval()
        randomize(model, seed=100 + i)
        root = OUT / case["name"]
        model.save_pretrained(root / "model", safe_serialization=True)
        pad = config.pad_token_id if config.pad_token_id is not None else 0
        cls_id, sep_id = (2, 3) if model_type == "bert" else (0, 2)
        ids, mask, types = random_batch(rng, [9, 5, 12], 12, pad, cls_id, sep_id,
                                        "token_type_ids" in case["inputs"])
        all_inputs = dict(input_ids=ids, attention_mask=mask, token_type_ids=types)
        inputs = {k: all_inputs[k] for k in case["inputs"]}
        save(root / "inputs", inputs)
        save(root / "expected", run(model, inputs))
        if case.get("tokenizer"):
            wordpiece_tokenizer(root / "model" / "tokenizer.json")
            texts = ["The man is eating bread.", "A dog runs",
                     "the red car and the blue house are big, the sun is happy today"]
            (root / "texts.json").write_text(json.dumps(texts, indent=1) + "\n")
            fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(root / "model" / "tokenizer.json"))
            # What transformers itself does: pad to the longest, truncate at the model's limit.
            enc = fast(texts, padding="longest", truncation=True, max_length=40,
                       return_token_type_ids=True, return_tensors="np")
            text_inputs = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
            save(root / "text_inputs", text_inputs)
            save(root / "text_expected", run(model, text_inputs))
        print(f"{case['name']}: {sum(p.numel() for p in model.parameters())} parameters")
    (OUT / "VERSIONS").write_text(
        f"torch {torch.__version__}\ntransformers {transformers.__version__}\n")


if __name__ == "__main__":
    main()
