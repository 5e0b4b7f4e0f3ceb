#!/usr/bin/env python3
"""ONNX Runtime side of scripts/bench.sh, on the same all-MiniLM-L6-v2.

The model is exported from transformers (torch.onnx, dynamic batch and sequence) and run
through ONNX Runtime's transformer optimizer (fused attention, SkipLayerNorm, BiasGelu), the
graph a user who serves BERT-family encoders with ORT runs. Before timing, its embedding of
the benchmark sentence must agree with PyTorch's (cosine > 0.9999), or the script stops.

Measures what benches/bert.rs measures:
  latency_batch1     one short sentence: tokenize, run, mean-pool, normalise (ms, median)
  throughput_32x128  a 32 x 128-token batch through the encoder (sentences/s, median)
  mixed_lengths      the 32 texts of benches/data/mixed_lengths.json in one call, padded to the
                     longest: tokenize, forward, mean-pool, normalise (sentences/s, median)

usage: bench_ort.py MODEL_DIR --threads N [--work DIR]
needs: pip install onnxruntime==1.32.0 onnx==1.23.2 (plus torch and transformers)
"""
import argparse
import json
import os
import statistics
import time

from bench_texts import mixed_lengths

TEXT = "A man is eating food on the street."


def export(model_dir, work):
    """The optimised ONNX graph of the model (made once under `work`)."""
    import torch
    import transformers
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = os.path.join(work, "model.opt.onnx")
    if os.path.exists(optimized):
        return optimized
    os.makedirs(work, exist_ok=True)
    raw = os.path.join(work, "model.onnx")
    # Eager attention exports the MatMul/Softmax pattern the optimiser fuses into Attention.
    model = transformers.AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    cfg = model.config
    ids = torch.ones(2, 8, dtype=torch.long)
    dyn = {0: "batch", 1: "sequence"}
    class Encoder(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    with torch.inference_mode():
        torch.onnx.export(
            Encoder(model),
            (ids, torch.ones_like(ids), torch.zeros_like(ids)),
            raw,
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={"input_ids": dyn, "attention_mask": dyn, "token_type_ids": dyn,
                          "last_hidden_state": dyn},
            opset_version=17,
            dynamo=False,
        )
    opt = optimize_model(raw, model_type="bert", num_heads=cfg.num_attention_heads,
                         hidden_size=cfg.hidden_size)
    opt.save_model_to_file(optimized)
    return optimized


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default="target/bench/minilm-onnx")
    args = ap.parse_args()

    import numpy as np
    import onnxruntime as ort
    import torch
    import transformers

    path = export(args.model, args.work)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    tok = transformers.AutoTokenizer.from_pretrained(args.model)

    def embed(texts):
        enc = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="np")
        feed = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
        hidden = session.run(None, feed)[0]
        mask = feed["attention_mask"][..., None].astype(hidden.dtype)
        pooled = (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
        return pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)

    # The graph must compute what PyTorch computes.
    model = transformers.AutoModel.from_pretrained(args.model).eval()
    enc = tok([TEXT], return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**enc).last_hidden_state
    want = hidden.mean(1)[0].numpy()
    got = embed([TEXT])[0]
    cosine = float(got @ want / np.linalg.norm(want))
    assert cosine > 0.9999, f"ONNX Runtime's embedding disagrees with PyTorch's: cosine {cosine}"

    def timed(fn, warmup, runs):
        for _ in range(warmup):
            fn()
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
        return statistics.median(samples)

    latency = timed(lambda: embed([TEXT]), 20, 200)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 29000, (32, 128), generator=g).numpy()
    ids[:, 0] = 101
    batch = dict(input_ids=ids, attention_mask=np.ones_like(ids), token_type_ids=np.zeros_like(ids))
    out = session.run(None, batch)[0]
    assert out.shape == (32, 128, model.config.hidden_size), out.shape
    per_batch = timed(lambda: session.run(None, batch), 2, 15)
    import onnx
    ops = {}
    for node in onnx.load(path).graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    fused = {k: ops.get(k, 0) for k in ("Attention", "SkipLayerNormalization", "BiasGelu")}
    assert all(fused.values()), f"the optimiser did not fuse the graph: {ops}"
    texts = mixed_lengths(tok)
    assert embed(texts).shape == (32, model.config.hidden_size)
    mixed = timed(lambda: embed(texts), 2, 15)
    print(json.dumps({
        "threads": args.threads,
        "onnxruntime": ort.__version__,
        "fused_ops": fused,
        "latency_batch1_ms": latency * 1e3,
        "throughput_32x128_sentences_per_s": 32 / per_batch,
        "mixed_lengths_sentences_per_s": 32 / mixed,
    }))


if __name__ == "__main__":
    main()
