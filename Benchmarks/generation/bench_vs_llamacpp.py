#!/usr/bin/env python3
"""Apus vs llama.cpp (llama-cpp-python) on the same GGUF: prefill and decode speed, side by side.

    python3 -m venv /tmp/llamaenv && /tmp/llamaenv/bin/pip install llama-cpp-python==0.3.36 numpy
    Benchmarks/generation/bench_vs_llamacpp.py [--python /tmp/llamaenv/bin/python] [--runs 3]

For each thread count (1, 2) and case (prefill of 128 and 512 tokens; decode of 128 greedy tokens
after a 128-token prompt) it runs Apus (`apus bench`) and llama.cpp alternately (A B A B ...), each
run in a fresh process with one in-process warm-up, and reports medians, the ratio Apus/llama.cpp,
and each side's peak RSS (from wait4). The prompt is real text (a Debian licence file), tokenised by
each engine and cut to the same number of tokens. Prints a Markdown table.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "Models/cache/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
APUS = os.path.join(ROOT, ".build/release/apus")
CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "llamacpp_child.py")
PROMPT_FILE = "/usr/share/common-licenses/GPL-3"


def measure(cmd, env=None):
    """Runs cmd, returns (last JSON line of stdout, peak RSS in MiB, cpu seconds, wall seconds)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{err.decode(errors='replace')[-2000:]}")
    lines = [l for l in out.decode().splitlines() if l.startswith("{")]
    return json.loads(lines[-1]), usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default="/tmp/llamaenv/bin/python")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    args = ap.parse_args()
    env = dict(os.environ)  # each engine sets its own threading; no OMP_WAIT_POLICY (it slows llama.cpp)
    cases = [("prefill 128", 128, 0), ("prefill 512", 512, 0), ("decode 128", 128, 128)]
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        for name, n_prompt, n_new in cases:
            key = "decode_tokens_per_second" if n_new else "prefill_tokens_per_second"
            apus, llama, apus_rss, llama_rss, ratios = [], [], [], [], []
            for _ in range(args.runs):
                a, a_rss, _, _ = measure([APUS, "bench", "--prompt-file", PROMPT_FILE, "--prompt-tokens", str(n_prompt),
                                          "--new-tokens", str(n_new), "--threads", str(threads), "--runs", "1"], env)
                l, l_rss, _, _ = measure([args.python, CHILD, MODEL, PROMPT_FILE, str(n_prompt), str(n_new), str(threads)], env)
                apus.append(a[key]); llama.append(l[key]); apus_rss.append(a_rss); llama_rss.append(l_rss)
                ratios.append(a[key] / l[key])
            rows.append((threads, name, statistics.median(apus), statistics.median(llama), statistics.median(ratios),
                         max(apus_rss), max(llama_rss), apus, llama))
            print(f"threads {threads} {name}: apus {apus} llama.cpp {llama}", file=sys.stderr)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"Machine: {cpu}, {os.cpu_count()} cores, {platform.platform()}; {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"Runs per cell: {args.runs}, interleaved; tokens/s, medians; ratio = median of per-pair ratios.\n")
    print("| threads | case | Apus tok/s | llama.cpp tok/s | ratio | Apus peak RSS MiB | llama.cpp peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for t, name, a, l, r, ar, lr, _, _ in rows:
        print(f"| {t} | {name} | {a:.1f} | {l:.1f} | {r:.2f}x | {ar:.0f} | {lr:.0f} |")


if __name__ == "__main__":
    main()
