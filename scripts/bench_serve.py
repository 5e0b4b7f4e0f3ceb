"""Load generator for scripts/bench_serve.sh: concurrent clients against a running
`inferox serve`, each request checked (HTTP 200, the right number of vectors or generated tokens).

  bench_serve.py embed URL MODEL CLIENTS REQUESTS_PER_CLIENT
      one sentence per request to /v1/embeddings; prints JSON: requests/s, p50/p99 latency (ms)
  bench_serve.py chat URL MODEL STREAMS TOKENS [ROUNDS]
      STREAMS concurrent /v1/completions of exactly TOKENS tokens each (`ignore_eos`), ROUNDS
      times (default 1); prints JSON: the median round's aggregate and per-stream tokens/s, and
      every round's aggregate
"""

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import http.client
import urllib.parse


class Http:
    """One keep-alive connection (the standard library's, so the benchmark needs no client
    package)."""

    def __init__(self, url, timeout):
        self.conn = http.client.HTTPConnection(urllib.parse.urlparse(url).netloc, timeout=timeout)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.conn.close()

    def post(self, path, body):
        self.conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
        r = self.conn.getresponse()
        text = r.read()
        assert r.status == 200, f"{r.status}: {text[:300]!r}"
        return json.loads(text)

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


def embed(url, model, clients, per_client):
    def client(index):
        latencies = []
        with Http(url, 300) as conn:
            for j in range(per_client):
                text = SENTENCES[(index + j) % len(SENTENCES)]
                started = time.perf_counter()
                data = conn.post("/v1/embeddings", {"model": model, "input": text,
                                                    "encoding_format": "float"})["data"]
                latencies.append(time.perf_counter() - started)
                assert len(data) == 1 and len(data[0]["embedding"]) > 0, data
        return latencies

    # Warm-up: every batch size the run will see.
    client(0)
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = sorted(sum(pool.map(client, range(clients)), []))
    seconds = time.perf_counter() - started
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3
    print(json.dumps({"clients": clients, "requests": len(latencies),
                      "requests_per_s": len(latencies) / seconds,
                      "p50_ms": pick(0.50), "p99_ms": pick(0.99)}))


def chat(url, model, streams, tokens, rounds=1):
    prompt = "Write a long story about a dragon who learns to cook. Once upon a time"

    def one(_):
        with Http(url, 600) as conn:
            started = time.perf_counter()
            body = conn.post("/v1/completions", {
                "model": model, "prompt": prompt, "max_tokens": tokens, "ignore_eos": True})
            seconds = time.perf_counter() - started
            assert body["choices"][0]["text"], body
            return body["usage"]["completion_tokens"], seconds

    one(0)
    measured = []
    for _ in range(rounds):
        started = time.perf_counter()
        with ThreadPoolExecutor(streams) as pool:
            results = list(pool.map(one, range(streams)))
        seconds = time.perf_counter() - started
        generated = sum(n for n, _ in results)
        assert generated == streams * tokens, f"streams ended early: {results}"
        measured.append((generated / seconds, sum(n / s for n, s in results) / streams))
    measured.sort()
    aggregate, per_stream = measured[len(measured) // 2]
    print(json.dumps({"streams": streams, "generated": streams * tokens, "rounds": rounds,
                      "aggregate_tokens_per_s": aggregate,
                      "per_stream_tokens_per_s": per_stream,
                      "every_round": [round(a, 1) for a, _ in measured]}))


if __name__ == "__main__":
    kind, url, model, a, b = sys.argv[1:6]
    extra = [int(x) for x in sys.argv[6:7]]
    {"embed": embed, "chat": chat}[kind](url, model, int(a), int(b), *extra)
