#!/usr/bin/env python3
"""Generates the TorchScript fixture under tests/fixtures/torchscript/ from transformers.

The tiny random BERT of tests/fixtures/bert/bert_gelu_pooler is traced with torch.jit.trace
(through a wrapper that returns a tuple; eager attention) and saved as model.pt. TorchScript takes its
inputs by position and returns a tuple, so torchscript.json records the order; the Rust test
imports the model directory with that artifact, runs it on the torch backend and compares with
the outputs the traced module gives here (max abs error <= 1e-5). The test inputs have another
batch size and length than the trace example, with padding, so dynamic shapes are exercised.

usage: python3 tests/golden/generate_torchscript.py   (versions: tests/golden/requirements.txt)
"""
import json
import pathlib
import shutil

import numpy as np
import torch
import transformers

ROOT = pathlib.Path(__file__).resolve().parent.parent / "fixtures"
SOURCE = ROOT / "bert" / "bert_gelu_pooler" / "model"
OUT = ROOT / "torchscript" / "bert_gelu_pooler"
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
OUTPUTS = ["last_hidden_state", "pooler_output"]


def batch(g, size, length, vocab):
    ids = torch.randint(5, vocab, (size, length), generator=g)
    mask = torch.ones(size, length, dtype=torch.long)
    for row in range(1, size):
        pad = min(row * 2, length - 2)
        mask[row, length - pad:] = 0
        ids[row, length - pad:] = 0
    types = torch.zeros(size, length, dtype=torch.long)
    types[:, length // 2:] = 1
    return ids, mask, types * mask


class Positional(torch.nn.Module):
    """BertModel with positional inputs and a tuple of outputs, as TorchScript exports have."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        )
        return out.last_hidden_state, out.pooler_output


def main():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(7)
    bert = transformers.BertModel.from_pretrained(SOURCE, attn_implementation="eager").eval()
    model = Positional(bert).eval()
    vocab = bert.config.vocab_size
    example = batch(g, 2, 6, vocab)
    with torch.no_grad():
        traced = torch.jit.trace(model, example)
    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "inputs").mkdir(parents=True)
    (OUT / "expected").mkdir()
    traced.save(str(OUT / "model.pt"))
    (OUT / "torchscript.json").write_text(
        json.dumps({"inputs": INPUTS, "outputs": OUTPUTS}, indent=2) + "\n"
    )
    test = batch(g, 3, 9, vocab)
    loaded = torch.jit.load(str(OUT / "model.pt"))
    with torch.no_grad():
        got = loaded(*test)
        eager = model(*test)
    for name, t in zip(INPUTS, test):
        np.save(OUT / "inputs" / f"{name}.npy", t.numpy().astype(np.int64))
    for name, t, e in zip(OUTPUTS, got, eager):
        # The traced module must agree with eager transformers on the new shape.
        assert torch.allclose(t, e, atol=1e-5), name
        np.save(OUT / "expected" / f"{name}.npy", t.numpy().astype(np.float32))
    (OUT / "VERSIONS").write_text(
        f"torch {torch.__version__}\ntransformers {transformers.__version__}\n"
    )
    print("wrote", OUT, sorted(p.name for p in OUT.rglob("*")))


if __name__ == "__main__":
    main()
