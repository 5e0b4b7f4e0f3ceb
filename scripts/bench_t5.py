#!/usr/bin/env python3
"""The T5 benchmark's transformers side (scripts/bench_t5.sh).

  make DIR              a t5-small-sized T5 (transformers' T5Config defaults: d_model 512,
                        6 + 6 layers, 8 heads, d_ff 2048, vocab 32128, ReLU, tied output; decoder start 0 as
                        t5-small's config says) with
                        seeded random weights, saved with save_pretrained
  run DIR --threads N [--dtype bfloat16]
                        `model.generate` greedy on a source of 32 token ids, exactly 64 new
                        tokens (min_new_tokens = max_new_tokens), batch 1, in eval mode;
                        prints JSON with generated tokens/s (median of the timed runs, the
                        encoder pass included as in a generation), checking the output length;
                        with --dtype bfloat16 the weights and activations are bf16 (PyTorch's
                        bf16 CPU kernels)
"""
import argparse
import json
import pathlib
import statistics
import time

import torch
import transformers

SOURCE, NEW = 32, 64


def make(out):
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(transformers.T5Config(decoder_start_token_id=0)).eval()
    model.save_pretrained(out, safe_serialization=True)


def run(src, threads, runs, warmup, dtype):
    torch.set_num_threads(threads)
    model = transformers.T5ForConditionalGeneration.from_pretrained(src, dtype=getattr(torch, dtype)).eval()
    # Fixed token ids, none of them the end-of-sequence token (1).
    source = (torch.arange(SOURCE) * 7919 % 32000 + 2).unsqueeze(0)
    seconds = []
    with torch.no_grad():
        for i in range(warmup + runs):
            start = time.perf_counter()
            out = model.generate(input_ids=source, max_new_tokens=NEW, min_new_tokens=NEW,
                                 do_sample=False, num_beams=1)
            elapsed = time.perf_counter() - start
            if i >= warmup:
                seconds.append(elapsed)
    # The start token, then NEW generated ones.
    assert out.shape == (1, NEW + 1), out.shape
    print(json.dumps({
        "threads": threads,
        "dtype": dtype,
        "tokens_per_s": NEW / statistics.median(seconds),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir")
    r = sub.add_parser("run")
    r.add_argument("dir")
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--runs", type=int, default=5)
    r.add_argument("--warmup", type=int, default=1)
    r.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    a = p.parse_args()
    if a.cmd == "make":
        make(a.dir)
    else:
        run(a.dir, a.threads, a.runs, a.warmup, a.dtype)


if __name__ == "__main__":
    main()
