#!/usr/bin/env python3
"""The LSTM benchmark's PyTorch side (scripts/bench_recurrent.sh).

  make DIR              export a 2-layer LSTM, input and hidden 256, batch_first (seed 0), as
                        docs/package-format.md says: config.json + model.safetensors
  run DIR --threads N   torch.nn.LSTM of DIR on a batch of 32 sequences of 256 steps (the same
                        smooth pattern `inferox bench` feeds), in eval mode under no_grad;
                        prints JSON with sequences/s (median of the timed runs), checking the
                        output's shape and that it is finite
"""
import argparse
import json
import pathlib
import statistics
import time

import torch
from safetensors.torch import load_file, save_file

ARGS = dict(input_size=256, hidden_size=256, num_layers=2, batch_first=True)
BATCH, STEPS = 32, 256


def make(out):
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(**ARGS)
    (out / "config.json").write_text(json.dumps({"model_type": "lstm", **ARGS}) + "\n")
    save_file(lstm.state_dict(), out / "model.safetensors")


def run(src, threads, runs, warmup):
    torch.set_num_threads(threads)
    config = json.loads((pathlib.Path(src) / "config.json").read_text())
    args = {k: v for k, v in config.items() if k != "model_type"}
    lstm = torch.nn.LSTM(**args).eval()
    lstm.load_state_dict(load_file(pathlib.Path(src) / "model.safetensors"))
    count = BATCH * STEPS * args["input_size"]
    # inferox bench's input: ((i % 97) / 48) - 1 over the flattened tensor.
    x = ((torch.arange(count) % 97).float() / 48.0 - 1.0).reshape(BATCH, STEPS, args["input_size"])
    seconds = []
    with torch.no_grad():
        for i in range(warmup + runs):
            start = time.perf_counter()
            output, (h, c) = lstm(x)
            elapsed = time.perf_counter() - start
            if i >= warmup:
                seconds.append(elapsed)
    assert output.shape == (BATCH, STEPS, args["hidden_size"]), output.shape
    assert torch.isfinite(output).all() and torch.isfinite(c).all()
    print(json.dumps({
        "threads": threads,
        "sequences_per_s": BATCH / statistics.median(seconds),
        "output_mean": output.mean().item(),
        "torch": torch.__version__,
    }))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir")
    r = sub.add_parser("run")
    r.add_argument("dir")
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--runs", type=int, default=10)
    r.add_argument("--warmup", type=int, default=2)
    a = p.parse_args()
    if a.cmd == "make":
        make(a.dir)
    else:
        run(a.dir, a.threads, a.runs, a.warmup)


if __name__ == "__main__":
    main()
