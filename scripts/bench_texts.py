"""The texts of the mixed-length benchmark case, shared by bench_pytorch.py and bench_ort.py.

benches/data/mixed_lengths.json holds 32 texts with the long tail of lengths a retrieval
corpus has: 28 short ones of 8-40 tokens and 4 passages of 200-256 tokens. The other systems
get them in one call padded to the longest, as their users run them; benches/bert.rs gives
inferox the same 32 texts in one call.
"""
import json
import os

DATA = os.path.join(os.path.dirname(__file__), "..", "benches", "data", "mixed_lengths.json")


def mixed_lengths(tok):
    """The 32 texts, after checking their token counts (special tokens included) with `tok`."""
    with open(DATA) as f:
        texts = json.load(f)["texts"]
    lengths = sorted(len(tok(t)["input_ids"]) for t in texts)
    assert len(texts) == 32, len(texts)
    assert all(8 <= n <= 40 for n in lengths[:28]), lengths
    assert all(200 <= n <= 256 for n in lengths[28:]), lengths
    return texts
