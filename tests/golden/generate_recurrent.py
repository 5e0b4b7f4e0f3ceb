#!/usr/bin/env python3
"""Generates the recurrent-network golden fixtures under tests/fixtures/recurrent/ from torch.nn.

Each case is a small random torch.nn.LSTM, GRU or RNN exported the way docs/package-format.md
tells users to export one (config.json with model_type and the constructor arguments,
model.safetensors with the state_dict), inputs/*.npy (input, and h0 / c0 where the case gives
them) and expected/*.npy, the module's outputs (output, h_n, c_n) in eval mode.

The cases cover every option that changes the math: layers, directions, projection,
batch_first, bias off, initial states given or not, and both RNN nonlinearities.

usage: python3 tests/golden/generate_recurrent.py   (versions: tests/golden/requirements.txt)
"""
import json
import pathlib
import shutil

import numpy as np
import torch
from safetensors.torch import save_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "recurrent"

MODULES = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}

# name: (model_type, constructor arguments, batch, steps, initial states given)
CASES = {
    "lstm_one_layer": ("lstm", dict(input_size=5, hidden_size=7), 3, 6, False),
    "lstm_deep_bidirectional_batch_first": (
        "lstm", dict(input_size=4, hidden_size=6, num_layers=2, bidirectional=True,
                     batch_first=True), 2, 5, True),
    "lstm_projected_bidirectional": (
        "lstm", dict(input_size=5, hidden_size=8, num_layers=2, bidirectional=True,
                     proj_size=3), 3, 4, True),
    "lstm_no_bias_batch_first": (
        "lstm", dict(input_size=3, hidden_size=5, bias=False, batch_first=True), 2, 7, False),
    "gru_deep_bidirectional": (
        "gru", dict(input_size=4, hidden_size=6, num_layers=2, bidirectional=True), 3, 5, True),
    "gru_no_bias_batch_first": (
        "gru", dict(input_size=5, hidden_size=4, bias=False, batch_first=True), 2, 6, False),
    "rnn_tanh_deep": ("rnn", dict(input_size=4, hidden_size=6, num_layers=3), 3, 5, False),
    "rnn_relu_bidirectional_batch_first": (
        "rnn", dict(input_size=3, hidden_size=5, nonlinearity="relu", bidirectional=True,
                    batch_first=True, bias=False), 2, 6, True),
}


def save_npy_dir(d, tensors):
    d.mkdir(parents=True, exist_ok=True)
    for k, v in tensors.items():
        np.save(d / f"{k}.npy", np.ascontiguousarray(v.detach().numpy().astype(np.float32)))


def main():
    torch.manual_seed(0)
    if OUT.exists():
        shutil.rmtree(OUT)
    for name, (model_type, args, batch, steps, states) in CASES.items():
        module = MODULES[model_type](**args).eval()
        # PyTorch's init is uniform in ±1/√hidden; a wider spread makes every gate and the
        # nonlinearities' curved parts matter.
        with torch.no_grad():
            for p in module.parameters():
                p.mul_(2.0)
        case = OUT / name
        model = case / "model"
        model.mkdir(parents=True)
        (model / "config.json").write_text(json.dumps({"model_type": model_type, **args}, indent=2) + "\n")
        save_file(module.state_dict(), model / "model.safetensors")

        directions = 2 if args.get("bidirectional") else 1
        layers = args.get("num_layers", 1)
        proj = args.get("proj_size", 0)
        hidden = args["hidden_size"]
        x_shape = (batch, steps, args["input_size"]) if args.get("batch_first") else \
            (steps, batch, args["input_size"])
        inputs = {"input": torch.randn(*x_shape)}
        if states:
            inputs["h0"] = torch.randn(layers * directions, batch, proj or hidden)
            if model_type == "lstm":
                inputs["c0"] = torch.randn(layers * directions, batch, hidden)
        with torch.no_grad():
            if not states:
                result = module(inputs["input"])
            elif model_type == "lstm":
                result = module(inputs["input"], (inputs["h0"], inputs["c0"]))
            else:
                result = module(inputs["input"], inputs["h0"])
        output, state = result
        expected = {"output": output}
        if model_type == "lstm":
            expected["h_n"], expected["c_n"] = state
        else:
            expected["h_n"] = state
        save_npy_dir(case / "inputs", inputs)
        save_npy_dir(case / "expected", expected)
        print(name, {k: tuple(v.shape) for k, v in expected.items()})


if __name__ == "__main__":
    main()
