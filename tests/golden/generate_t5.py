#!/usr/bin/env python3
"""Generates the T5-family golden fixtures under tests/fixtures/t5/ from transformers.

Tiny random-weight encoder-decoder models in the Hugging Face layout, sharing a small Unigram
(SentencePiece-like) tokenizer trained here:
  * t5         T5 v1.0: relu feed-forward, lm_head tied to `shared`, decoder output scaled by
               d_model**-0.5; the checkpoint holds no lm_head.weight;
  * t5-v1_1    T5 v1.1 / Flan: gated-gelu, its own lm_head.weight, no output scaling, and more
               decoder layers than encoder layers;
  * mt5        MT5ForConditionalGeneration (model_type mt5): gated-gelu, untied lm_head;
  * t5-legacy  like t5, but the checkpoint also stores lm_head.weight, encoder.embed_tokens.weight
               and decoder.embed_tokens.weight (copies of shared.weight), as old checkpoints did,
               and config.json leaves tie_word_embeddings out (its default is true).
Relative attention uses 8 buckets and a max distance of 20, so that the prompts (13-35 tokens) and
targets (7-26 tokens) reach the logarithmic buckets and the clamped last bucket.

transformers 5.x T5Config/MT5Config always set `tie_word_embeddings = True` (T5 keeps the flag only
as `scale_decoder_outputs`), and a model built from a config ties lm_head to shared. The untied
checkpoints are therefore written here by hand (config.json with "tie_word_embeddings": false,
model.safetensors with a distinct lm_head.weight), and every reference is computed by the model
that `from_pretrained` loads back from the model directory, after checking that its lm_head is
(or is not) shared, as the case says. (from_pretrained unties them when the checkpoint holds
differing lm_head.weight and shared.weight.)

For each case, transformers gives, in reference/:
  * input_ids.npy, attention_mask.npy: a right-padded batch of 4 prompts ending in </s>;
  * decoder_input_ids.npy, decoder_attention_mask.npy: a right-padded batch of 4 targets, each
    decoder_start_token_id (0) followed by the target's tokens (ending in </s>);
  * logits.npy: teacher-forced logits [4, T_dec, vocab] (float32; padded rows are as transformers
    computes them, compare under decoder_attention_mask);
  * logits_bf16_weights.npy: the same logits with every nn.Linear weight (the lm_head included,
    untied from the embedding first) rounded to bfloat16, computed in float64: the model that
    inferox's `--dtype bf16` runs (bf16 weights, float32 activations and sums) up to float32
    rounding;
  * greedy.json: `model.generate(..., max_new_tokens=20, do_sample=False)` on the padded batch,
    without the leading decoder start token, cut after the first </s> (inclusive), plus the decoded
    text; each row is checked against generating that prompt alone and against a cache-free
    argmax loop, whose smallest top-1/top-2 logit gap must exceed 2e-3.

usage: python3 tests/golden/generate_t5.py   (versions: tests/golden/requirements.txt)
"""
import json
import math
import pathlib
import shutil

import numpy as np
import tokenizers
import torch
import transformers
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

OUT = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "t5"
VOCAB = 200
PAD, EOS, UNK = 0, 1, 2
CORPUS = [
    "translate English to German: The house is wonderful. Das Haus ist wunderbar.",
    "translate English to German: The weather is nice today. Das Wetter ist heute schön.",
    "translate English to German: I am reading a book. Ich lese ein Buch.",
    "translate English to German: Where is the train station? Wo ist der Bahnhof?",
    "translate English to French: 12 apples and 3 pears. 12 pommes et 3 poires.",
    "translate English to French: The cat sleeps on the sofa. Le chat dort sur le canapé.",
    "translate English to French: We are going to the market. Nous allons au marché.",
    "summarize: Rust guarantees memory safety without a garbage collector.",
    "summarize: The café on the corner serves naïve robots tea every day at 10:30.",
    "summarize: Researchers trained a small model on a large corpus and measured its accuracy.",
    "Rust is safe without a garbage collector; the café serves robots tea at 10:30 every day.",
    "cola sentence: The cat sat on the mat. acceptable",
    "cola sentence: Mat the on sat cat the. unacceptable",
    "stsb sentence1: A man is playing a guitar. sentence2: A person plays music. 3.8",
    "question: What is the capital of France? context: Paris is the capital of France. answer: Paris",
    "question: How many legs does a spider have? answer: 8",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2026 3.14159",
    "Once upon a time a small robot loved to read books about the sea, the sky and the stars.",
    "The quick brown fox jumps over the lazy dog while the children are laughing.",
    "My naïve friend ordered a crème brûlée and a coffee at the café in Zürich.",
    "Machine translation models learn to map sentences from one language into another.",
    "The encoder reads the input, and the decoder writes the output one token at a time.",
    "She walked along the river, thinking about the mountains she had climbed last summer.",
    "Please remember to water the plants, feed the dog and lock the door before leaving.",
]
PROMPTS = [
    "translate English to German: The house is wonderful.",
    "summarize: The café on the corner serves naïve robots tea at 10:30.",
    "cola sentence: The cat sat.",
    "translate English to French: 12 apples",
]
TARGETS = [
    "Das Haus ist wunderbar.",
    "The café serves naïve robots tea at 10:30.",
    "acceptable",
    "12 pommes et 3 poires",
]


def train_tokenizer(path):
    """A Unigram (SentencePiece-like) tokenizer. The tokenizers trainer picks the pieces; as its
    scores wobble from run to run (about 1e-3, enough to reorder ids), they are replaced by the
    deterministic log frequency of each piece in the pre-tokenized corpus, and ids are assigned in
    order of (score, piece) after the special tokens."""
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=VOCAB, special_tokens=["<pad>", "</s>", "<unk>"],
                                      unk_token="<unk>", show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    specials = ["<pad>", "</s>", "<unk>"]
    pieces = [p for p, _ in json.loads(tok.to_str())["model"]["vocab"] if p not in specials]
    words = [w for line in CORPUS for w, _ in tok.pre_tokenizer.pre_tokenize_str(line)]
    counts = {p: max(1, sum(w.count(p) for w in words)) for p in pieces}
    total = sum(counts.values())
    scored = sorted(((p, round(math.log(c / total), 6)) for p, c in counts.items()), key=lambda x: (-x[1], x[0]))
    tok = Tokenizer(models.Unigram([(p, 0.0) for p in specials] + scored, unk_id=UNK, byte_fallback=False))
    tok.add_special_tokens(specials)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", EOS)])
    assert [tok.token_to_id(t) for t in specials] == [PAD, EOS, UNK]
    tok.save(str(path))
    return tok


def randomize(model, seed):
    """Replaces the init with seeded random values: norms near 1; the shared embedding and the
    attention / feed-forward output projections (o, wo) at unit scale, so that the blocks rather than
    the echo of the (tied) input embedding in the residual stream pick the next token and greedy
    outputs vary; q and k at 0.125 (T5 has no 1/sqrt(d_kv): sharper attention would make float32
    rounding visible in the logits); relative attention biases at unit scale, so that the buckets
    matter; the rest at 0.25."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif (name == "shared.weight" or name.endswith((".o.weight", ".wo.weight"))
                  or "relative_attention_bias" in name):
                p.copy_(noise)
            elif name.endswith((".q.weight", ".k.weight")):
                p.copy_(0.125 * noise)
            else:
                p.copy_(0.25 * noise)


COMMON = dict(vocab_size=VOCAB, d_model=32, d_kv=8, num_heads=4, d_ff=48, relative_attention_num_buckets=8,
              relative_attention_max_distance=20, layer_norm_epsilon=1e-6, dropout_rate=0.0, pad_token_id=PAD,
              eos_token_id=EOS, decoder_start_token_id=PAD)
# Seeds picked (from 300-399) for varied greedy outputs, some ending in </s>, and top-1/top-2 logit
# gaps along the greedy paths above 2e-3, so that float noise cannot flip them.
CASES = [
    dict(name="t5", cls="T5ForConditionalGeneration", model_type="t5", tied=True, legacy=False, seed=393,
         cfg=dict(feed_forward_proj="relu", num_layers=2)),
    dict(name="t5-v1_1", cls="T5ForConditionalGeneration", model_type="t5", tied=False, legacy=False, seed=357,
         cfg=dict(feed_forward_proj="gated-gelu", num_layers=2, num_decoder_layers=3)),
    dict(name="mt5", cls="MT5ForConditionalGeneration", model_type="mt5", tied=False, legacy=False, seed=373,
         cfg=dict(feed_forward_proj="gated-gelu", num_layers=2, num_decoder_layers=2)),
    dict(name="t5-legacy", cls="T5ForConditionalGeneration", model_type="t5", tied=True, legacy=True, seed=343,
         cfg=dict(feed_forward_proj="relu", num_layers=2)),
]


def write_model(case, model, seed, root):
    """Writes config.json, model.safetensors and generation_config.json the way the case's real
    checkpoints look (see the module docstring)."""
    model.config.save_pretrained(root)
    model.generation_config.save_pretrained(root)
    cfg = json.loads((root / "config.json").read_text())
    cfg.pop("scale_decoder_outputs", None)  # transformers 5.x bookkeeping, not in real checkpoints
    cfg["tie_word_embeddings"] = case["tied"]
    if case["legacy"]:
        del cfg["tie_word_embeddings"]
    (root / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")

    shared = model.shared.weight.detach()
    tensors = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
               if k not in ("lm_head.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")}
    if not case["tied"]:
        g = torch.Generator().manual_seed(seed + 1000)
        tensors["lm_head.weight"] = 0.25 * torch.randn(shared.shape, generator=g)
    if case["legacy"]:
        for k in ("lm_head.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            tensors[k] = shared.clone()
    save_file(tensors, str(root / "model.safetensors"), metadata={"format": "pt"})
    return tensors


def load_checked(case, root, tensors):
    """Loads the model directory back and checks it means what the case says."""
    model = getattr(transformers, case["cls"]).from_pretrained(root).eval()
    assert model.config.model_type == case["model_type"]
    lm, shared = model.lm_head.weight, model.shared.weight
    assert torch.equal(shared, tensors["shared.weight"])
    if case["tied"]:
        assert lm.data_ptr() == shared.data_ptr()
    else:
        assert lm.data_ptr() != shared.data_ptr() and not torch.allclose(lm, shared)
        assert torch.equal(lm, tensors["lm_head.weight"])
    if case["model_type"] == "t5":
        assert model.config.scale_decoder_outputs == case["tied"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, tensors[k] if k in tensors else tensors["shared.weight"]), k
    return model


def manual_logits(case, model, enc_ids, enc_mask, dec_ids, dec_mask):
    """Logits from the decoder hidden states and the checkpoint's output matrix, done by hand."""
    out = model(input_ids=enc_ids, attention_mask=enc_mask, decoder_input_ids=dec_ids,
                decoder_attention_mask=dec_mask, output_hidden_states=True)
    h = out.decoder_hidden_states[-1]
    if case["tied"]:
        return (h * model.config.d_model ** -0.5) @ model.shared.weight.T
    return h @ model.lm_head.weight.T


def bf16_weights_logits(case, root, ids, mask, dec_ids, dec_mask):
    """Teacher-forced logits in float64 with each nn.Linear weight rounded to bfloat16."""
    model = getattr(transformers, case["cls"]).from_pretrained(root, dtype=torch.float64).eval()
    # A tied head is the embedding matrix itself: the input embedding stays unrounded.
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.bias is None for m in linears)
    for m in linears:
        m.weight.data = m.weight.data.to(torch.bfloat16).to(torch.float64)
    assert not torch.equal(model.shared.weight, model.lm_head.weight)
    return model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec_ids,
                 decoder_attention_mask=dec_mask).logits


def greedy_generate(model, ids, mask):
    # An explicit, lazily grown cache: the one `generate` builds from the config has num_layers
    # (encoder) layers, too few when num_decoder_layers is larger (transformers 5.23).
    cache = transformers.EncoderDecoderCache(transformers.DynamicCache(), transformers.DynamicCache())
    return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=20, do_sample=False,
                          past_key_values=cache)


def cut(row):
    return row[:row.index(EOS) + 1] if EOS in row else row


def main():
    torch.set_num_threads(2)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    tok_path = OUT / "tokenizer.json"
    tok = train_tokenizer(tok_path)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tok_path), eos_token="</s>", pad_token="<pad>",
                                                unk_token="<unk>", padding_side="right")
    enc = fast(PROMPTS, padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    dec_rows = [[PAD] + tok.encode(t).ids for t in TARGETS]
    width = max(map(len, dec_rows))
    dec_ids = torch.tensor([r + [PAD] * (width - len(r)) for r in dec_rows])
    dec_mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in dec_rows])
    for text, row in zip(PROMPTS + TARGETS, ids.tolist() + dec_ids.tolist()):
        assert UNK not in row, text
        assert fast.decode(row, skip_special_tokens=True) == text, (text, fast.decode(row, skip_special_tokens=True))
    print(f"tokenizer: {tok.get_vocab_size()} tokens; prompt lengths {mask.sum(-1).tolist()}, "
          f"decoder lengths {dec_mask.sum(-1).tolist()}")

    for case in CASES:
        torch.manual_seed(case["seed"])
        cfg = dict(COMMON, **case["cfg"], tie_word_embeddings=case["tied"])
        config = transformers.AutoConfig.for_model(case["model_type"], **cfg)
        built = getattr(transformers, case["cls"])(config).eval()
        randomize(built, case["seed"])
        root = OUT / case["name"]
        (root / "model").mkdir(parents=True)
        tensors = write_model(case, built, case["seed"], root / "model")
        shutil.copy(tok_path, root / "model" / "tokenizer.json")
        model = load_checked(case, root / "model", tensors)
        if not case["tied"]:  # the built model, untied in memory, must agree with the reloaded one
            built.lm_head.weight = torch.nn.Parameter(tensors["lm_head.weight"])

        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec_ids,
                           decoder_attention_mask=dec_mask).logits
            again = built(input_ids=ids, attention_mask=mask, decoder_input_ids=dec_ids,
                          decoder_attention_mask=dec_mask).logits
            assert torch.equal(logits, again), (logits - again).abs().max()
            manual = manual_logits(case, model, ids, mask, dec_ids, dec_mask)
            assert torch.allclose(logits, manual, atol=1e-5, rtol=0), (logits - manual).abs().max()
            exact = getattr(transformers, case["cls"]).from_pretrained(root / "model", dtype=torch.float64)(
                input_ids=ids, attention_mask=mask, decoder_input_ids=dec_ids, decoder_attention_mask=dec_mask).logits
            f32_err = float((logits.double() - exact).abs().max())
            assert f32_err < 2e-5, f32_err  # float32 rounding stays well under the tests' tolerance
            bf16w = bf16_weights_logits(case, root / "model", ids, mask, dec_ids, dec_mask)
            bf16_shift = float((bf16w - exact).abs().max())

            greedy = [cut(row[1:]) for row in greedy_generate(model, ids, mask).tolist()]
            for j, row in enumerate(greedy):
                n = int(mask[j].sum())
                alone = cut(greedy_generate(model, ids[j:j + 1, :n], mask[j:j + 1, :n])[0, 1:].tolist())
                assert alone == row, (case["name"], j, row, alone)
            # the same greedy paths without a KV cache, one full forward per step; the smallest
            # top-1 / top-2 logit gap along them says how far float noise is from flipping a token
            dec = torch.full((len(PROMPTS), 21), PAD)
            gap = float("inf")
            for t in range(20):
                step = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec[:, :t + 1]).logits[:, -1]
                dec[:, t + 1] = step.argmax(-1)
                top2 = step.topk(2, dim=-1).values
                for j, row in enumerate(greedy):
                    if t < len(row):
                        assert dec[j, t + 1] == row[t], (case["name"], j, t)
                        gap = min(gap, float(top2[j, 0] - top2[j, 1]))
            assert gap > 2e-3 and min(len(set(r)) for r in greedy) >= 3, (gap, greedy)
        text = [fast.decode(r, skip_special_tokens=True) for r in greedy]
        ref = root / "reference"
        ref.mkdir()
        np.save(ref / "input_ids.npy", ids.numpy().astype(np.int64))
        np.save(ref / "attention_mask.npy", mask.numpy().astype(np.int64))
        np.save(ref / "decoder_input_ids.npy", dec_ids.numpy().astype(np.int64))
        np.save(ref / "decoder_attention_mask.npy", dec_mask.numpy().astype(np.int64))
        np.save(ref / "logits.npy", logits.numpy().astype(np.float32))
        np.save(ref / "logits_bf16_weights.npy", bf16w.numpy().astype(np.float32))
        (ref / "greedy.json").write_text(json.dumps({"prompts": PROMPTS, "greedy": greedy, "text": text},
                                                    indent=1, ensure_ascii=False) + "\n")
        print(f"{case['name']}: {model.num_parameters()} parameters; greedy lengths {[len(g) for g in greedy]}; "
              f"distinct tokens {[len(set(g)) for g in greedy]}; min top-1/top-2 gap {gap:.4f}; "
              f"float32 vs float64 logits {f32_err:.1e}; bf16 weights move them by {bf16_shift:.1e}")
    tok_path.unlink()
    (OUT / "VERSIONS").write_text(f"torch {torch.__version__}\ntransformers {transformers.__version__}\n"
                                  f"tokenizers {tokenizers.__version__}\n")


if __name__ == "__main__":
    main()
