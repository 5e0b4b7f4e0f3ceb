#!/usr/bin/env python3
"""Generates the image-preprocessing golden fixtures under tests/fixtures/vision/ from transformers'
PIL image processors and Pillow, on real photographs (scikit-image's sample data, fetched with
`scripts/fetch-models.sh images`).

* preprocess/<config>.json: image-processor configs with non-default sizes, filters, crops and
  statistics, as transformers writes them (`save_pretrained`).
* preprocess/<image>__<config>.npy: the `pixel_values` transformers' processor makes of the
  image, `[3, height, width]` float32.
* <model>/: tiny random ViT and ResNet models (transformers' `from_config`, weights scaled up so every
  part matters) in the Hugging Face layout with their image processor; inputs/pixel_values.npy
  is what the processor makes of the photos in photos.json, expected/*.npy the model's outputs;
  inputs_48x40/ and expected_48x40/ the same at another size, with interpolate_pos_encoding.
* preprocess/resize.json: sha256 of Pillow's `Image.resize` of every photo (converted to RGB) to
  224x224 and 97x131 with every filter; the Rust resampler must match them byte for byte.

usage: python3 tests/golden/generate_vision.py   (versions: tests/golden/requirements.txt)
"""
import hashlib
import json
import os
import pathlib
import shutil

import numpy as np
import PIL
import torch
import transformers
from PIL import Image
from transformers import CLIPImageProcessorPil, ConvNextImageProcessorPil, ViTImageProcessorPil

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "vision"
IMAGES = pathlib.Path(os.environ.get("INFEROX_MODELS", pathlib.Path.home() / ".cache/inferox/models")) \
    / "images/skimage/data"
PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "camera.png", "rocket.jpg", "retina.jpg",
          "logo.png", "no_time_for_that_tiny.gif"]

# Image-processor configs: every field the Rust reader interprets, away from its defaults.
PROCESSORS = {
    "vit_bilinear": ViTImageProcessorPil(size={"height": 32, "width": 40}),
    "vit_nearest_raw": ViTImageProcessorPil(size={"height": 30, "width": 30}, resample=0,
                                            do_normalize=False),
    "vit_lanczos": ViTImageProcessorPil(size={"height": 28, "width": 28}, resample=1,
                                        image_mean=[0.2, 0.4, 0.6], image_std=[0.3, 0.2, 0.1]),
    "vit_box_unscaled": ViTImageProcessorPil(size={"height": 24, "width": 20}, resample=4,
                                             do_rescale=False, image_mean=[100, 110, 120],
                                             image_std=[50, 60, 70]),
    "vit_hamming": ViTImageProcessorPil(size={"height": 26, "width": 26}, resample=5),
    "convnext_crop": ConvNextImageProcessorPil(size={"shortest_edge": 32}, crop_pct=0.9,
                                               resample=3, image_mean=[0.485, 0.456, 0.406],
                                               image_std=[0.229, 0.224, 0.225]),
    "clip_crop": CLIPImageProcessorPil(size={"shortest_edge": 36},
                                       crop_size={"height": 30, "width": 32}),
    "clip_larger_crop": CLIPImageProcessorPil(size={"shortest_edge": 20},
                                              crop_size={"height": 24, "width": 24}, resample=2),
}
FILTERS = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}


# Tiny random models: (name, model class, config, image processor, photos of the batch).
MODEL_PHOTOS = ["astronaut.png", "rocket.jpg", "logo.png"]
MODELS = [
    ("vit_classifier", transformers.ViTForImageClassification,
     transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=37, image_size=32, patch_size=8, num_labels=5,
                            id2label={i: f"label {chr(97 + i)}" for i in range(5)},
                            label2id={f"label {chr(97 + i)}": i for i in range(5)}),
     ViTImageProcessorPil(size={"height": 32, "width": 32}, resample=3,
                          image_mean=[0.45, 0.5, 0.55], image_std=[0.22, 0.25, 0.28])),
    ("vit_pooler", transformers.ViTModel,
     transformers.ViTConfig(hidden_size=24, num_hidden_layers=3, num_attention_heads=3,
                            intermediate_size=40, image_size=30, patch_size=6,
                            hidden_act="gelu_new", layer_norm_eps=1e-6),
     CLIPImageProcessorPil(size={"shortest_edge": 34}, crop_size={"height": 30, "width": 30})),
    ("resnet_basic", transformers.ResNetForImageClassification,
     transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 24], depths=[2, 1, 2],
                               layer_type="basic", num_labels=4,
                               id2label={i: f"class {i}" for i in range(4)},
                               label2id={f"class {i}": i for i in range(4)}),
     ConvNextImageProcessorPil(size={"shortest_edge": 48}, crop_pct=0.875, resample=3,
                               image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])),
    ("resnet_bottleneck", transformers.ResNetModel,
     transformers.ResNetConfig(embedding_size=8, hidden_sizes=[16, 32], depths=[2, 2],
                               layer_type="bottleneck", hidden_act="gelu",
                               downsample_in_first_stage=True, downsample_in_bottleneck=True),
     ViTImageProcessorPil(size={"height": 40, "width": 56}, resample=2)),
]


def randomize(model, seed):
    """Replaces the tiny init with larger random values so that errors cannot hide."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            norm = any(k in name for k in ("layernorm", "normalization", "layer_norm", "layrnorm"))
            if norm and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif p.ndim == 4 and "patch" not in name:  # ResNet's convolutions: keep activations of order one through the stages
                p.copy_(noise * (1.5 / p[0].numel()) ** 0.5)
            else:
                p.copy_(0.3 * noise)
        for name, b in model.named_buffers():  # batch-norm statistics
            if name.endswith("running_mean"):
                b.copy_(0.2 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))


def save_npy_dir(d, tensors):
    d.mkdir(parents=True, exist_ok=True)
    for k, v in tensors.items():
        np.save(d / f"{k}.npy", np.ascontiguousarray(v))


def models():
    for seed, (name, cls, config, proc) in enumerate(MODELS):
        root = OUT / name
        shutil.rmtree(root, ignore_errors=True)
        torch.manual_seed(seed)
        model = cls(config).eval()
        randomize(model, seed)
        model.save_pretrained(root / "model", safe_serialization=True)
        proc.save_pretrained(root / "model")
        images = [Image.open(IMAGES / p).convert("RGB") for p in MODEL_PHOTOS]
        pixels = proc(images, return_tensors="np")["pixel_values"]
        save_npy_dir(root / "inputs", {"pixel_values": pixels})
        with torch.no_grad():
            out = model(pixel_values=torch.from_numpy(pixels))
        expected = {k: v.numpy() for k, v in out.items() if isinstance(v, torch.Tensor)}
        save_npy_dir(root / "expected", expected)
        if cls.__name__.startswith("ViT"):
            interpolated(root, model, images)
        (root / "photos.json").write_text(json.dumps(MODEL_PHOTOS) + "\n")
        print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters, "
              f"outputs {sorted(expected)}")


def interpolated(root, model, images):
    """Another size: transformers interpolates the position embeddings when asked to."""
    other = ViTImageProcessorPil(size={"height": 48, "width": 40})(images, return_tensors="np")
    save_npy_dir(root / "inputs_48x40", {"pixel_values": other["pixel_values"]})
    with torch.no_grad():
        out = model(pixel_values=torch.from_numpy(other["pixel_values"]),
                    interpolate_pos_encoding=True)
    save_npy_dir(root / "expected_48x40",
                 {k: v.numpy() for k, v in out.items() if isinstance(v, torch.Tensor)})


CLIP_LABELS = ["a photo of a cat", "a photo of a rocket", "an astronaut", "a cup of coffee",
               "a logo"]


def clip_tokenizer(path):
    """A word-level tokenizer in CLIP's shape: start and end tokens around every text."""
    from tokenizers import Tokenizer, models as tm, normalizers, pre_tokenizers, processors
    words = sorted({w for label in CLIP_LABELS for w in label.split()})
    vocab = ["<pad>", "<unk>", "<|startoftext|>"] + words + ["<|endoftext|>"]
    ids = {w: i for i, w in enumerate(vocab)}
    tok = Tokenizer(tm.WordLevel(ids, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", 2), ("<|endoftext|>", len(vocab) - 1)])
    tok.save(str(path))
    return len(vocab)


def clip_model():
    """A tiny CLIPModel with its tokenizer and image processor; the zero-shot references."""
    root = OUT / "clip"
    shutil.rmtree(root, ignore_errors=True)
    (root / "model").mkdir(parents=True)
    vocab = clip_tokenizer(root / "model" / "tokenizer.json")
    config = transformers.CLIPConfig(
        text_config=dict(vocab_size=vocab, hidden_size=32, intermediate_size=37,
                         num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=16,
                         pad_token_id=0, bos_token_id=2, eos_token_id=vocab - 1),
        vision_config=dict(hidden_size=24, intermediate_size=40, num_hidden_layers=2,
                           num_attention_heads=3, image_size=32, patch_size=8),
        projection_dim=20)
    torch.manual_seed(7)
    model = transformers.CLIPModel(config).eval()
    randomize(model, 7)
    with torch.no_grad():
        model.logit_scale.fill_(np.log(100.0))  # CLIP's trained scale: differences show
    model.save_pretrained(root / "model", safe_serialization=True)
    proc = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    proc.save_pretrained(root / "model")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(root / "model" / "tokenizer.json"),
                                                pad_token="<pad>")
    enc = fast(CLIP_LABELS, padding="longest", return_tensors="np")
    images = [Image.open(IMAGES / p).convert("RGB") for p in MODEL_PHOTOS]
    pixels = proc(images, return_tensors="np")["pixel_values"]
    inputs = {"input_ids": enc["input_ids"].astype(np.int64),
              "attention_mask": enc["attention_mask"].astype(np.int64), "pixel_values": pixels}
    save_npy_dir(root / "inputs", inputs)
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    keep = ("text_embeds", "image_embeds", "logits_per_image", "logits_per_text")
    save_npy_dir(root / "expected", {k: out[k].numpy() for k in keep})
    (root / "photos.json").write_text(json.dumps(MODEL_PHOTOS) + "\n")
    (root / "labels.json").write_text(json.dumps(CLIP_LABELS) + "\n")
    print(f"clip: {sum(p.numel() for p in model.parameters())} parameters, "
          f"logits_per_image {out['logits_per_image'].numpy().round(2).tolist()}")


def main():
    assert IMAGES.is_dir(), f"{IMAGES}: run scripts/fetch-models.sh images first"
    torch.set_num_threads(1)
    models()
    clip_model()
    out = OUT / "preprocess"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name, proc in PROCESSORS.items():
        d = out / f"{name}.tmp"
        proc.save_pretrained(d)
        shutil.move(d / "preprocessor_config.json", out / f"{name}.json")
        shutil.rmtree(d)
        for photo in PHOTOS:
            image = Image.open(IMAGES / photo).convert("RGB")
            pixels = proc(image, return_tensors="np")["pixel_values"][0]
            assert pixels.dtype == np.float32 and pixels.shape[0] == 3, pixels.shape
            np.save(out / f"{photo.split('.')[0]}__{name}.npy", pixels)
    hashes = {}
    for photo in PHOTOS:
        image = Image.open(IMAGES / photo).convert("RGB")
        for fname, code in FILTERS.items():
            for w, h in [(224, 224), (97, 131)]:
                data = np.asarray(image.resize((w, h), resample=code)).tobytes()
                hashes[f"{photo}/{fname}/{w}x{h}"] = hashlib.sha256(data).hexdigest()
    (out / "resize.json").write_text(json.dumps(
        {"pillow": PIL.__version__, "sha256": hashes}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(list(out.iterdir()))} files to {out}")


if __name__ == "__main__":
    main()
