#!/usr/bin/env python3
"""CoreInfer on SmolLM2-135M: quality and decode speed against dense, as a function of β.

    python3 -m venv /tmp/plotenv && /tmp/plotenv/bin/pip install matplotlib==3.10.7
    Benchmarks/coreinfer/study.py [--apus .build/release/apus] [--threads 2] [--python-plot /tmp/plotenv/bin/python]

Prompts (written to --out-dir/prompts.json): real English text from Debian packages present on every
Debian 12 machine — the licences in /usr/share/common-licenses (base-files) and the module
docstrings of Python's standard library in /usr/lib/python3.11 (libpython3.11-stdlib) — cut at a
word boundary, with the text that follows as the continuation to score. Four kinds, at least 100
prompts in all:

* short: 12-40 words of a document (zero-shot, the case the CoreInfer paper warns about);
* long: about 300 words of a document;
* chat: a short excerpt in SmolLM2's chat template ("Continue this text: ..."), the assistant turn
  scored against the real continuation;
* fewshot: four (sentence -> next sentence) demonstrations from a document, then a sentence of
  it; the continuation is what follows that sentence.

Quality (`apus study-core-neurons`, in-process): per prompt a dense prefill whose activations vote;
for each β in {1.0, 0.8, 0.6, 0.5, 0.4, 0.3}: the prompt's core set, a random set of the same size
and a static "hot" set ranked by the votes of 1024 tokens of calibration text (the GPL-2, which no
prompt uses), each teacher-forced through the next 128 tokens one decode step at a time, with the
dense model alongside. Reported: perplexity of the continuation, top-1 agreement with dense,
KL(dense || sparse) per token, and the length of exact agreement of 64-token greedy continuations
(core sets only).

Speed (`apus bench-core-neurons`): greedy decode tokens/s at batch 1 and 8, dense and each β,
interleaved in rounds, medians; the cost model's ideal speed-up is dense MACs / sparse MACs per
token (attention projections, FFN, head; attention scores at the measured context).

Writes results.json, a Markdown table (stdout) and docs/coreinfer.png.
"""
import argparse
import ast
import glob
import json
import os
import random
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LICENCES = "/usr/share/common-licenses"
STDLIB = "/usr/lib/python3.11"
CALIBRATION = os.path.join(LICENCES, "GPL-2")
KEEPS = [1.0, 0.8, 0.6, 0.5, 0.4, 0.3]

# SmolLM2-135M: d 576, d_ff 1536, 30 layers, 9 query / 3 KV heads of 64, vocabulary 49152.
D, FF, LAYERS, KV, VOCAB = 576, 1536, 30, 192, 49152


def words_of(text):
    return " ".join(text.split()).split(" ")


def documents():
    """[(source, words)] of real text, long enough to cut prompts and continuations from."""
    docs = []
    for path in sorted(glob.glob(os.path.join(LICENCES, "*"))):
        real = os.path.realpath(path)
        if real == os.path.realpath(CALIBRATION) or not os.path.isfile(real) or os.path.basename(path) in ("GPL", "LGPL", "GFDL"):
            continue
        with open(real, encoding="utf-8", errors="replace") as f:
            docs.append((path, words_of(f.read())))
    for path in sorted(glob.glob(os.path.join(STDLIB, "*.py"))):
        try:
            with open(path, encoding="utf-8") as f:
                doc = ast.get_docstring(ast.parse(f.read()))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        if doc and len(doc.split()) >= 500:
            docs.append((path + " (module docstring)", words_of(doc)))
    return [d for d in docs if len(d[1]) >= 500]


def sentences(words):
    text = " ".join(words)
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if 6 <= len(s.split()) <= 40]


def build_prompts(count_per_kind, seed):
    rng = random.Random(seed)
    docs = documents()
    prompts = []
    for kind, n in count_per_kind.items():
        for i in range(n):
            source, words = docs[(i * 7 + len(prompts)) % len(docs)]
            if kind in ("short", "long", "chat"):
                length = rng.randint(12, 40) if kind != "long" else rng.randint(280, 320)
                start = rng.randrange(0, len(words) - length - 160)
                prompt = " ".join(words[start:start + length])
                continuation = " " + " ".join(words[start + length:start + length + 160])
                if kind == "chat":
                    prompt = (f"<|im_start|>user\nContinue this text: {prompt}<|im_end|>\n<|im_start|>assistant\n")
                    continuation = continuation.lstrip()
            else:
                sents = sentences(words)
                if len(sents) < 16:
                    continue
                start = rng.randrange(0, len(sents) - 15)
                demo = "".join(f"Sentence: {sents[start + 2 * k]}\nNext: {sents[start + 2 * k + 1]}\n\n" for k in range(4))
                query = sents[start + 8]
                prompt = demo + f"Sentence: {query}\nNext:"
                continuation = " " + " ".join(sents[start + 9:start + 16])
            prompts.append({"name": f"{kind}-{i:02d}", "kind": kind, "source": source, "prompt": prompt,
                            "continuation": continuation})
    return prompts


def quality(args, prompts_path):
    cmd = [args.apus, "study-core-neurons", "--threads", str(args.threads), "--generation-model", args.model, "--prompts", prompts_path,
           "--calibration", CALIBRATION, "--keep", ",".join(str(k) for k in KEEPS)]
    print("$ " + " ".join(cmd), file=sys.stderr)
    lines = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT) as p:
        for line in p.stdout:
            row = json.loads(line)
            lines.append(row)
            core = {r["keep"]: r for r in row["results"] if r["variant"] == "core"}
            print(f"  {row['name']} ({row['prompt_tokens']} tokens, {row['seconds']} s): greedy agreement at 0.5 "
                  f"{core.get(0.5, {}).get('greedy_agree')}", file=sys.stderr)
    return lines


def aggregate(lines):
    """{(variant, keep): {...}} over all prompts and per kind."""
    import math
    table = {}
    for kind in [None] + sorted({l["kind"] for l in lines}):
        for line in lines:
            if kind and line["kind"] != kind:
                continue
            for r in line["results"]:
                key = (kind or "all", r["variant"], float(r["keep"]))
                t = table.setdefault(key, {"nll": 0.0, "tokens": 0, "agree": 0, "kl": 0.0, "greedy": []})
                t["nll"] += r["nll"]; t["tokens"] += r["tokens"]; t["agree"] += r["top1_agree"]; t["kl"] += r["kl"]
                if "greedy_agree" in r:
                    t["greedy"].append(r["greedy_agree"])
    out = {}
    for key, t in table.items():
        out["|".join(map(str, key))] = {
            "kind": key[0], "variant": key[1], "keep": key[2],
            "perplexity": math.exp(t["nll"] / t["tokens"]), "top1_agreement": t["agree"] / t["tokens"],
            "kl_per_token": t["kl"] / t["tokens"],
            "greedy_agree_median": statistics.median(t["greedy"]) if t["greedy"] else None,
            "greedy_agree_mean": statistics.mean(t["greedy"]) if t["greedy"] else None,
            "tokens": t["tokens"],
        }
    return out


def speed(args):
    cmd = [args.apus, "bench-core-neurons", "--threads", str(args.threads), "--generation-model", args.model, "--prompt-file",
           os.path.join(LICENCES, "GPL-3"), "--keep", ",".join(str(k) for k in KEEPS[1:]), "--batch", "1,8",
           "--rounds", str(args.rounds), "--new-tokens", "64", "--prompt-tokens", "256"]
    print("$ " + " ".join(cmd), file=sys.stderr)
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True, cwd=ROOT).stdout
    runs = [json.loads(l) for l in out.splitlines() if l.strip()]
    result = {}
    for batch in sorted({r["batch"] for r in runs}):
        dense_by_round = {r["round"]: r["tokens_per_second"] for r in runs if r["batch"] == batch and r["keep"] is None}
        for keep in [None] + KEEPS[1:]:
            mine = [r for r in runs if r["batch"] == batch and r["keep"] == keep]
            ratios = [r["tokens_per_second"] / dense_by_round[r["round"]] for r in mine]
            result[f"{batch}|{keep}"] = {"batch": batch, "keep": keep,
                                         "tokens_per_second": statistics.median(r["tokens_per_second"] for r in mine),
                                         "speedup": statistics.median(ratios),
                                         "ideal": ideal_speedup(keep if keep is not None else 1.0, context=288)}
    return result


def ideal_speedup(keep, context, sparse_layers=LAYERS - 5):
    """Dense MACs / sparse MACs per decoded token (the research note's cost model)."""
    attention = LAYERS * (2 * D * D + 2 * D * KV) + LAYERS * 2 * 9 * 64 * context
    ffn = 3 * D * FF
    dense = attention + LAYERS * ffn + VOCAB * D
    return dense / (dense - sparse_layers * ffn * (1 - keep))


def plot(results, path, python):
    script = r'''
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
r = json.load(open(sys.argv[1]))
q, s = r["quality"], r["speed"]
keeps = r["keeps"]
fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
dense_ppl = q["all|dense|1.0"]["perplexity"]
for variant, style in (("core", "o-"), ("random", "s--"), ("hot", "^:")):
    ax[0].plot(keeps, [q[f"all|{variant}|{k}"]["perplexity"] / dense_ppl for k in keeps], style, label=variant)
    ax[1].plot(keeps, [q[f"all|{variant}|{k}"]["top1_agreement"] for k in keeps], style, label=variant)
for kind in sorted({v["kind"] for v in q.values()} - {"all"}):
    ax[0].plot(keeps, [q[f"{kind}|core|{k}"]["perplexity"] / q[f"{kind}|dense|1.0"]["perplexity"] for k in keeps], "-", alpha=0.35, label=f"core, {kind}")
ax[0].set_yscale("log"); ax[0].set_xlabel("β (kept fraction of FFN neurons)"); ax[0].set_ylabel("perplexity / dense")
ax[0].invert_xaxis(); ax[0].legend(fontsize=7); ax[0].set_title("Teacher-forced perplexity, next 128 tokens")
ax[1].set_xlabel("β"); ax[1].set_ylabel("top-1 agreement with dense"); ax[1].invert_xaxis(); ax[1].legend(fontsize=8)
ax[1].set_title("Top-1 agreement with dense")
for batch, style in ((1, "o-"), (8, "s-")):
    ks = [k for k in keeps if f"{batch}|{k}" in s]
    ax[2].plot(ks, [s[f"{batch}|{k}"]["speedup"] for k in ks], style, label=f"measured, batch {batch}")
ks = [k for k in keeps if f"1|{k}" in s]
ax[2].plot(ks, [s[f"1|{k}"]["ideal"] for k in ks], "k:", label="cost model (MACs)")
ax[2].axhline(1, color="grey", lw=0.5); ax[2].invert_xaxis(); ax[2].set_xlabel("β"); ax[2].set_ylabel("decode speed / dense")
ax[2].legend(fontsize=8); ax[2].set_title("Decode tokens/s vs dense (2 threads)")
fig.suptitle("CoreInfer on SmolLM2-135M-Instruct Q4_1 (Benchmarks/coreinfer/study.py)")
fig.tight_layout(); fig.savefig(sys.argv[2], dpi=110)
'''
    subprocess.run([python, "-c", script, results, path], check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--apus", default=os.path.join(ROOT, ".build/release/apus"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=os.path.join(ROOT, "Models/cache/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"),
                    help="the GGUF to study (the cost model's shapes are SmolLM2-135M's)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--per-kind", default="short=30,long=25,chat=25,fewshot=25")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "Benchmarks/coreinfer/results"))
    ap.add_argument("--python-plot", default="/tmp/plotenv/bin/python")
    ap.add_argument("--skip-quality", action="store_true", help="reuse out-dir/quality.jsonl")
    ap.add_argument("--skip-speed", action="store_true", help="reuse the speed figures in out-dir/results.json")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    per_kind = {k: int(v) for k, v in (p.split("=") for p in args.per_kind.split(","))}
    prompts = build_prompts(per_kind, args.seed)
    prompts_path = os.path.join(args.out_dir, "prompts.json")
    with open(prompts_path, "w") as f:
        json.dump(prompts, f, indent=1)
    raw = os.path.join(args.out_dir, "quality.jsonl")
    if args.skip_quality:
        lines = [json.loads(l) for l in open(raw)]
    else:
        lines = quality(args, prompts_path)
        with open(raw, "w") as f:
            f.writelines(json.dumps(l) + "\n" for l in lines)
    results_path = os.path.join(args.out_dir, "results.json")
    previous = json.load(open(results_path)) if os.path.exists(results_path) else {}
    results = {"keeps": KEEPS, "prompts": len(lines), "quality": aggregate(lines),
               "speed": (previous.get("speed") or {}) if args.skip_speed else speed(args)}
    with open(results_path, "w") as f:
        json.dump(results, f, indent=1)
    q, s = results["quality"], results["speed"]
    print(f"{len(lines)} prompts; perplexity of the next 128 tokens (teacher-forced through sparse decode), "
          f"top-1 agreement and KL per token vs dense, median greedy agreement (tokens of 64)\n")
    kinds = sorted({v["kind"] for v in q.values()} - {"all"})
    print("| β | variant | perplexity (dense " + f"{q['all|dense|1.0']['perplexity']:.2f})" + " | top-1 agreement | KL/token | greedy agreement | "
          + " | ".join(f"ppl {k}" for k in kinds) + " |")
    print("|---|---|---|---|---|---|" + "---|" * len(kinds))
    for keep in KEEPS:
        for variant in ("core", "hot", "random"):
            v = q.get(f"all|{variant}|{keep}")
            if not v:
                continue
            per = " | ".join(f"{q[f'{k}|{variant}|{keep}']['perplexity']:.2f} ({q[f'{k}|dense|1.0']['perplexity']:.2f})" for k in kinds)
            g = v["greedy_agree_median"]
            print(f"| {keep} | {variant} | {v['perplexity']:.2f} | {v['top1_agreement']:.3f} | {v['kl_per_token']:.3f} | "
                  f"{'' if g is None else g} | {per} |")
    print("\n| batch | β | tokens/s (median) | speed / dense (median of rounds) | cost-model ideal |")
    print("|---|---|---|---|---|")
    for key, v in s.items():
        print(f"| {v['batch']} | {v['keep'] if v['keep'] is not None else 'dense'} | {v['tokens_per_second']:.1f} | "
              f"{v['speedup']:.2f} | {v['ideal']:.2f} |")
    if os.path.exists(args.python_plot) and s:
        plot(results_path, os.path.join(ROOT, "docs/coreinfer.png"), args.python_plot)
        print("\nplot: docs/coreinfer.png", file=sys.stderr)


if __name__ == "__main__":
    main()
