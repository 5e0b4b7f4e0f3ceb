#!/usr/bin/env python3
"""The reference side of scripts/bench_decoders.sh.

  llama   MODEL.gguf --threads N   llama.cpp (llama-cpp-python): a 130-token prompt, then 128 tokens
                                   decoded one at a time; prints prompt and decode tokens/s
  gpt2-make DIR                    writes a GPT-2 small with random weights (transformers' default
                                   config) and the test tokenizer into DIR
  gpt2    DIR --threads N          transformers generate (greedy, KV cache) of 128 tokens after a
                                   short prompt; prints decode tokens/s
All output is one JSON line.
"""
import json
import pathlib
import shutil
import sys
import time

PROMPT_TEXT = "The quick brown fox jumps over the lazy dog. " * 13


def llama(path, threads):
    from llama_cpp import Llama
    m = Llama(model_path=path, n_ctx=512, n_threads=threads, n_threads_batch=threads, verbose=False)
    ids = m.tokenize(PROMPT_TEXT.encode(), add_bos=False)
    m.reset()
    m.eval(ids[:8])  # warm-up
    m.reset()
    t = time.perf_counter()
    m.eval(ids)
    prompt = time.perf_counter() - t
    n_prompt = len(ids)
    m.reset()
    m.eval(ids[:4])
    t = time.perf_counter()
    for i in range(128):
        m.eval([100 + i])
    decode = time.perf_counter() - t
    return {"prompt_tokens": n_prompt, "prompt_tokens_per_s": n_prompt / prompt, "decode_tokens_per_s": 128 / decode}


def gpt2_make(out):
    import torch
    import transformers
    out = pathlib.Path(out)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval()
    model.save_pretrained(out, safe_serialization=True)
    here = pathlib.Path(__file__).resolve().parent.parent
    shutil.copy(here / "tests/fixtures/decoders/gpt2/model/tokenizer.json", out / "tokenizer.json")
    return {"parameters": sum(p.numel() for p in model.parameters())}


def gpt2(path, threads):
    import torch
    import transformers
    from tokenizers import Tokenizer
    torch.set_num_threads(threads)
    model = transformers.GPT2LMHeadModel.from_pretrained(path).eval()
    ids = torch.tensor([Tokenizer.from_file(str(pathlib.Path(path) / "tokenizer.json")).encode("Once upon a time").ids])
    kwargs = dict(do_sample=False, use_cache=True, pad_token_id=0, eos_token_id=None)
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=8, min_new_tokens=8, **kwargs)  # warm-up
        t = time.perf_counter()
        model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kwargs)
        first = time.perf_counter() - t
        t = time.perf_counter()
        out = model.generate(ids, max_new_tokens=129, min_new_tokens=129, **kwargs)
        total = time.perf_counter() - t
    assert out.shape[1] - ids.shape[1] == 129
    return {"decode_tokens_per_s": 128 / (total - first), "torch": torch.__version__}


if __name__ == "__main__":
    cmd, arg = sys.argv[1], sys.argv[2]
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    result = {"llama": lambda: llama(arg, threads), "gpt2-make": lambda: gpt2_make(arg),
              "gpt2": lambda: gpt2(arg, threads)}[cmd]()
    print(json.dumps(result))
