#!/usr/bin/env python3
"""Apus's continuous-batching server vs llama-cpp-python's OpenAI-compatible server, same GGUF.

    python3 -m venv /tmp/llamaenv && /tmp/llamaenv/bin/pip install llama-cpp-python==0.3.36 \
        uvicorn fastapi sse-starlette starlette-context pydantic-settings
    Benchmarks/serving/bench_vs_llamacpp_server.py [--python /tmp/llamaenv/bin/python] [--runs 3] \
        [--concurrency 1,4,16,64] [--apus-bin .build/release/apus]

Both servers serve Models/cache/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf with 2 kernel
threads (`apus serve --threads 2`; `python -m llama_cpp.server --n_threads 2 --n_threads_batch 2
--interrupt_requests False`; without the last flag llama-cpp-python cuts a streaming response short
as soon as another request waits, which would make it look faster under concurrency).

For each concurrency N (1, 4, 16, 64), `load.py` (this directory) drives N streaming clients that
send max(2N, 8) requests of 64 new tokens, greedy, on real-text prompts. Runs alternate between the
servers (warm-up pair, then A B A B ...), and only one server process exists at a time: each run
starts its server, waits for readiness, sends a short warm-up (other prompts), runs the timed load,
and stops the server, so an idle server never competes for the 2 cores and every run starts with a
cold prefix cache. Both servers get the same prompts in the same order in pair k (seed k).

Before each run the script waits (up to --quiet-wait s) until the rest of the machine uses less than
--busy-limit % of one core, and during the run it compares the machine's CPU time with the server's
and the load generator's: a run where other processes took more than --busy-limit % is flagged as
contaminated and repeated (up to --retries times; the last attempt is kept and marked).

Also (Apus only), the prefix cache: time to first token of a request whose ~500-token real-text
prefix is cached vs not cached: for each of --prefix-pairs texts never sent before, a request with
prefix + suffix A (cold), then prefix + suffix B (prefix cached); TTFT medians and ratio, with the
prefix-cache hit counters from /metrics.

Prints a Markdown table (and writes raw JSON per run to --out-dir when given).
"""
import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MODEL = os.path.join(ROOT, "Models/cache/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
LOAD = os.path.join(HERE, "load.py")
TICK = os.sysconf("SC_CLK_TCK")

sys.path.insert(0, HERE)
import load  # noqa: E402  (prompts for the prefix-cache test)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# CPU accounting


def machine_busy_s():
    """Seconds of CPU the whole machine spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return (sum(v[:8]) - idle) / TICK


def proc_cpu_s(pid):
    """utime + stime of a process (all its threads) in seconds, 0 when gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def others_busy_pct(server_pid, seconds=2.0):
    b0, s0 = machine_busy_s(), proc_cpu_s(server_pid) if server_pid else 0.0
    time.sleep(seconds)
    b1, s1 = machine_busy_s(), proc_cpu_s(server_pid) if server_pid else 0.0
    return 100.0 * ((b1 - b0) - (s1 - s0)) / seconds


def wait_quiet(args, server_pid):
    """Waits until other processes use less than busy_limit % of a core; returns the last reading."""
    deadline = time.time() + args.quiet_wait
    pct = others_busy_pct(server_pid)
    waited = False
    while pct > args.busy_limit and time.time() < deadline:
        if not waited:
            log(f"machine busy: other processes at {pct:.0f}% of a core (load {os.getloadavg()[0]:.2f}); waiting")
            waited = True
        time.sleep(5)
        pct = others_busy_pct(server_pid)
    if waited:
        log(f"  now {pct:.0f}%")
    return pct


# ----------------------------------------------------------------------------------------------
# Servers


class Server:
    def __init__(self, name, cmd, port, ready_path, api, log_path):
        self.name, self.cmd, self.port, self.ready_path, self.api = name, cmd, port, ready_path, api
        self.log_path = log_path
        self.proc = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout=120):
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        logf.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"{self.name} exited with {self.proc.returncode} while starting; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        sys.exit(f"{self.name} not ready after {timeout} s; see {self.log_path}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def metrics(self):
        """Apus's Prometheus counters summed over labels (empty for other servers or on failure)."""
        if self.api != "tgi":
            return {}
        try:
            with urllib.request.urlopen(self.url + "/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return {}
        out = {}
        for line in text.splitlines():
            m = re.match(r"^([a-z_]+)(\{[^}]*\})?\s+([0-9.eE+-]+)$", line)
            if m and not m.group(1).endswith("_bucket"):
                out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
        return out


def run_load(server, clients, requests, args, seed, quiet=True):
    cmd = [sys.executable, LOAD, "--url", server.url, "--api", server.api, "--clients", str(clients),
           "--requests", str(requests), "--max-new-tokens", str(args.max_new_tokens),
           "--prompt-words", str(args.prompt_words), "--seed", str(seed)]
    if quiet:
        cmd.append("--quiet")
    m0 = server.metrics()
    b0, s0 = machine_busy_s(), proc_cpu_s(server.proc.pid)
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate()
    wall = time.perf_counter() - t0
    b1, s1 = machine_busy_s(), proc_cpu_s(server.proc.pid)
    lines = [l for l in out.decode().splitlines() if l.startswith("{")]
    if not lines:
        sys.exit(f"load.py failed against {server.name}: {err.decode(errors='replace')[-2000:]}")
    res = json.loads(lines[-1])
    m1 = server.metrics()
    res["server_cpu_pct"] = round(100 * (s1 - s0) / wall, 1)
    res["machine_cpu_pct"] = round(100 * (b1 - b0) / wall, 1)
    res["load_wall_s"] = round(wall, 3)
    if m0 and m1:
        d = lambda k: m1.get(k, 0.0) - m0.get(k, 0.0)
        res["apus"] = {
            "preemptions": d("apus_preemptions_total"), "failures": d("apus_request_failures_total"),
            "mean_batch_size": round(d("apus_batch_size_sum") / d("apus_batch_size_count"), 2)
            if d("apus_batch_size_count") else None,
            "mean_batch_tokens": round(d("apus_batch_tokens_sum") / d("apus_batch_tokens_count"), 1)
            if d("apus_batch_tokens_count") else None,
            "steps": d("apus_batch_size_count"),
            "prompt_tokens": d("apus_prompt_tokens_total"),
            "generated_tokens": d("apus_generation_tokens_total"),
        }
    return res


class ChildCPU:
    """CPU time of waited-for children (the load generators), to separate them from 'others'."""

    def __init__(self):
        self.r0 = os.times()

    def seconds(self):
        r = os.times()
        return (r.children_user - self.r0.children_user) + (r.children_system - self.r0.children_system)


def timed_run(server, clients, requests, args, seed):
    """Start server, warm up, timed load, stop. Returns the load.py JSON plus CPU accounting."""
    server.start()
    try:
        pct_before = wait_quiet(args, server.proc.pid)
        # Warm-up: other prompts (seed 10_000+), a few requests at this concurrency, fewer tokens.
        run_load(server, min(clients, 8), max(min(clients, 8), 4), args, 10_000 + seed)
        cc = ChildCPU()
        res = run_load(server, clients, requests, args, seed)
        load_cpu = cc.seconds()
        res["loadgen_cpu_pct"] = round(100 * load_cpu / res["load_wall_s"], 1)
        res["others_cpu_pct"] = round(res["machine_cpu_pct"] - res["server_cpu_pct"] - res["loadgen_cpu_pct"], 1)
        res["others_before_pct"] = round(pct_before, 1)
        res["load1"] = round(os.getloadavg()[0], 2)
        res["contaminated"] = res["others_cpu_pct"] > args.busy_limit
    finally:
        server.stop()
    return res


# ----------------------------------------------------------------------------------------------
# Prefix cache (Apus only)


def stream_ttft(url, prompt, max_new_tokens=4, timeout=120):
    """TTFT (s) and the server's input_length for one /generate_stream request."""
    body = json.dumps({"inputs": prompt, "parameters": {"max_new_tokens": max_new_tokens, "details": True}}).encode()
    req = urllib.request.Request(url + "/generate_stream", data=body, headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    ttft, input_length = None, None
    with urllib.request.urlopen(req, timeout=timeout) as r:
        for raw in r:
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            ev = json.loads(line[5:])
            if ttft is None and ev.get("token") is not None:
                ttft = time.perf_counter() - t0
            if ev.get("details"):
                input_length = ev["details"].get("input_length")
    return ttft, input_length


def prefix_test(server, args):
    corpus = load.licence_sentences()
    server.start()
    try:
        wait_quiet(args, server.proc.pid)
        stream_ttft(server.url, "Warm-up: " + " ".join(corpus[0][1][:3]), 4)
        rows = []
        for k in range(args.prefix_pairs):
            name, sentences = corpus[(k * 5 + 3) % len(corpus)]
            start = (k * 37) % max(1, len(sentences) - 60)
            words = []
            i = start
            while len(words) < args.prefix_words:
                words.extend(sentences[i % len(sentences)].split())
                i += 1
            prefix = " ".join(words[: args.prefix_words])
            m0 = server.metrics()
            cold, n_cold = stream_ttft(server.url, f"{prefix}\n\nQuestion {k}: which rights does this text grant?\nAnswer:")
            m1 = server.metrics()
            warm, n_warm = stream_ttft(server.url, f"{prefix}\n\nQuestion {k}: what does this text forbid?\nAnswer:")
            m2 = server.metrics()
            hits = lambda a, b: b.get("apus_prefix_cache_hits_total", 0) - a.get("apus_prefix_cache_hits_total", 0)
            rows.append({"text": name, "cold_ms": cold * 1000, "warm_ms": warm * 1000,
                         "cold_tokens": n_cold, "warm_tokens": n_warm,
                         "cold_hits": hits(m0, m1), "warm_hits": hits(m1, m2)})
            log(f"prefix pair {k} ({name}): cold {cold*1000:.1f} ms ({n_cold} tok, {hits(m0, m1):.0f} cached), "
                f"warm {warm*1000:.1f} ms ({n_warm} tok, {hits(m1, m2):.0f} cached)")
    finally:
        server.stop()
    return rows


# ----------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default="/tmp/llamaenv/bin/python", help="python with llama-cpp-python[server]")
    ap.add_argument("--apus-bin", default=os.path.join(ROOT, ".build/release/apus"),
                    help="copied to a private temporary file before use (the build may replace it)")
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--concurrency", default="1,4,16,64")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--prompt-words", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--apus-args", default="", help="extra arguments to apus serve")
    ap.add_argument("--apus-port", type=int, default=18611)
    ap.add_argument("--llama-port", type=int, default=18612)
    ap.add_argument("--busy-limit", type=float, default=25.0, help="%% of one core other processes may use")
    ap.add_argument("--quiet-wait", type=float, default=600.0, help="s to wait for a quiet machine before a run")
    ap.add_argument("--retries", type=int, default=2, help="repeats of a contaminated run")
    ap.add_argument("--prefix-pairs", type=int, default=6)
    ap.add_argument("--prefix-words", type=int, default=400, help="~1.25 tokens per word: ~500 tokens")
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--skip-prefix", action="store_true")
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))  # so that servers are stopped

    work = tempfile.mkdtemp(prefix="apus-serving-bench-")
    out_dir = args.out_dir or work
    os.makedirs(out_dir, exist_ok=True)
    apus_bin = os.path.join(work, "apus")
    shutil.copy2(args.apus_bin, apus_bin)  # private copy: the build may replace the original mid-run
    apus_version = subprocess.run([apus_bin, "--version"], capture_output=True, text=True).stdout.strip()
    help_text = subprocess.run([apus_bin, "serve", "--help"], capture_output=True, text=True).stdout
    if "--max-batch-tokens" not in help_text:
        sys.exit(f"{args.apus_bin} has no continuous-batching scheduler (no --max-batch-tokens): rebuild it")
    apus = Server("apus", [apus_bin, "serve", "--host", "127.0.0.1", "--port", str(args.apus_port),
                           "--threads", str(args.threads), "--generation-model", args.model,
                           "--log-level", "warning"] + args.apus_args.split(),
                  args.apus_port, "/health/ready", "tgi", os.path.join(out_dir, "apus.log"))
    llama = Server("llama.cpp", [args.python, "-m", "llama_cpp.server", "--model", args.model,
                                 "--n_threads", str(args.threads), "--n_threads_batch", str(args.threads),
                                 "--n_ctx", "2048", "--interrupt_requests", "False",
                                 "--host", "127.0.0.1", "--port", str(args.llama_port)],
                   args.llama_port, "/v1/models", "openai", os.path.join(out_dir, "llama.log"))
    servers = [apus] if args.skip_peer else [apus, llama]
    started = time.strftime("%Y-%m-%d %H:%M")
    log(f"apus {apus_version} copied from {args.apus_bin}; logs and raw results in {out_dir}")

    results = {}  # (server, clients) -> [run json]
    all_runs = []
    try:
        for clients in [int(c) for c in args.concurrency.split(",")]:
            requests = max(2 * clients, 8)
            for k in range(1, args.runs + 1):
                for server in servers:
                    for attempt in range(args.retries + 1):
                        res = timed_run(server, clients, requests, args, seed=k)
                        res.update(server=server.name, pair=k, attempt=attempt)
                        all_runs.append(res)
                        extra = f" apus {res['apus']}" if "apus" in res else ""
                        log(f"N={clients} pair {k} {server.name}: {res['tokens_per_s']} tok/s, "
                            f"TTFT p50 {res['ttft_p50_ms']} p99 {res['ttft_p99_ms']} ms, ITL p50 {res['itl_p50_ms']} "
                            f"p99 {res['itl_p99_ms']} max {res['itl_max_ms']} ms, errors {res['error_kinds'] or 0}, "
                            f"short {res['short_requests']}, cpu server {res['server_cpu_pct']}% load "
                            f"{res['loadgen_cpu_pct']}% others {res['others_cpu_pct']}%"
                            f"{' CONTAMINATED' if res['contaminated'] else ''}{extra}")
                        if not res["contaminated"]:
                            break
                    results.setdefault((server.name, clients), []).append(res)
        prefix_rows = [] if args.skip_prefix else prefix_test(apus, args)
    finally:
        for s in servers:
            s.stop()
        with open(os.path.join(out_dir, "runs.json"), "w") as f:
            json.dump(all_runs, f, indent=1)

    # ------------------------------------------------------------------------------------------
    med = lambda xs: statistics.median(xs) if xs else None
    key = lambda name, c, field: med([r[field] for r in results.get((name, c), []) if r.get(field) is not None])
    fmt = lambda x, d=1: "-" if x is None else f"{x:,.{d}f}"
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"Machine: {cpu}, {os.cpu_count()} cores, {platform.platform()}; run started {started}, "
          f"ended {time.strftime('%Y-%m-%d %H:%M')}; apus {apus_version}")
    n_cont = sum(1 for rs in results.values() for r in rs if r["contaminated"])
    print(f"Runs per cell: {args.runs} (interleaved, each in a fresh server process after a warm-up); "
          f"{args.max_new_tokens} new tokens per request, prompts of ~{args.prompt_words} words of licence text; "
          f"medians. Kept runs flagged contaminated (others > {args.busy_limit:.0f}% of a core): {n_cont}.\n")
    print("| clients | Apus tok/s | llama.cpp tok/s | ratio | Apus TTFT p50 / p99 ms | llama.cpp TTFT p50 / p99 ms "
          "| Apus ITL p50 / p99 ms | llama.cpp ITL p50 / p99 ms | errors Apus / llama.cpp |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    ratios = {}
    for clients in [int(c) for c in args.concurrency.split(",")]:
        a = results.get(("apus", clients), [])
        l = results.get(("llama.cpp", clients), [])
        pair_ratios = [x["tokens_per_s"] / y["tokens_per_s"] for x, y in zip(a, l) if y["tokens_per_s"]]
        ratios[clients] = med(pair_ratios)
        print(f"| {clients} | {fmt(key('apus', clients, 'tokens_per_s'))} | {fmt(key('llama.cpp', clients, 'tokens_per_s'))} "
              f"| {fmt(ratios[clients], 2)}x "
              f"| {fmt(key('apus', clients, 'ttft_p50_ms'), 0)} / {fmt(key('apus', clients, 'ttft_p99_ms'), 0)} "
              f"| {fmt(key('llama.cpp', clients, 'ttft_p50_ms'), 0)} / {fmt(key('llama.cpp', clients, 'ttft_p99_ms'), 0)} "
              f"| {fmt(key('apus', clients, 'itl_p50_ms'))} / {fmt(key('apus', clients, 'itl_p99_ms'))} "
              f"| {fmt(key('llama.cpp', clients, 'itl_p50_ms'))} / {fmt(key('llama.cpp', clients, 'itl_p99_ms'))} "
              f"| {sum(r['errors'] for r in a)} / {sum(r['errors'] for r in l)} |")
    print()
    print("Per run, tokens/s (Apus | llama.cpp):")
    for clients in [int(c) for c in args.concurrency.split(",")]:
        a = [r["tokens_per_s"] for r in results.get(("apus", clients), [])]
        l = [r["tokens_per_s"] for r in results.get(("llama.cpp", clients), [])]
        print(f"- {clients} clients: {a} | {l}")
    per_req = [r["apus"]["prompt_tokens"] / r["requests"] for rs in results.values() for r in rs
               if r.get("apus") and r["apus"].get("prompt_tokens") and r["requests"]]
    if per_req:
        print(f"\nPrompt tokens per request (Apus's tokenizer): mean {statistics.mean(per_req):.0f}; "
              f"tokens streamed per request: {statistics.mean(r['tokens_per_request_mean'] for rs in results.values() for r in rs):.1f}")
    p99_1, p99_16 = key("apus", 1, "itl_p99_ms"), key("apus", 16, "itl_p99_ms")
    if p99_1 and p99_16:
        print(f"\nApus p99 inter-token latency, 16 clients / 1 client: {p99_16:.1f} / {p99_1:.1f} ms = "
              f"{p99_16 / p99_1:.2f} (goal <= 3)")
    if ratios.get(16):
        print(f"Aggregate tokens/s at 16 clients, Apus / llama.cpp: {ratios[16]:.2f}x (goal >= 4x)")
    if prefix_rows:
        cold = med([r["cold_ms"] for r in prefix_rows])
        warm = med([r["warm_ms"] for r in prefix_rows])
        print(f"\nPrefix cache (Apus, {len(prefix_rows)} pairs, prompts of "
              f"{med([r['cold_tokens'] for r in prefix_rows if r['cold_tokens']])} tokens): "
              f"TTFT cold {cold:.1f} ms, prefix cached {warm:.1f} ms, {cold / warm:.1f}x faster; "
              f"cached tokens per warm request: {med([r['warm_hits'] for r in prefix_rows]):.0f}, "
              f"per cold request: {med([r['cold_hits'] for r in prefix_rows]):.0f}")
        print("\n| text | prompt tokens | TTFT cold ms | TTFT prefix cached ms | cached tokens (warm) |")
        print("|---|---:|---:|---:|---:|")
        for r in prefix_rows:
            print(f"| {r['text']} | {r['warm_tokens']} | {r['cold_ms']:.1f} | {r['warm_ms']:.1f} | {r['warm_hits']:.0f} |")


if __name__ == "__main__":
    main()
