"""`inferox serve` through the clients users have: tritonclient[http] and openai, from PyPI.

Run by tests/serve.rs against a server on 127.0.0.1 that serves the real all-MiniLM-L6-v2 as
`minilm` and SmolLM2-135M-Instruct as `smollm2`. The expected values come from the `inferox`
CLI run on the same packages (the same inputs must give the same answers), then a load test of
concurrent clients checks that every answer equals its serial answer and that RSS stays flat.

usage: serve_clients.py URL SERVER_PID INFEROX MINILM_PKG SMOLLM2_PKG CLIENTS REQUESTS
"""

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import openai
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

url, pid, inferox, minilm_pkg, smollm2_pkg = sys.argv[1:6]
clients, per_client = int(sys.argv[6]), int(sys.argv[7])
host = url.removeprefix("http://")

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
]
QUESTIONS = [
    "What is the capital of France?",
    "What is 2+2?",
    "Name a colour.",
    "Say hello.",
]


def cli(*args):
    out = subprocess.run([inferox, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def check(condition, message):
    if not condition:
        raise AssertionError(message)


# ---- tritonclient (KServe v2) ----
tc = triton.InferenceServerClient(host)
check(tc.is_server_live() and tc.is_server_ready(), "server live and ready")
check(tc.is_model_ready("minilm") and tc.is_model_ready("smollm2"), "models ready")
check("binary_tensor_data" in tc.get_server_metadata()["extensions"], "binary extension listed")
meta = tc.get_model_metadata("minilm")
shapes = {t["name"]: (t["datatype"], t["shape"]) for t in meta["inputs"] + meta["outputs"]}
check(shapes["input_ids"] == ("INT64", [-1, -1]), f"named dims become -1: {shapes}")
check(shapes["last_hidden_state"] == ("FP32", [-1, -1, 384]), f"{shapes}")
check(shapes["text"] == ("BYTES", [-1]), f"text input listed: {shapes}")

texts = np.array([s.encode() for s in SENTENCES[:2]], dtype=object)
inp = triton.InferInput("text", [2], "BYTES")
inp.set_data_from_numpy(texts)  # binary by default
binary = tc.infer("minilm", [inp]).as_numpy("last_hidden_state")
inp.set_data_from_numpy(texts, binary_data=False)
as_json = tc.infer(
    "minilm", [inp], outputs=[triton.InferRequestedOutput("last_hidden_state", binary_data=False)]
)
check(
    [o["name"] for o in as_json.get_response()["outputs"]] == ["last_hidden_state"],
    "only the requested output comes back",
)
check(np.array_equal(binary, as_json.as_numpy("last_hidden_state")), "binary and JSON agree")

# The same text as tensors, tokenized by the CLI's own run (--save-inputs).
import os
import tempfile

with tempfile.TemporaryDirectory() as saved:
    reference = cli("run", minilm_pkg, "--text", SENTENCES[0], "--text", SENTENCES[1],
                    "--save-inputs", saved, "--json")
    tensors = []
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        array = np.load(os.path.join(saved, f"{name}.npy"))
        t = triton.InferInput(name, list(array.shape), "INT64")
        t.set_data_from_numpy(array)
        tensors.append(t)
    by_tensors = tc.infer("minilm", tensors).as_numpy("last_hidden_state")
check(by_tensors.shape == binary.shape, f"{by_tensors.shape} vs {binary.shape}")
check(np.abs(by_tensors - binary).max() <= 1e-6, "text and tensor inputs agree")

try:
    tc.infer("minilm", [triton.InferInput("input_ids", [1, 2], "FP32")])
    raise AssertionError("a wrong dtype must fail")
except InferenceServerException as e:
    check("input_ids" in str(e), f"the error names the input: {e}")
try:
    tc.get_model_metadata("missing")
    raise AssertionError("an unknown model must fail")
except InferenceServerException as e:
    check("missing" in str(e), str(e))

# ---- openai ----
oa = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
check([m.id for m in oa.models.list()] == ["minilm", "smollm2"], "model list")

cli_vectors = np.array(reference["embeddings"], dtype=np.float32)
floats = oa.embeddings.create(model="minilm", input=SENTENCES[:2], encoding_format="float")
b64 = oa.embeddings.create(model="minilm", input=SENTENCES[:2])  # the client asks for base64
for response in (floats, b64):
    got = np.array([d.embedding for d in response.data], dtype=np.float32)
    check(got.shape == cli_vectors.shape, f"{got.shape}")
    check(np.abs(got - cli_vectors).max() <= 1e-6, "embeddings equal the CLI's")
check(floats.usage.prompt_tokens > 0, "usage counted")
cosine = float(cli_vectors[0] @ cli_vectors[1])
check(abs(cosine - 0.7553) < 1e-4, f"the golden cosine: {cosine}")
chat_cli = cli("chat", smollm2_pkg, "--prompt", QUESTIONS[0], "--max-tokens", "24", "--json")
reply = oa.chat.completions.create(
    model="smollm2", messages=[{"role": "user", "content": QUESTIONS[0]}], max_tokens=24
)
check(reply.choices[0].message.content == chat_cli["text"],
      f"chat equals the CLI: {reply.choices[0].message.content!r} vs {chat_cli['text']!r}")
check(reply.usage.completion_tokens == len(chat_cli["token_ids"]), f"{reply.usage}")
pieces, usage = [], None
for chunk in oa.chat.completions.create(
    model="smollm2", messages=[{"role": "user", "content": QUESTIONS[0]}], max_tokens=24,
    stream=True, stream_options={"include_usage": True},
):
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
    if chunk.usage:
        usage = chunk.usage
check("".join(pieces) == chat_cli["text"], "the stream adds up to the reply")
check(usage is not None and usage.total_tokens == reply.usage.total_tokens, f"{usage}")
gen_cli = cli("generate", smollm2_pkg, "--prompt", "The capital of France is",
              "--max-tokens", "8", "--json")
completion = oa.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=8)
check(completion.choices[0].text == gen_cli["text"], f"{completion.choices[0].text!r}")
try:
    oa.chat.completions.create(model="minilm", messages=[{"role": "user", "content": "x"}])
    raise AssertionError("an encoder cannot chat")
except openai.BadRequestError as e:
    check(e.body["param"] == "model", f"{e.body}")
print("clients: tritonclient and openai agree with the CLI")

# ---- load: concurrent mixed requests, each answer equal to its serial answer ----
serial_embeddings = {
    s: oa.embeddings.create(model="minilm", input=s, encoding_format="float").data[0].embedding
    for s in SENTENCES
}
serial_chats = {
    q: oa.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": q}], max_tokens=8
    ).choices[0].message.content
    for q in QUESTIONS
}


def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def client(index):
    mine = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)
    mismatches = 0
    for j in range(per_client):
        k = index * per_client + j
        if k % 2 == 0:
            s = SENTENCES[k % len(SENTENCES)]
            got = mine.embeddings.create(model="minilm", input=s, encoding_format="float")
            diff = np.abs(np.array(got.data[0].embedding) - np.array(serial_embeddings[s])).max()
            if diff > 1e-5:
                print(f"embedding of {s!r} differs from the serial one by {diff:.2e}")
                mismatches += 1
        else:
            q = QUESTIONS[k % len(QUESTIONS)]
            got = mine.chat.completions.create(
                model="smollm2", messages=[{"role": "user", "content": q}], max_tokens=8
            )
            text = got.choices[0].message.content
            if text != serial_chats[q]:
                print(f"chat {q!r}: {text!r}, serially {serial_chats[q]!r}")
                mismatches += 1
    return mismatches


def load_round():
    started = time.time()
    with ThreadPoolExecutor(clients) as pool:
        mismatches = sum(pool.map(client, range(clients)))
    return mismatches, time.time() - started


# Round 1 warms every batch shape up. A leak grows the server's memory every round; the
# allocator's high-water mark grows only while rounds meet batch mixes (which depend on arrival
# times) bigger than any before, and a round can end with its last freed pages not yet returned:
# one round moved RSS by up to 30 MiB either way on this machine kind (302.6, 304.6 then 334.4
# MiB; 352, 350 then 327). So RSS is read after rounds 2 to 6, and two things must hold: the
# last round ends within a small margin of the most that rounds 2-5 left (no growth at the end),
# and RSS grows by under 12 MiB a round on average from round 2 to round 6 (a steady leak of
# about 100 KiB a request or more fails it).
rounds = [load_round()]
rss = []
for _ in range(5):
    rounds.append(load_round())
    rss.append(rss_kib())
total = len(rounds) * clients * per_client
mismatches = sum(m for m, _ in rounds)
print(f"load: {total} requests from {clients} clients in "
      f"{' + '.join(f'{s:.1f} s' for _, s in rounds)}, 0 errors, {mismatches} answers differing "
      f"from the serial ones; RSS after rounds 2-6: "
      f"{', '.join(f'{r / 1024:.1f}' for r in rss)} MiB")
check(mismatches == 0, "concurrent answers equal the serial ones")
check(rss[-1] <= max(rss[:-1]) * 1.03 + 16 * 1024, "RSS reaches a plateau")
check((rss[-1] - rss[0]) / (len(rss) - 1) < 12 * 1024, "RSS does not grow round after round")
