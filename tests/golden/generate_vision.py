#!/usr/bin/env python3
"""Generates the image-preprocessing golden fixtures under tests/fixtures/vision/ from transformers'
PIL image processors and Pillow, on real photographs (scikit-image's sample data, fetched with
`scripts/fetch-models.sh images`).

* preprocess/<config>.json: image-processor configs with non-default sizes, filters, crops and
  statistics, as transformers writes them (`save_pretrained`).
* preprocess/<image>__<config>.npy: the `pixel_values` transformers' processor makes of the
  image, `[3, height, width]` float32.
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


def main():
    assert IMAGES.is_dir(), f"{IMAGES}: run scripts/fetch-models.sh images first"
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
