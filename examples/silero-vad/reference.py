#!/usr/bin/env python3
"""Makes the Silero VAD example's test fixtures (tests/fixtures/):

* speech_16k.wav: an English sentence spoken by espeak-ng (Debian package espeak-ng), resampled
  from its 22050 Hz to 16 kHz mono 16-bit with an FFT resampler, with half a second of silence
  before and after;
* reference.json: the speech probability of every 512-sample chunk of that file and of two
  seconds of silence, computed by the package's own runtime for its safetensors file: the
  `silero-vad` package's tinygrad_model.py run by tinygrad (DEV=CPU, which compiles with clang),
  driven as that file's docstring says (64 samples of context and the state carried over, the
  last chunk padded with zeros).

Why tinygrad and not the package's ONNX model: the wheel's silero_vad_16k.safetensors holds
other weights than its silero_vad.onnx / silero_vad.jit (they differ by up to 18 per weight), so
no runtime but tinygrad's runs that file. The architecture itself is checked against ONNX here:
the same layers in PyTorch with the TorchScript file's weights give onnxruntime's probabilities
on the speech file (the difference is recorded in reference.json, "architecture_check").

usage: python3 examples/silero-vad/reference.py   (needs espeak-ng and clang from Debian, numpy,
       torch, onnxruntime and tinygrad from PyPI, and `scripts/fetch-models.sh silero`)
"""
import json
import os
import pathlib
import subprocess
import tempfile
import wave

import importlib.util

import numpy as np
import onnxruntime
import torch

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "tests" / "fixtures"
MODELS = pathlib.Path(os.environ.get("INFEROX_MODELS", pathlib.Path.home() / ".cache/inferox/models"))
PACKAGE = MODELS / "silero-vad/silero_vad"
ONNX = PACKAGE / "data/silero_vad.onnx"
JIT = PACKAGE / "data/silero_vad.jit"
SAFETENSORS = PACKAGE / "data/silero_vad_16k.safetensors"
TEXT = "Voice activity detection finds the parts of a recording where someone is speaking."
RATE, CHUNK, CONTEXT = 16000, 512, 64


def read_wav(path):
    with wave.open(str(path)) as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1, path
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return w.getframerate(), data


def speech():
    with tempfile.TemporaryDirectory() as tmp:
        raw = pathlib.Path(tmp) / "raw.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(raw), TEXT], check=True)
        rate, data = read_wav(raw)
    x = data.astype(np.float64)
    n = int(round(len(x) * RATE / rate))
    spectrum = np.fft.rfft(x)
    keep = n // 2 + 1
    y = np.fft.irfft(spectrum[:keep] if keep <= len(spectrum) else
                     np.pad(spectrum, (0, keep - len(spectrum))), n) * (n / len(x))
    silence = np.zeros(RATE // 2)
    y = np.concatenate([silence, y, silence])
    return np.clip(np.round(y), -32768, 32767).astype("<i2")


def chunks(samples):
    """(context + chunk) rows of float samples, as the package's wrappers cut them."""
    pad = (-len(samples)) % CHUNK
    samples = np.concatenate([samples, np.zeros(pad)]).astype(np.float32)
    context = np.zeros(CONTEXT, dtype=np.float32)
    for i in range(0, len(samples), CHUNK):
        x = np.concatenate([context, samples[i:i + CHUNK]])
        context = x[-CONTEXT:]
        yield x[None, :]


def tinygrad_probabilities(samples):
    """The package's tinygrad model on its safetensors file."""
    os.environ.setdefault("DEV", "CPU")
    from tinygrad import Tensor
    from tinygrad.nn.state import load_state_dict, safe_load
    spec = importlib.util.spec_from_file_location("tinygrad_model", PACKAGE / "tinygrad_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TinySileroVAD()
    load_state_dict(model, safe_load(str(SAFETENSORS)))
    state, out = None, []
    for x in chunks(samples):
        prob, state = model(Tensor(x), state)
        # Realised each step, or tinygrad's lazy graph grows with every chunk.
        state = state.realize()
        out.append(float(prob.numpy()[0, 0]))
    return out


def onnx_probabilities(samples):
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(ONNX), sess_options=opts,
                                           providers=["CPUExecutionProvider"])
    state, out = np.zeros((2, 1, 128), dtype=np.float32), []
    for x in chunks(samples):
        prob, state = session.run(None, {"input": x, "state": state,
                                         "sr": np.array(RATE, dtype=np.int64)})
        out.append(float(prob[0, 0]))
    return out


def torch_probabilities(samples, w):
    """tinygrad_model.py's layers in PyTorch, with weights `w` under its names."""
    F = torch.nn.functional
    h = c = torch.zeros(1, 128)
    out = []
    with torch.no_grad():
        for x in chunks(samples):
            x = F.pad(torch.from_numpy(x).unsqueeze(1), (0, 64), mode="reflect")
            x = F.conv1d(x, w["stft_conv.weight"], stride=128)
            x = (x[:, :129] ** 2 + x[:, 129:] ** 2).sqrt()
            for i, stride in enumerate([1, 2, 2, 1]):
                x = F.conv1d(x, w[f"conv{i + 1}.weight"], w[f"conv{i + 1}.bias"], stride=stride,
                             padding=1).relu()
            g = x.squeeze(-1) @ w["lstm_cell.weight_ih"].T + w["lstm_cell.bias_ih"] \
                + h @ w["lstm_cell.weight_hh"].T + w["lstm_cell.bias_hh"]
            i, f, gg, o = g.chunk(4, 1)
            c = f.sigmoid() * c + i.sigmoid() * gg.tanh()
            h = o.sigmoid() * c.tanh()
            y = F.conv1d(h.relu().unsqueeze(-1), w["final_conv.weight"], w["final_conv.bias"])
            out.append(float(y.sigmoid().mean()))
    return out


def torchscript_weights():
    sd = torch.jit.load(str(JIT))._model.state_dict()
    w = {"stft_conv.weight": sd["stft.forward_basis_buffer"],
         "final_conv.weight": sd["decoder.decoder.2.weight"],
         "final_conv.bias": sd["decoder.decoder.2.bias"]}
    for k in ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]:
        w[f"lstm_cell.{k}"] = sd[f"decoder.rnn.{k}"]
    for i in range(4):
        for k in ["weight", "bias"]:
            w[f"conv{i + 1}.{k}"] = sd[f"encoder.{i}.reparam_conv.{k}"]
    return w


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    pcm = speech()
    with wave.open(str(OUT / "speech_16k.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())
    speech_samples = pcm.astype(np.float32) / 32768.0
    onnx = onnx_probabilities(speech_samples)
    ported = torch_probabilities(speech_samples, torchscript_weights())
    check = max(abs(a - b) for a, b in zip(onnx, ported))
    assert check < 1e-4, check
    from importlib.metadata import version
    reference = {
        "runtime": f"tinygrad {version('tinygrad')}, silero-vad 6.2.3 tinygrad_model.py "
                   "on silero_vad_16k.safetensors",
        "architecture_check": {
            "what": "tinygrad_model.py's layers in PyTorch with silero_vad.jit's weights against "
                    f"silero_vad.onnx on onnxruntime {onnxruntime.__version__}, speech_16k.wav, "
                    "max abs difference",
            "value": check,
        },
        "speech_16k.wav": tinygrad_probabilities(speech_samples),
        "silence_2s": tinygrad_probabilities(np.zeros(2 * RATE, dtype=np.float32)),
    }
    (OUT / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    speech_probs = reference["speech_16k.wav"]
    print(f"{len(pcm) / RATE:.2f} s, {len(speech_probs)} chunks, "
          f"max speech probability {max(speech_probs):.3f}, "
          f"max over silence {max(reference['silence_2s']):.3f}")


if __name__ == "__main__":
    main()
