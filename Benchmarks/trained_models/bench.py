#!/usr/bin/env python3
"""The three byte-level decoders trained by Models/train/ (softmax, sigmoid, Aaren), measured in Apus.

    Models/train/setup.sh                                   # .venv-train (numpy, for the data split)
    python3 -m venv /tmp/plotenv && /tmp/plotenv/bin/pip install matplotlib==3.10.7
    .venv-train/bin/python Benchmarks/trained_models/bench.py [--apus .build/release/apus] [--runs 3]

Measures, for each model (Models/trained/<id>):
  1. per-sequence memory at 10, 1,000 and 10,000 tokens: what the server's KV-cache manager holds
     for one sequence (K/V blocks of 16 tokens for the transformers, one state block for Aaren),
     and decode time per token against position (`apus bench-position`, one token per step through
     the model's forward pass, 1 thread, median of a 64-step window, median over --runs runs);
  2. held-out quality through the server: every 257-byte window of the held-out fortunes (the
     training script's split) sent to POST /generate with decoder_input_details, bits/byte from
     the returned prompt log-probabilities (the same windows the training's evaluate() scores);
  3. tokens/s through the server: Benchmarks/serving/load.py, streaming, 1 and 16 clients,
     128 new tokens per request, one server with every model loaded (SmolLM2 for reference).
Writes Benchmarks/trained_models/results/<label>.json, docs/trained-models.png, and prints a
Markdown table. Run on a quiet machine: one server at a time, nothing else busy.
"""
import argparse
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MODELS = ["byte-softmax-lm", "byte-sigmoid-lm", "byte-aaren-lm"]
POSITIONS = [10, 100, 500, 1000, 2000, 3000, 5000, 7500, 10000]


def heldout():
    sys.path.insert(0, os.path.join(ROOT, "Models", "train"))
    import train_decoders  # noqa: E402  (numpy; run with .venv-train/bin/python)
    train, held, _ = train_decoders.fetch_data()
    return held, train_decoders.unigram_bpb(train, held)


def position_run(apus, model, text_file):
    out = subprocess.run([apus, "bench-position", "--model", os.path.join(ROOT, "Models/trained", model),
                          "--text-file", text_file, "--positions", ",".join(map(str, POSITIONS)),
                          "--threads", "1"], check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def bench_positions(apus, text_file, runs):
    """Runs the models in turn, --runs rounds (interleaved, so drift hits them alike); medians."""
    per_model = {m: [] for m in MODELS}
    for _ in range(runs):
        for m in MODELS:
            per_model[m].append(position_run(apus, m, text_file))
    result = {}
    for m, per_run in per_model.items():
        result[m] = [{"position": pos, "kind": per_run[0][i]["kind"], "state_bytes": per_run[0][i]["state_bytes"],
                      "decode_ms": statistics.median(r[i]["decode_ms_median"] for r in per_run)}
                     for i, pos in enumerate(POSITIONS)]
    return result


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, body, timeout=120):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def start_server(apus, port, threads):
    dirs = ",".join(os.path.join(ROOT, "Models/trained", m) for m in MODELS)
    proc = subprocess.Popen([apus, "serve", "--host", "127.0.0.1", "--port", str(port), "--no-embedding",
                             "--threads", str(threads), "--trained-models", dirs, "--log-level", "warning"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/health/ready" % port, timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        if proc.poll() is not None:
            sys.exit("apus serve exited with %s" % proc.returncode)
        time.sleep(0.3)
    proc.kill()
    sys.exit("apus serve did not become ready")


def quality(port, model, held, window=256):
    """Bits per byte over non-overlapping windows of `window` predicted bytes (training's evaluate)."""
    n = (len(held) - 1) // window
    bits, count = 0.0, 0
    for i in range(n):
        text = held[i * window: i * window + window + 1].decode("ascii")
        r = post("http://127.0.0.1:%d/generate" % port, {
            "inputs": text, "model": model,
            "parameters": {"max_new_tokens": 1, "details": True, "decoder_input_details": True}})
        logprobs = [t["logprob"] for t in r["details"]["prefill"][1:]]
        assert len(logprobs) == window, (len(logprobs), window)
        bits -= sum(logprobs) / math.log(2)
        count += window
    return bits / count


def throughput(port, model, clients):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "Benchmarks/serving/load.py"), "--url",
                          "http://127.0.0.1:%d" % port, "--api", "tgi", "--model", model, "--clients", str(clients),
                          "--requests", str(max(8, 2 * clients)), "--max-new-tokens", "128", "--quiet"],
                         capture_output=True, text=True)
    line = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if not line:
        sys.exit("load.py failed: %s" % out.stderr[-2000:])
    return json.loads(line[-1])


def plot(results, path, python):
    script = r'''
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
r = json.load(open(sys.argv[1]))
fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
for m, rows in r["position"].items():
    xs = [row["position"] for row in rows]
    a.plot(xs, [row["state_bytes"] / 1024 for row in rows], marker="o", label=m)
    b.plot(xs, [row["decode_ms"] for row in rows], marker="o", label=m)
a.set_xscale("log"); a.set_yscale("log")
a.set_xlabel("tokens in the sequence"); a.set_ylabel("KiB per sequence (KV-cache manager)")
a.set_title("Per-sequence memory")
b.set_xlabel("position"); b.set_ylabel("ms per decoded token (1 thread)")
b.set_title("Decode time per token")
for ax in (a, b):
    ax.grid(True, alpha=0.3); ax.legend()
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
'''
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(results, f)
    subprocess.run([python, "-c", script, f.name, path], check=True)
    os.unlink(f.name)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--apus", default=os.path.join(ROOT, ".build/release/apus"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="kernel threads of the server")
    ap.add_argument("--python-plot", default="/tmp/plotenv/bin/python")
    ap.add_argument("--label", default=time.strftime("%Y-%m-%d"))
    a = ap.parse_args()

    held, unigram = heldout()
    results = {"command": " ".join(sys.argv), "machine": os.uname().nodename, "unigram_bits_per_byte": unigram,
               "position": {}, "quality": {}, "throughput": {}}
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as f:
        f.write(held)
        text_file = f.name
    results["position"] = bench_positions(a.apus, text_file, a.runs)
    os.unlink(text_file)

    port = free_port()
    server = start_server(a.apus, port, a.threads)
    try:
        for m in MODELS:
            results["quality"][m] = quality(port, m, held)
            print("quality %s: %.4f bits/byte" % (m, results["quality"][m]), file=sys.stderr)
        for m in MODELS + ["smollm2-135m-instruct"]:
            results["throughput"][m] = {str(c): throughput(port, m, c) for c in (1, 16)}
            print("throughput %s done" % m, file=sys.stderr)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)

    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", a.label + ".json"), "w") as f:
        json.dump(results, f, indent=1)
    plot(results, os.path.join(ROOT, "docs", "trained-models.png"), a.python_plot)

    print("| model | state at 10 / 1,000 / 10,000 tokens | decode ms at 10 / 1,000 / 10,000 | held-out bits/byte (server) | tok/s 1 client | tok/s 16 clients |")
    print("|---|---|---|---|---|---|")
    for m in MODELS + ["smollm2-135m-instruct"]:
        pos = {row["position"]: row for row in results["position"].get(m, [])}
        state = " / ".join("%s" % human(pos[p]["state_bytes"]) for p in (10, 1000, 10000)) if pos else "—"
        times = " / ".join("%.2f" % pos[p]["decode_ms"] for p in (10, 1000, 10000)) if pos else "—"
        q = "%.3f" % results["quality"][m] if m in results["quality"] else "—"
        t = results["throughput"][m]
        print("| %s | %s | %s | %s | %.1f | %.1f |" % (m, state, times, q, t["1"]["tokens_per_s"],
                                                       t["16"]["tokens_per_s"]))
    print("unigram baseline: %.3f bits/byte" % unigram)


def human(n):
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return "%.1f %s" % (n / size, unit)
    return "%d B" % n


if __name__ == "__main__":
    main()
