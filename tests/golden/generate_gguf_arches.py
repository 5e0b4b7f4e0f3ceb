#!/usr/bin/env python3
"""Generates the GGUF fixtures of the Gemma 2, Gemma 3 and Phi-3 architectures under
tests/fixtures/gguf/.

Each is a tiny random-weight model made by transformers (`from_config`), saved in the Hugging Face
layout with a SentencePiece tokenizer trained here (generate_gguf.py's), then converted by
llama.cpp's own `convert_hf_to_gguf.py`, twice:
  * to F32, whose llama.cpp logits must equal transformers' (a check of this pipeline, not saved);
  * to F16 (OUTTYPE), the fixture `<arch>-f16.gguf`, with llama.cpp's logits
    `<arch>-f16.logits.npy`. (Q8_0 conversions of these tiny Gemmas crash llama.cpp 0.3.36's
    CPU backend in `llama_decode`; the quantized kernels have fixtures of their own.)
The windows are 4 tokens, so the prompt reaches past them; Gemma 3 has six layers, five sliding
(RoPE base 10000) and one global (base 1e6); Gemma 2 soft-caps attention and logits; Phi-3 rotates
half of each head, and a second Phi-3 uses LongRoPE. Phi-3 has no window here: llama.cpp ignores Phi-3's (transformers applies it;
tests/fixtures/decoders/phi3 covers that).

usage: python3 tests/golden/generate_gguf_arches.py LLAMA_CPP_SOURCE_DIR
       (the llama.cpp tree llama-cpp-python 0.3.36 vendors: its sdist's vendor/llama.cpp;
        versions: tests/golden/requirements.txt)
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from generate_gguf import PROMPT, VOCAB, train_spm  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "gguf"
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=128, bos_token_id=1, eos_token_id=2,
              pad_token_id=0)
OUTTYPE = "f16"
CASES = [
    dict(name="gemma2", cls="Gemma2ForCausalLM",
         cfg=dict(model_type="gemma2", num_hidden_layers=2, head_dim=16, query_pre_attn_scalar=16,
                  sliding_window=4, attn_logit_softcapping=3.0, final_logit_softcapping=5.0)),
    dict(name="gemma3", cls="Gemma3ForCausalLM",
         cfg=dict(model_type="gemma3_text", num_hidden_layers=6, head_dim=16, query_pre_attn_scalar=16,
                  sliding_window=4,
                  rope_parameters=dict(full_attention=dict(rope_type="default", rope_theta=1e6),
                                       sliding_attention=dict(rope_type="default", rope_theta=10000.0)))),
    dict(name="phi3", cls="Phi3ForCausalLM",
         cfg=dict(model_type="phi3", num_hidden_layers=2, sliding_window=None,
                  original_max_position_embeddings=128,
                  rope_parameters=dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.5))),
    # LongRoPE over an original context of 8: the 11-token prompt runs on the long factors in
    # transformers (its furthest position passes 8) and in llama.cpp (its context, 128, does).
    dict(name="phi3_longrope", cls="Phi3ForCausalLM",
         cfg=dict(model_type="phi3", num_hidden_layers=2, sliding_window=None,
                  original_max_position_embeddings=8,
                  rope_parameters=dict(rope_type="longrope", rope_theta=10000.0, partial_rotary_factor=0.5,
                                       original_max_position_embeddings=8,
                                       short_factor=[1.0, 1.1, 1.3, 1.6], long_factor=[1.5, 2.5, 4.0, 8.0]))),
]


def convert(converter, model_dir, out, outtype):
    # The converter runs with the gguf-py of its own tree.
    env = dict(os.environ, PYTHONPATH=str(converter.parent / "gguf-py"))
    r = subprocess.run([sys.executable, str(converter), str(model_dir), "--outfile", str(out), "--outtype", outtype,
                        # Not "phi3": llama.cpp then looks up Phi-3's <|endoftext|> in the vocabulary.
                        "--model-name", "inferox tiny"],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]


def llama_cpp_logits(path, ids):
    """llama.cpp's logits, from a process of their own: llama.cpp beside torch crashes."""
    out = path.with_suffix(".tmp.npy")
    subprocess.run([sys.executable, __file__, "--llama-cpp", str(path), json.dumps(ids), str(out)], check=True)
    logits = np.load(out)
    out.unlink()
    return logits


def llama_cpp_run(path, ids, out):
    import llama_cpp
    m = llama_cpp.Llama(model_path=str(path), logits_all=True, n_ctx=128, n_threads=1, verbose=False,
                        type_k=0, type_v=0, swa_full=True)  # float32 KV cache, every position kept
    m.reset()
    m.eval(ids)
    np.save(out, np.array(m.scores[: len(ids)], dtype=np.float32))


def main():
    import torch
    import transformers
    from generate_decoders import randomize
    source = pathlib.Path(sys.argv[1])
    converter = source / "convert_hf_to_gguf.py"
    assert converter.is_file(), f"{converter} not found"
    tmp = pathlib.Path(tempfile.mkdtemp())
    sp = train_spm(str(tmp / "spm"))
    ids = [1] + sp.encode(PROMPT)
    reference = json.loads((OUT / "reference.json").read_text())
    assert ids == reference["prompt_ids"], "the trained tokenizer differs from generate_gguf.py's"
    for i, case in enumerate(CASES):
        cfg = dict(COMMON)
        cfg.update({k: v for k, v in case["cfg"].items() if k != "model_type"})
        config = transformers.AutoConfig.for_model(case["cfg"]["model_type"], **cfg)
        model = getattr(transformers, case["cls"])(config).eval()
        # Gemma's norms scale by (1 + w): keep the scale near 1 for both conventions.
        center = 0.0 if case["cfg"]["model_type"].startswith("gemma") else 1.0
        randomize(model, seed=500 + i, scale=0.08, norm_center=center)
        model_dir = tmp / case["name"]
        model.save_pretrained(model_dir, safe_serialization=True)
        shutil.copy(tmp / "spm.model", model_dir / "tokenizer.model")
        with torch.no_grad():
            want = model(input_ids=torch.tensor([ids])).logits[0].numpy()

        f32 = tmp / f"{case['name']}-f32.gguf"
        convert(converter, model_dir, f32, "f32")
        got = llama_cpp_logits(f32, ids)
        # Relative to the largest logit: ggml's GELU goes through a float16 table.
        err = float(np.abs(got - want).max() / np.abs(want).max())
        assert err < 1e-3, f"{case['name']}: llama.cpp (f32) and transformers differ by {err} (relative)"

        name = f"{case['name']}-{OUTTYPE}.gguf"
        convert(converter, model_dir, OUT / name, OUTTYPE)
        logits = llama_cpp_logits(OUT / name, ids)
        np.save(OUT / name.replace(".gguf", ".logits.npy"), logits)
        reference["files"][name] = {"types": ["F32", OUTTYPE.upper()], "transformers_f32_error": err}
        print(f"{name}: {(OUT / name).stat().st_size} bytes; llama.cpp f32 vs transformers {err:.2e} (relative); "
              f"{OUTTYPE} vs transformers {float(np.abs(logits - want).max()):.2e}")
    (OUT / "reference.json").write_text(json.dumps(reference, indent=1, ensure_ascii=False) + "\n")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    if sys.argv[1] == "--llama-cpp":
        llama_cpp_run(sys.argv[2], json.loads(sys.argv[3]), sys.argv[4])
    else:
        main()
