#!/usr/bin/env python3
"""The PyTorch side of scripts/bench_vision.sh, and the model it benchmarks.

  bench_vision.py make DIR          ViT-B/16-sized random model (transformers' default ViTConfig)
                                    and its ViTImageProcessor, saved in the Hugging Face layout
  bench_vision.py run DIR PHOTOS... --threads N
                                    prints JSON: PyTorch eager images/s on a batch of 8 photos
                                    and transformers' PIL processor images/s (decode included)
"""
import json
import sys
import time

import torch
from PIL import Image
from transformers import ViTConfig, ViTImageProcessorPil, ViTModel


def median_rate(fn, items, repeats):
    fn()  # warm up
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        rates.append(items / (time.perf_counter() - t))
    rates.sort()
    return rates[len(rates) // 2]


def main():
    if sys.argv[1] == "make":
        torch.manual_seed(0)
        ViTModel(ViTConfig()).save_pretrained(sys.argv[2], safe_serialization=True)
        ViTImageProcessorPil().save_pretrained(sys.argv[2])
        return
    args = sys.argv[2:]
    threads = int(args[args.index("--threads") + 1])
    photos = [a for a in args[1:] if a != "--threads" and a != str(threads)]
    torch.set_num_threads(threads)
    model = ViTModel.from_pretrained(args[0]).eval()
    proc = ViTImageProcessorPil.from_pretrained(args[0])
    pixels = proc([Image.open(p).convert("RGB") for p in photos[:8]],
                  return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        out = model(pixel_values=pixels).last_hidden_state
        assert tuple(out.shape) == (8, 197, 768), out.shape
        forward = median_rate(lambda: model(pixel_values=pixels), 8, 7)
    def preprocess_batch():
        batch = proc([Image.open(p).convert("RGB") for p in photos], return_tensors="np")
        assert batch["pixel_values"].shape == (len(photos), 3, 224, 224)
    preprocess = median_rate(preprocess_batch, len(photos), 7)
    print(json.dumps({"vit_base_batch8_images_per_s": forward,
                      "preprocess_images_per_s": preprocess}))


if __name__ == "__main__":
    main()
