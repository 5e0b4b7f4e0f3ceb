#!/usr/bin/env python3
"""Generates the TensorFlow Lite fixtures under tests/fixtures/tflite/ with TensorFlow.

Three tiny random-weight models, each converted to a .tflite flatbuffer whose single signature
("serving_default") has clean input/output names:
  * float_cnn/        float32 CNN: image [1,16,16,3] -> conv(8,3x3)+relu, maxpool 2x2,
                      conv(16,3x3)+relu, global average pool, dense -> logits [1,10].
                      Also a Hugging Face style preprocessor_config.json.
  * embedding_dense/  int32 input_ids [1,8] -> embedding(100,16), mean over the sequence,
                      dense(32)+relu, dense(4) -> float32 logits [1,4]. Also a config.json
                      with id2label/label2id.
  * int8_cnn/         the same kind of CNN as float_cnn (its own weights), full-integer
                      quantised (int8 input image, int8 output logits) from a deterministic
                      representative dataset.

Each fixture directory holds:
  model.tflite
  inputs/<signature input name>.npy     a deterministic input in the model's input dtype
  outputs/<signature output name>.npy   tf.lite.Interpreter's output (num_threads=1), raw dtype
  reference.json                        TF version, and per signature input/output: name, tensor
                                        name, dtype, shape, quantisation scale/zero point (null
                                        when not quantised)
int8_cnn additionally holds float_inputs/image.npy (the float image that inputs/image.npy
quantises, rounding half away from zero) and float_outputs/logits.npy (the int8 output
dequantised in float32).

usage: python3 tests/golden/generate_tflite.py   (versions: tests/golden/requirements-tflite.txt)
"""
import json
import pathlib
import shutil
import warnings

import numpy as np
import tensorflow as tf

OUT = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "tflite"
SEED = 20260501
IMAGE = (1, 16, 16, 3)
SEQ = 8
VOCAB = 100
CLASSES = 10

# tf.lite.Interpreter warns that it moves to ai_edge_litert in TF 2.20; it is what 2.19 ships.
warnings.filterwarnings("ignore", message=r"\s*Warning: tf.lite.Interpreter is deprecated")


def he(rng, shape, fan_in):
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def small(rng, shape):
    return (0.1 * rng.standard_normal(shape)).astype(np.float32)


class Cnn(tf.Module):
    def __init__(self, rng):
        super().__init__()
        self.w1 = tf.Variable(he(rng, (3, 3, 3, 8), 27), name="conv1_w")
        self.b1 = tf.Variable(small(rng, (8,)), name="conv1_b")
        self.w2 = tf.Variable(he(rng, (3, 3, 8, 16), 72), name="conv2_w")
        self.b2 = tf.Variable(small(rng, (16,)), name="conv2_b")
        self.w3 = tf.Variable(he(rng, (16, CLASSES), 16), name="dense_w")
        self.b3 = tf.Variable(small(rng, (CLASSES,)), name="dense_b")

    @tf.function(input_signature=[tf.TensorSpec(IMAGE, tf.float32, name="image")])
    def serve(self, image):
        x = tf.nn.relu(tf.nn.conv2d(image, self.w1, 1, "SAME") + self.b1)
        x = tf.nn.max_pool2d(x, 2, 2, "VALID")
        x = tf.nn.relu(tf.nn.conv2d(x, self.w2, 1, "SAME") + self.b2)
        x = tf.reduce_mean(x, axis=[1, 2])
        return {"logits": tf.matmul(x, self.w3) + self.b3}


class EmbeddingDense(tf.Module):
    def __init__(self, rng):
        super().__init__()
        self.table = tf.Variable(rng.standard_normal((VOCAB, 16)).astype(np.float32), name="embedding")
        self.w1 = tf.Variable(he(rng, (16, 32), 16), name="dense1_w")
        self.b1 = tf.Variable(small(rng, (32,)), name="dense1_b")
        self.w2 = tf.Variable(he(rng, (32, 4), 32), name="dense2_w")
        self.b2 = tf.Variable(small(rng, (4,)), name="dense2_b")

    @tf.function(input_signature=[tf.TensorSpec((1, SEQ), tf.int32, name="input_ids")])
    def serve(self, input_ids):
        x = tf.reduce_mean(tf.gather(self.table, input_ids), axis=1)
        x = tf.nn.relu(tf.matmul(x, self.w1) + self.b1)
        return {"logits": tf.matmul(x, self.w2) + self.b2}


def convert(module, representative=None):
    fn = module.serve.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], module)
    if representative is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def quant_params(details):
    scale, zero_point = details["quantization"]
    if scale == 0.0:
        return None, None
    return float(scale), int(zero_point)


def describe(name, details):
    scale, zero_point = quant_params(details)
    return {
        "name": name,
        "tensor": details["name"],
        "dtype": np.dtype(details["dtype"]).name,
        "shape": [int(d) for d in details["shape"]],
        "scale": scale,
        "zero_point": zero_point,
    }


def quantize(x, scale, zero_point):
    """Float -> int8, rounding half away from zero (computed in float64)."""
    v = x.astype(np.float64) / scale
    r = np.sign(v) * np.floor(np.abs(v) + 0.5) + zero_point
    return np.clip(r, -128, 127).astype(np.int8)


def dequantize(q, scale, zero_point):
    return (q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"))))


def write_fixture(root, tflite_bytes, make_input, extra_files):
    """Writes the model and its reference data; make_input(input_details) -> (input, extra)."""
    root.mkdir(parents=True)
    model_path = root / "model.tflite"
    model_path.write_bytes(tflite_bytes)
    for name, content in extra_files.items():
        (root / name).write_text(json.dumps(content, indent=2) + "\n")

    interpreter = tf.lite.Interpreter(model_path=str(model_path), num_threads=1)
    signatures = interpreter.get_signature_list()
    print(f"{root.name}: signatures {signatures}")
    assert list(signatures) == ["serving_default"], signatures
    runner = interpreter.get_signature_runner("serving_default")
    in_details = runner.get_input_details()
    out_details = runner.get_output_details()
    (in_name,) = in_details
    (out_name,) = out_details

    x, extra = make_input(in_details[in_name])
    assert x.dtype == in_details[in_name]["dtype"], (x.dtype, in_details[in_name]["dtype"])
    assert list(x.shape) == list(in_details[in_name]["shape"])
    y = runner(**{in_name: x})[out_name]
    assert y.dtype == out_details[out_name]["dtype"]
    save(root / "inputs" / f"{in_name}.npy", x)
    save(root / "outputs" / f"{out_name}.npy", y)

    reference = {
        "tensorflow": tf.__version__,
        "inputs": [describe(in_name, in_details[in_name])],
        "outputs": [describe(out_name, out_details[out_name])],
    }
    if extra is not None:
        fx, x_params = extra
        save(root / "float_inputs" / f"{in_name}.npy", fx)
        out_scale, out_zp = quant_params(out_details[out_name])
        save(root / "float_outputs" / f"{out_name}.npy", dequantize(y, out_scale, out_zp))
        print(f"  input  {in_name}: scale={x_params[0]!r} zero_point={x_params[1]}")
        print(f"  output {out_name}: scale={out_scale!r} zero_point={out_zp}")
    (root / "reference.json").write_text(json.dumps(reference, indent=2) + "\n")
    print(f"  {in_name} {x.dtype}{list(x.shape)} -> {out_name} {y.dtype}{list(y.shape)}: {y.ravel()[:6]}")


def float_image(rng):
    return rng.uniform(-1.0, 1.0, IMAGE).astype(np.float32)


def main():
    tf.keras.utils.set_random_seed(SEED)
    rng = np.random.default_rng(SEED)
    if OUT.exists():
        shutil.rmtree(OUT)

    # a. float CNN
    cnn = Cnn(rng)
    image = float_image(rng)
    write_fixture(
        OUT / "float_cnn",
        convert(cnn),
        lambda d: (image, None),
        {
            "preprocessor_config.json": {
                "do_normalize": True,
                "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.5, 0.5, 0.5],
                "do_resize": True,
                "size": {"height": 16, "width": 16},
                "do_rescale": True,
                "rescale_factor": 0.00392156862745098,
            }
        },
    )

    # b. embedding + dense
    emb = EmbeddingDense(rng)
    ids = rng.integers(0, VOCAB, (1, SEQ)).astype(np.int32)
    labels = ["a", "b", "c", "d"]
    write_fixture(
        OUT / "embedding_dense",
        convert(emb),
        lambda d: (ids, None),
        {
            "config.json": {
                "model_type": "embedding-classifier",
                "id2label": {str(i): l for i, l in enumerate(labels)},
                "label2id": {l: i for i, l in enumerate(labels)},
            }
        },
    )

    # c. full-integer int8 CNN
    cnn8 = Cnn(rng)
    calibration = [float_image(rng) for _ in range(50)]

    def representative():
        for sample in calibration:
            yield [sample]

    image8 = float_image(rng)

    def quantized_input(details):
        scale, zero_point = quant_params(details)
        return quantize(image8, scale, zero_point), (image8, (scale, zero_point))

    write_fixture(OUT / "int8_cnn", convert(cnn8, representative), quantized_input, {})


if __name__ == "__main__":
    main()
