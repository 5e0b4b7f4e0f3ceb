#!/usr/bin/env python3
"""Times TensorFlow Lite's own interpreter (tf.lite.Interpreter) on the TFLite fixtures.

For each fixture directory (model.tflite + inputs/<name>.npy, as written by
tests/golden/generate_tflite.py) and for num_threads 1 and 2: loads the model (interpreter creation
+ allocate_tensors, reported as load_ms), then times `--iters` calls one by one with
time.perf_counter_ns after `--warmup` untimed ones. A call is what a user does per input and what
inferox's `LoadedModel::run` does: set the input tensor, invoke(), copy the output out
(median_us); invoke() alone is reported too (invoke_median_us). Prints one JSON line per
(fixture, threads):
  {"fixture", "threads", "load_ms", "median_us", "mean_us", "p90_us", "invoke_median_us", "iters"}

usage: python3 scripts/bench_tflite.py [--iters N] [--warmup W] [FIXTURE_DIR...]
       (default: the three fixtures under tests/fixtures/tflite/;
        versions: tests/golden/requirements-tflite.txt)
"""
import argparse
import json
import os
import pathlib
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", message=r"\s*Warning: tf.lite.Interpreter is deprecated")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "tflite"
DEFAULT = [FIXTURES / name for name in ("float_cnn", "embedding_dense", "int8_cnn")]


def bench(fixture, threads, iters, warmup, xnnpack=True):
    model = str(fixture / "model.tflite")
    t0 = time.perf_counter_ns()
    resolver = (
        tf.lite.experimental.OpResolverType.AUTO
        if xnnpack
        else tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    interpreter = tf.lite.Interpreter(
        model_path=model, num_threads=threads, experimental_op_resolver_type=resolver
    )
    interpreter.allocate_tensors()
    load_ns = time.perf_counter_ns() - t0

    details = interpreter.get_input_details()
    if len(details) != 1:
        sys.exit(f"{fixture}: expected one input, found {len(details)}")
    (npy,) = sorted((fixture / "inputs").glob("*.npy"))
    data = np.load(npy)
    index = details[0]["index"]
    output = interpreter.get_output_details()[0]["index"]
    interpreter.set_tensor(index, data)

    def call():
        interpreter.set_tensor(index, data)
        interpreter.invoke()
        return interpreter.get_tensor(output)

    for _ in range(warmup):
        call()
    clock = time.perf_counter_ns
    invoke = interpreter.invoke
    invoke_times = np.empty(iters, dtype=np.int64)
    for i in range(iters):
        start = clock()
        invoke()
        invoke_times[i] = clock() - start
    times = np.empty(iters, dtype=np.int64)
    for i in range(iters):
        start = clock()
        call()
        times[i] = clock() - start
    us = times / 1e3
    return {
        "fixture": fixture.name,
        "threads": threads,
        "load_ms": round(load_ns / 1e6, 3),
        "median_us": round(float(np.median(us)), 3),
        "mean_us": round(float(us.mean()), 3),
        "p90_us": round(float(np.percentile(us, 90)), 3),
        "invoke_median_us": round(float(np.median(invoke_times / 1e3)), 3),
        "iters": iters,
        "xnnpack": xnnpack,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument(
        "--no-xnnpack",
        action="store_true",
        help="builtin kernels only (no default XNNPACK delegate), like a TFLite built without it",
    )
    parser.add_argument("fixtures", nargs="*", type=pathlib.Path, default=DEFAULT)
    args = parser.parse_args()
    for fixture in args.fixtures:
        for threads in (1, 2):
            result = bench(fixture.resolve(), threads, args.iters, args.warmup, not args.no_xnnpack)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
