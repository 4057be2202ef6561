#!/usr/bin/env python3
"""Apus vs sentence-transformers on all-MiniLM-L6-v2: sentences per second, side by side.

    python3 -m venv /tmp/stenv
    /tmp/stenv/bin/pip install torch==2.15.0 sentence-transformers==6.2.0
    swift build -c release --product apus
    HF_HUB_OFFLINE=1 /tmp/stenv/bin/python Benchmarks/embeddings/bench_vs_sentence_transformers.py \
        [--apus .build/release/apus] [--runs 3] [--threads 2] [--wait-quiet 300]

Cases: batch size 1 and 32, on short inputs (real sentences of 10–14 words and 14–22 tokens) and
on 128-token inputs (windows of the Debian licence texts in /usr/share/common-licenses, cut to
exactly 128 tokens with [CLS] and [SEP] by the model's tokenizer). Both sides get the same texts,
the same thread count (`torch.set_num_threads(T)`, `apus --threads T`) and produce normalised
vectors from text (tokenisation is inside both timings).

* sentence-transformers: `model.encode(texts, batch_size=N, normalize_embeddings=True)` over the
  whole input set, in this process, after one warm-up pass (encode sorts inputs by length before
  batching, as its users get it).
* Apus: `apus bench-embed --input-file F --batch-size N --runs 1 --threads T`, a fresh process per
  run that does one untimed warm-up pass, then one timed pass (batches in input order).

Runs alternate (Apus, sentence-transformers, Apus, ...); the table gives medians and the median
of the per-pair ratios. For each timed pass the script reads /proc/stat and reports how much CPU
other processes used meanwhile ("others": % of one core). A pair in which others used more than
`--max-others` (25%) of a core during either run is discarded and measured again (up to
`--max-attempts` × runs pairs): PyTorch's threads slow down by 2–15× when another process holds a
core, so such pairs say nothing about the engines. `--wait-quiet S` waits (up to S seconds)
before each pair until the machine is idle.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "Models/cache/all-minilm-l6-v2"
APUS = ROOT / ".build/release/apus"
SHORT_COUNT = 128
LONG_COUNT = 64
LONG_TOKENS = 128


def busy_jiffies() -> int:
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return user + nice + system + irq + softirq + steal


def wait_quiet(limit: float) -> None:
    """Waits until other processes use under 10% of one core over 3 s, at most `limit` seconds."""
    end = time.time() + limit
    while time.time() < end:
        a = busy_jiffies()
        time.sleep(3)
        if busy_jiffies() - a < 30:  # 100 jiffies per CPU-second
            return
    print("machine still busy; measuring anyway", file=sys.stderr)


def read(path: Path) -> str | None:
    try:
        raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def short_inputs(tokenizer) -> list[str]:
    """Sentences of 10–14 words (14–22 tokens) of running prose from READMEs, copyright files and
    licences (no URLs, paths or code)."""
    found: dict[str, None] = {}
    files = sorted(Path("/usr/share/doc").glob("*/README*")) + sorted(Path("/usr/share/doc").glob("*/copyright"))
    files += sorted(Path("/usr/share/common-licenses").glob("*"))
    for path in files:
        text = read(path) if path.is_file() else None
        if not text:
            continue
        for paragraph in re.split(r"\n\s*\n", text):
            line = " ".join(paragraph.split())
            for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", line):
                words = s.split()
                letters = sum(c.isalpha() for c in s)
                if not (10 <= len(words) <= 14 and letters >= 0.75 * len(s.replace(" ", "")) and s[0].isalpha()):
                    continue
                if any(c in s for c in "/@`=<>[]{}_") or s in found:
                    continue
                if 14 <= len(tokenizer(s)["input_ids"]) <= 22:
                    found.setdefault(s, None)
    texts = list(found)
    if len(texts) < SHORT_COUNT:
        sys.exit(f"only {len(texts)} short sentences found")
    step = len(texts) / SHORT_COUNT  # spread over the sources
    return [texts[int(i * step)] for i in range(SHORT_COUNT)]


def long_inputs(tokenizer) -> list[str]:
    """Windows of licence text cut to exactly 128 tokens ([CLS] and [SEP] included)."""
    out: list[str] = []
    for name in ["GPL-3", "Apache-2.0", "MPL-2.0", "LGPL-2.1", "GFDL-1.3", "Artistic"]:
        text = " ".join((read(Path("/usr/share/common-licenses") / name) or "").split())
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False)
        offsets = encoding["offset_mapping"]
        n = LONG_TOKENS - 2
        for start in range(0, len(offsets) - n, n):
            window = text[offsets[start][0]:offsets[start + n - 1][1]]
            if len(tokenizer(window)["input_ids"]) == LONG_TOKENS:
                out.append(window)
            if len(out) == LONG_COUNT:
                return out
    sys.exit(f"only {len(out)} 128-token windows found")


def run_apus(apus: str, input_file: str, batch: int, threads: int) -> dict:
    usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    jiffies_before = busy_jiffies()
    start = time.perf_counter()
    proc = subprocess.run(
        [apus, "bench-embed", "--embedding-model", str(MODEL), "--input-file", input_file,
         "--batch-size", str(batch), "--runs", "1", "--threads", str(threads)],
        capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"apus bench-embed failed:\n{proc.stderr[-2000:]}")
    usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = (usage_after.ru_utime + usage_after.ru_stime) - (usage_before.ru_utime + usage_before.ru_stime)
    others = max(0.0, (busy_jiffies() - jiffies_before) / 100 - own) / wall
    result = json.loads([l for l in proc.stdout.splitlines() if l.startswith("{")][-1])
    return {"rate": result["sentences_per_second"], "tokens": result["tokens"], "others": others}


def run_st(model, texts: list[str], batch: int) -> dict:
    jiffies_before = busy_jiffies()
    cpu_before = time.process_time()
    start = time.perf_counter()
    model.encode(texts, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True)
    wall = time.perf_counter() - start
    own = time.process_time() - cpu_before
    others = max(0.0, (busy_jiffies() - jiffies_before) / 100 - own) / wall
    return {"rate": len(texts) / wall, "others": others}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--apus", default=str(APUS))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--wait-quiet", type=float, default=0, help="seconds to wait for an idle machine before each pair")
    parser.add_argument("--max-others", type=float, default=0.25,
                        help="discard a pair when other processes used more than this share of one core during either run")
    parser.add_argument("--max-attempts", type=int, default=4, help="give up on a cell after runs × this many pairs")
    parser.add_argument("--json", help="also write the raw runs here")
    args = parser.parse_args()

    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    model = SentenceTransformer(str(MODEL), device="cpu")
    inputs = {"short": short_inputs(model.tokenizer), "128 tokens": long_inputs(model.tokenizer)}
    files = {}
    for name, texts in inputs.items():
        f = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
        f.write("\n".join(texts) + "\n")
        f.close()
        files[name] = f.name

    results = []
    for name, texts in inputs.items():
        for batch in (1, 32):
            run_st(model, texts, batch)  # warm-up
            apus_runs, st_runs, ratios, discarded = [], [], [], 0
            attempts = 0
            while len(ratios) < args.runs and attempts < args.runs * args.max_attempts:
                attempts += 1
                if args.wait_quiet:
                    wait_quiet(args.wait_quiet)
                a = run_apus(args.apus, files[name], batch, args.threads)
                s = run_st(model, texts, batch)
                clean = max(a["others"], s["others"]) <= args.max_others
                print(f"{name} batch {batch}: apus {a['rate']:.1f}/s (others {a['others']:.0%}), "
                      f"sentence-transformers {s['rate']:.1f}/s (others {s['others']:.0%})"
                      + ("" if clean else " -- discarded: another process used the CPU"), file=sys.stderr)
                if not clean:
                    discarded += 1
                    continue
                apus_runs.append(a)
                st_runs.append(s)
                ratios.append(a["rate"] / s["rate"])
            if not ratios:
                sys.exit(f"{name} batch {batch}: no run without other processes on the CPU; try later")
            tokens = apus_runs[0]["tokens"] / len(texts)
            results.append({
                "case": name, "batch": batch, "inputs": len(texts), "tokens_per_input": tokens,
                "apus": [r["rate"] for r in apus_runs], "sentence_transformers": [r["rate"] for r in st_runs],
                "ratios": ratios, "others": [r["others"] for r in apus_runs + st_runs], "discarded": discarded,
            })
    for f in files.values():
        os.unlink(f)

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"Machine: {cpu}, {os.cpu_count()} vCPUs, {platform.platform()}; {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}; "
          f"{args.threads} threads each; {args.runs} timed runs per cell, interleaved; medians.\n")
    print("| inputs | batch | tokens/input | Apus sentences/s | sentence-transformers sentences/s | ratio | pairs kept (discarded) | others, max % of a core |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['case']} ({r['inputs']}) | {r['batch']} | {r['tokens_per_input']:.1f} | "
              f"{statistics.median(r['apus']):.1f} | {statistics.median(r['sentence_transformers']):.1f} | "
              f"**{statistics.median(r['ratios']):.2f}x** | {len(r['ratios'])} ({r['discarded']}) | {max(r['others']) * 100:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
