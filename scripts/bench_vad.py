#!/usr/bin/env python3
"""The Silero VAD benchmark's ONNX Runtime side (scripts/bench_vad.sh).

  audio OUT.wav             60 s of 16 kHz audio: the example's espeak-ng speech fixture
                            (examples/silero-vad/tests/fixtures/speech_16k.wav) repeated
  run WAV --threads N       the `silero-vad` package's silero_vad.onnx on onnxruntime, chunk by
                            chunk as the package's OnnxWrapper feeds it (64 context samples +
                            512 new ones, the state carried), intra-op threads N; prints JSON
                            with the median time of the runs and the real-time factor, checking
                            one probability in [0, 1] per chunk
"""
import argparse
import json
import os
import pathlib
import statistics
import time
import wave

import numpy as np
import onnxruntime

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODELS = pathlib.Path(os.environ.get("INFEROX_MODELS", pathlib.Path.home() / ".cache/inferox/models"))
ONNX = MODELS / "silero-vad/silero_vad/data/silero_vad.onnx"
RATE, CHUNK, CONTEXT, SECONDS = 16000, 512, 64, 60


def read(path):
    with wave.open(str(path)) as w:
        assert w.getframerate() == RATE and w.getsampwidth() == 2 and w.getnchannels() == 1, path
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def audio(out):
    speech = read(ROOT / "examples/silero-vad/tests/fixtures/speech_16k.wav")
    data = np.resize(speech, RATE * SECONDS)
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(data.astype("<i2").tobytes())


def run(path, threads, runs):
    samples = read(path).astype(np.float32) / 32768.0
    pad = (-len(samples)) % CHUNK
    samples = np.concatenate([samples, np.zeros(pad, dtype=np.float32)])
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(ONNX), sess_options=opts, providers=["CPUExecutionProvider"])
    sr = np.array(RATE, dtype=np.int64)

    def once():
        state = np.zeros((2, 1, 128), dtype=np.float32)
        context = np.zeros(CONTEXT, dtype=np.float32)
        out = []
        for i in range(0, len(samples), CHUNK):
            x = np.concatenate([context, samples[i:i + CHUNK]])
            context = x[-CONTEXT:]
            prob, state = session.run(None, {"input": x[None, :], "state": state, "sr": sr})
            out.append(float(prob[0, 0]))
        return out

    seconds = []
    for i in range(runs + 1):
        start = time.perf_counter()
        probabilities = once()
        elapsed = time.perf_counter() - start
        if i > 0:
            seconds.append(elapsed)
    chunks = len(samples) // CHUNK
    assert len(probabilities) == chunks and all(0.0 <= p <= 1.0 for p in probabilities)
    median = statistics.median(seconds)
    audio_seconds = len(read(path)) / RATE
    print(json.dumps({
        "audio_seconds": audio_seconds,
        "chunks": chunks,
        "speech_chunks": sum(p >= 0.5 for p in probabilities),
        "seconds": median,
        "real_time_factor": median / audio_seconds,
        "onnxruntime": onnxruntime.__version__,
    }))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("audio")
    a.add_argument("out")
    r = sub.add_parser("run")
    r.add_argument("wav")
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    if args.cmd == "audio":
        audio(args.out)
    else:
        run(args.wav, args.threads, args.runs)


if __name__ == "__main__":
    main()
