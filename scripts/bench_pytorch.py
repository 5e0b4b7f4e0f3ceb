#!/usr/bin/env python3
"""PyTorch (transformers, eager) side of scripts/bench.sh, on the same all-MiniLM-L6-v2.

Measures what benches/bert.rs measures:
  latency_batch1     one short sentence: tokenize, forward, mean-pool, normalise (ms, median)
  throughput_32x128  a 32 x 128-token batch through the encoder (sentences/s, median)
  mixed_lengths      the 32 texts of benches/data/mixed_lengths.json in one call, padded to the
                     longest: tokenize, forward, mean-pool, normalise (sentences/s, median)
and, with --once, embeds one sentence and exits (for cold-start and peak-RSS timing).

usage: bench_pytorch.py MODEL_DIR --threads N [--once]
"""
import argparse
import json
import statistics
import time

from bench_texts import mixed_lengths


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--once", action="store_true")
    args = ap.parse_args()

    import torch
    import transformers

    torch.set_num_threads(args.threads)
    tok = transformers.AutoTokenizer.from_pretrained(args.model)
    model = transformers.AutoModel.from_pretrained(args.model).eval()

    def embed(texts):
        enc = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    if args.once:
        print(embed(["A man is eating food on the street."])[0, :4].tolist())
        return

    def timed(fn, warmup, runs):
        for _ in range(warmup):
            fn()
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
        return statistics.median(samples)

    latency = timed(lambda: embed(["A man is eating food on the street."]), 20, 200)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 29000, (32, 128), generator=g)
    ids[:, 0] = 101
    batch = dict(input_ids=ids, attention_mask=torch.ones_like(ids), token_type_ids=torch.zeros_like(ids))

    def forward():
        with torch.inference_mode():
            model(**batch)

    per_batch = timed(forward, 2, 15)
    texts = mixed_lengths(tok)
    assert embed(texts).shape == (32, model.config.hidden_size)
    mixed = timed(lambda: embed(texts), 2, 15)
    print(json.dumps({
        "threads": args.threads,
        "torch": torch.__version__,
        "latency_batch1_ms": latency * 1e3,
        "throughput_32x128_sentences_per_s": 32 / per_batch,
        "mixed_lengths_sentences_per_s": 32 / mixed,
    }))


if __name__ == "__main__":
    main()
