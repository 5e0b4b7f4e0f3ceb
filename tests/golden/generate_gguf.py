#!/usr/bin/env python3
"""Generates the GGUF golden fixtures under tests/fixtures/gguf/.

A tiny random Llama (hidden 256, so that K-quants apply) and a tiny Qwen2 (q/k/v biases, the
non-interleaved rotary layout), with a SentencePiece BPE tokenizer trained here, are written as
GGUF files with gguf-py (llama.cpp's own writer) in several quantization types:
  * llama-mixed.gguf:   Q4_0, Q4_1, Q5_0, Q8_0, F16 and F32 tensors (quantized by gguf-py);
  * llama-kquants.gguf: Q4_K, Q5_K and Q6_K tensors (quantized by llama.cpp's quantizer);
  * llama-lowbits.gguf: Q2_K and Q3_K tensors (llama.cpp's quantizer) and Q5_1 (gguf-py);
  * qwen2-q8_0.gguf:    Q8_0 weights with F32 biases.
Reference logits come from llama.cpp itself (llama-cpp-python, float32 KV cache), reference token
ids from the sentencepiece library.

usage: python3 tests/golden/generate_gguf.py   (needs gguf, sentencepiece, llama-cpp-python)
"""
import json
import pathlib
import shutil
import tempfile

import gguf
import llama_cpp
import numpy as np
import sentencepiece as spm
from gguf import GGMLQuantizationType as T

OUT = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "gguf"
CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome.",
    "Once upon a time there was a small robot who loved to read books about the sea.",
    "def add(a, b):\n    return a + b",
    "Numbers 0 1 2 3 42 3.14 and dates 2026-11-21.",
] * 30
TEXTS = ["Hello world", "The capital of France is", "  two  spaces", "line\nbreak",
         "café naïve 東京 🙂", "Once upon a time", ""]
PROMPT = "Once upon a time there was"
VOCAB = 400
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def train_spm(prefix):
    text = pathlib.Path(prefix + ".txt")
    text.write_text("\n".join(CORPUS))
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=prefix, vocab_size=VOCAB, model_type="bpe",
                                   byte_fallback=True, character_coverage=1.0, bos_id=1, eos_id=2, unk_id=0,
                                   pad_id=-1, minloglevel=2,
                                   # As Llama's own SentencePiece model: no normalisation.
                                   remove_extra_whitespaces=False, normalization_rule_name="identity")
    return spm.SentencePieceProcessor(model_file=prefix + ".model")


def permute(w, n_head):
    """llama.cpp's reordering of q/k rows for adjacent-pair rotation (convert_hf_to_gguf.py)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def random_weights(rng, cfg, biases):
    h, f, v = cfg["hidden"], cfg["ffn"], VOCAB
    kv = cfg["kv_heads"] * (h // cfg["heads"])
    w = {"token_embd.weight": rng.standard_normal((v, h)) * 0.5,
         "output_norm.weight": 1 + 0.2 * rng.standard_normal(h),
         "output.weight": rng.standard_normal((v, h)) * 0.1}
    for i in range(cfg["layers"]):
        b = f"blk.{i}."
        w.update({b + "attn_norm.weight": 1 + 0.2 * rng.standard_normal(h),
                  b + "attn_q.weight": rng.standard_normal((h, h)) * 0.08,
                  b + "attn_k.weight": rng.standard_normal((kv, h)) * 0.08,
                  b + "attn_v.weight": rng.standard_normal((kv, h)) * 0.08,
                  b + "attn_output.weight": rng.standard_normal((h, h)) * 0.08,
                  b + "ffn_norm.weight": 1 + 0.2 * rng.standard_normal(h),
                  b + "ffn_gate.weight": rng.standard_normal((f, h)) * 0.08,
                  b + "ffn_up.weight": rng.standard_normal((f, h)) * 0.08,
                  b + "ffn_down.weight": rng.standard_normal((h, f)) * 0.08})
        if biases:
            w.update({b + "attn_q.bias": rng.standard_normal(h) * 0.2,
                      b + "attn_k.bias": rng.standard_normal(kv) * 0.2,
                      b + "attn_v.bias": rng.standard_normal(kv) * 0.2})
    return {k: v.astype(np.float32) for k, v in w.items()}


def write_gguf(path, arch, cfg, sp, weights, types):
    w = gguf.GGUFWriter(str(path), arch)
    h = cfg["hidden"]
    w.add_name(f"inferox tiny {arch}")
    w.add_context_length(128)
    w.add_embedding_length(h)
    w.add_block_count(cfg["layers"])
    w.add_feed_forward_length(cfg["ffn"])
    w.add_head_count(cfg["heads"])
    w.add_head_count_kv(cfg["kv_heads"])
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(h // cfg["heads"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list([sp.id_to_piece(i).encode() for i in range(sp.get_piece_size())])
    w.add_token_scores([sp.get_score(i) for i in range(sp.get_piece_size())])
    types_ = []
    for i in range(sp.get_piece_size()):
        if sp.is_unknown(i):
            types_.append(gguf.TokenType.UNKNOWN)
        elif sp.is_control(i):
            types_.append(gguf.TokenType.CONTROL)
        elif sp.is_byte(i):
            types_.append(gguf.TokenType.BYTE)
        else:
            types_.append(gguf.TokenType.NORMAL)
    w.add_token_types(types_)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_chat_template(CHAT_TEMPLATE)
    for name, data in weights.items():
        if arch == "llama" and ("attn_q.weight" in name or "attn_k.weight" in name):
            heads = cfg["heads"] if "attn_q" in name else cfg["kv_heads"]
            data = permute(data, heads)
        t = T.F32 if data.ndim == 1 else types.get(name, T.F32)
        if t in (T.F32, T.F16):
            w.add_tensor(name, data.astype(np.float32 if t == T.F32 else np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(data, t), raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def copy_with_types(src_files, dst, picks):
    """A GGUF whose tensors come from several llama.cpp-quantized files (raw bytes copied)."""
    readers = {k: gguf.GGUFReader(str(v)) for k, v in src_files.items()}
    base = readers["base"]
    w = gguf.GGUFWriter(str(dst), "llama")
    for field in base.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_key_value(field.name, field.contents(), vtype, sub_type=field.types[-1])
        else:
            w.add_key_value(field.name, field.contents(), vtype)
    for t in base.tensors:
        src = readers[picks(t.name)]
        st = next(x for x in src.tensors if x.name == t.name)
        w.add_tensor(st.name, st.data, raw_dtype=st.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama_cpp_reference(path, ids):
    m = llama_cpp.Llama(model_path=str(path), logits_all=True, n_ctx=128, n_threads=1, verbose=False,
                        type_k=0, type_v=0)  # float32 KV cache
    m.reset()
    m.eval(ids)
    return np.array(m.scores[: len(ids)], dtype=np.float32)


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    tmp = pathlib.Path(tempfile.mkdtemp())
    sp = train_spm(str(tmp / "spm"))
    rng = np.random.default_rng(7)
    llama = dict(hidden=256, ffn=256, layers=2, heads=4, kv_heads=2)
    qwen = dict(hidden=64, ffn=128, layers=2, heads=4, kv_heads=2)
    lw = random_weights(rng, llama, biases=False)

    mixed = {"token_embd.weight": T.Q8_0, "output.weight": T.F16,
             "blk.0.attn_q.weight": T.Q4_0, "blk.0.attn_k.weight": T.Q4_1, "blk.0.attn_v.weight": T.Q5_0,
             "blk.0.attn_output.weight": T.Q8_0, "blk.0.ffn_gate.weight": T.Q4_1, "blk.0.ffn_up.weight": T.Q4_0,
             "blk.0.ffn_down.weight": T.Q8_0, "blk.1.attn_q.weight": T.Q8_0, "blk.1.attn_k.weight": T.Q5_0,
             "blk.1.attn_v.weight": T.Q4_1, "blk.1.attn_output.weight": T.F16, "blk.1.ffn_gate.weight": T.Q5_0,
             "blk.1.ffn_up.weight": T.Q4_1, "blk.1.ffn_down.weight": T.Q4_0}
    write_gguf(OUT / "llama-mixed.gguf", "llama", llama, sp, lw, mixed)

    f32 = tmp / "llama-f32.gguf"
    write_gguf(f32, "llama", llama, sp, lw, {})
    quantized = {}
    for name, ftype in [("q4km", llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M), ("q5km", llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M)]:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = ftype
        quantized[name] = tmp / f"llama-{name}.gguf"
        assert llama_cpp.llama_model_quantize(str(f32).encode(), str(quantized[name]).encode(), params) == 0
    # Q4_K and Q6_K from Q4_K_M, Q5_K from Q5_K_M, the rest as llama.cpp left them.
    copy_with_types({"base": quantized["q4km"], "q5": quantized["q5km"]}, OUT / "llama-kquants.gguf",
                    lambda n: "q5" if ("attn_output" in n or "ffn_up" in n) else "base")

    # Q2_K and Q3_K from llama.cpp's Q2_K and Q3_K_M mixes, Q5_1 from gguf-py.
    for name, ftype in [("q2k", llama_cpp.LLAMA_FTYPE_MOSTLY_Q2_K), ("q3km", llama_cpp.LLAMA_FTYPE_MOSTLY_Q3_K_M)]:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = ftype
        quantized[name] = tmp / f"llama-{name}.gguf"
        assert llama_cpp.llama_model_quantize(str(f32).encode(), str(quantized[name]).encode(), params) == 0
    quantized["q5_1"] = tmp / "llama-q5_1.gguf"
    write_gguf(quantized["q5_1"], "llama", llama, sp, lw,
               {n: T.Q5_1 for n in lw if n.endswith(".weight") and lw[n].ndim == 2})
    copy_with_types({"base": quantized["q2k"], "q3": quantized["q3km"], "q5_1": quantized["q5_1"]},
                    OUT / "llama-lowbits.gguf",
                    lambda n: "q5_1" if "attn_v" in n else "q3" if ("attn_q" in n or "ffn_gate" in n) else "base")

    qw = random_weights(rng, qwen, biases=True)
    write_gguf(OUT / "qwen2-q8_0.gguf", "qwen2", qwen, sp, qw,
               {n: T.Q8_0 for n in qw if n.endswith(".weight") and qw[n].ndim == 2})

    ids = sp.encode(PROMPT)
    ids = [1] + ids  # add_bos_token
    reference = {"prompt": PROMPT, "prompt_ids": ids,
                 "tokenization": {t: sp.encode(t) for t in TEXTS}, "files": {}}
    check = llama_cpp.Llama(model_path=str(OUT / "llama-mixed.gguf"), vocab_only=True, verbose=False)
    for t in TEXTS:
        assert check.tokenize(t.encode(), add_bos=False) == sp.encode(t), t
    for f in ["llama-mixed.gguf", "llama-kquants.gguf", "llama-lowbits.gguf", "qwen2-q8_0.gguf"]:
        logits = llama_cpp_reference(OUT / f, ids)
        np.save(OUT / f.replace(".gguf", ".logits.npy"), logits)
        r = gguf.GGUFReader(str(OUT / f))
        types = sorted({t.tensor_type.name for t in r.tensors})
        reference["files"][f] = {"types": types}
        print(f, types, (OUT / f).stat().st_size, "bytes")
    (OUT / "reference.json").write_text(json.dumps(reference, indent=1, ensure_ascii=False) + "\n")
    (OUT / "VERSIONS").write_text(
        f"gguf-py {getattr(gguf, '__version__', '0.19.0')}\nllama-cpp-python {llama_cpp.__version__}\n"
        f"sentencepiece {spm.__version__}\n")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
