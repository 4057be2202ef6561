#!/usr/bin/env python3
"""Reference data for the SmolLM2-135M-Instruct text-generation correctness tests.

    Tests/Fixtures/generation/smollm2_reference.json

Regenerate (from the repository root). Run time: 8.6 min on 2 busy cores (about 18 s per prompt;
loading + dequantising the weights ~11 s); building llama-cpp-python from source took ~11 min:

    python3 -m venv /tmp/llamaenv
    /tmp/llamaenv/bin/pip install llama-cpp-python==0.3.36 numpy==2.4.6 gguf==0.19.0
    /tmp/llamaenv/bin/python Tests/Fixtures/scripts/make_generation_fixtures.py

What it computes, per prompt (prompts are excerpts of real text found on the machine: Python 3.11
stdlib sources and docstrings, Debian docs and licences, man pages, gettext catalogues and the Vim
tutor in several languages; some wrapped in the SmolLM2 chat template):

* prompt_ids: llama.cpp tokenisation (special=True, add_bos=False; the GGUF says add_bos_token=false).
* teacher_forced.llama_cpp[t-1] = log p(prompt[t] | prompt[<t]) for t = 1..n-1, from llama.cpp with
  logits_all=True, the whole prompt in one batch (n_ctx 512, n_batch 512, n_threads 2).
  teacher_forced.top2[t-1] = [id1, lp1, id2, lp2], the two most likely tokens at that step.
* greedy: 32 tokens of argmax continuation from llama.cpp (one token per decode call, no penalties,
  EOS ignored; `eos_at` is the index of the first end-of-generation token, or null), with top2.
* float64: the same quantities from an independent numpy float64 implementation of the Llama forward
  pass over the GGUF weights dequantised with gguf.quants.dequantize (no activation quantisation,
  no f16 KV cache). The float64 greedy continuation is what an engine that computes in f32 over
  dequantised weights should follow; llama.cpp quantises activations to 8 bits inside its
  Q4_1/Q8_0 matmuls and stores K/V in f16, so its logprobs differ by a few hundredths.

Log-probabilities are natural-log, computed in float64 from the logits, rounded to 5 decimals.

Layout facts the float64 reference relies on (verified against llama.cpp's source, see README):
ggml dims are [ne0 = columns (input features), ne1 = rows (output features)], so a dequantised
weight is a numpy array of shape (out, in) and y = W @ x; token_embd is (n_vocab, d) and doubles as
the output head. llama.cpp's converter permutes the rows of attn_q / attn_k per head so that the HF
"rotate_half" (NEOX) pairing (i, i+32) becomes adjacent pairs (2i, 2i+1); LLM_ARCH_LLAMA uses
LLAMA_ROPE_TYPE_NORM, which rotates adjacent pairs. So with GGUF weights: rotate (x[2i], x[2i+1]) by
pos * theta^(-2i/64).

Deterministic: no randomness; llama.cpp is run with a fixed thread count.
"""

from __future__ import annotations

import os

# Neither changes any number: numpy's BLAS single-threaded, and llama.cpp's OpenMP workers sleep
# instead of spinning (both are much faster on a busy 2-core machine).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import ast
import codecs
import gettext
import gzip
import hashlib
import json
import math
import re
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

import gguf
import llama_cpp

REPO = Path(__file__).resolve().parents[3]
MODEL = REPO / "Models/cache/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
OUT_DIR = REPO / "Tests/Fixtures/generation"
OUT_JSON = OUT_DIR / "smollm2_reference.json"

N_CTX = 512
N_THREADS = 2
N_GEN = 32
MIN_TOKENS, MAX_TOKENS = 20, 200
DEBUG_PROMPT = "The capital of France is"

STDLIB = Path(sysconfig.get_paths()["stdlib"])
VIM_TUTOR = sorted(Path("/usr/share/vim").glob("vim*/tutor"))[-1] if list(Path("/usr/share/vim").glob("vim*/tutor")) else None


def r5(x: float) -> float:
    return round(float(x), 5)


# ----------------------------------------------------------------------------------------------
# Text sources (all read from files on this machine)
# ----------------------------------------------------------------------------------------------

def read_text(path: Path) -> str:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8").read()
    return path.read_text(encoding="utf-8")


def stdlib_function(relpath: str, name: str) -> str:
    """Source of a top-level function of a stdlib module, verbatim."""
    src = read_text(STDLIB / relpath)
    tree = ast.parse(src)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            lines = src.splitlines()
            return "\n".join(lines[node.lineno - 1: node.end_lineno]) + "\n"
    raise KeyError(f"{relpath}:{name}")


def stdlib_docstring(relpath: str, name: str | None = None) -> str:
    tree = ast.parse(read_text(STDLIB / relpath))
    if name is None:
        return ast.get_docstring(tree)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            return ast.get_docstring(node)
    raise KeyError(f"{relpath}:{name}")


def zen_of_python() -> str:
    tree = ast.parse(read_text(STDLIB / "this.py"))
    s = next(n.value.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "s")
    return codecs.decode(s, "rot13")


def lines_between(path: Path, start: str, n_lines: int, encoding="utf-8") -> str:
    text = path.read_text(encoding=encoding) if path.suffix != ".gz" else read_text(path)
    lines = text.splitlines()
    i = next(k for k, l in enumerate(lines) if start in l)
    return "\n".join(lines[i: i + n_lines]) + "\n"


def vim_tutor(name: str, n_lines: int = 18) -> str:
    """The introduction of the Vim tutor (after the banner), dedented."""
    lines = (VIM_TUTOR / name).read_text(encoding="utf-8").splitlines()
    body = lines[3: 3 + n_lines]
    while body and not body[0].strip():
        body = body[1:]
    return "\n".join(l[5:] if l.startswith("     ") else l.strip() for l in body).strip() + "\n"


def mo_string(lang: str, domain: str, msgid_prefix: str) -> str:
    with open(f"/usr/share/locale/{lang}/LC_MESSAGES/{domain}.mo", "rb") as f:
        cat = gettext.GNUTranslations(f)._catalog
    keys = sorted(k for k in cat if isinstance(k, str) and k.startswith(msgid_prefix))
    return cat[keys[0]]


def mo_msgid(lang: str, domain: str, msgid_prefix: str) -> str:
    with open(f"/usr/share/locale/{lang}/LC_MESSAGES/{domain}.mo", "rb") as f:
        cat = gettext.GNUTranslations(f)._catalog
    return sorted(k for k in cat if isinstance(k, str) and k.startswith(msgid_prefix))[0]


def roff_to_text(roff: str) -> str:
    """A tiny man(7) cleaner, enough for help2man pages: drop requests, keep text."""
    out = []
    for line in roff.splitlines():
        if line.startswith((".\\\"", "'\\\"")):
            continue
        if line.startswith("."):
            m = re.match(r"\.(B|I|SH|SS)\s+(.*)", line)
            if m:
                out.append(m.group(2).strip('"'))
            elif line.startswith((".PP", ".TP", ".SH", ".IP")):
                out.append("")
            continue
        out.append(line)
    text = "\n".join(out)
    for a, b in [("\\fB", ""), ("\\fI", ""), ("\\fR", ""), ("\\fP", ""), ("\\,", ""), ("\\/", ""),
                 ("\\-", "-"), ("\\(aq", "'"), ("\\&", ""), ("\\e", "\\")]:
        text = text.replace(a, b)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def man_section(path: str, section: str, n_lines: int) -> str:
    text = roff_to_text(read_text(Path(path)))
    lines = text.splitlines()
    i = lines.index(section)
    return "\n".join(lines[i + 1: i + 1 + n_lines]).strip() + "\n"


def chat(*turns: tuple[str, str]) -> str:
    """SmolLM2 chat template (ChatML), ending with the assistant generation prompt."""
    s = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in turns)
    return s + "<|im_start|>assistant\n"


def prompt_specs():
    """(name, kind, source description, text). Texts longer than MAX_TOKENS are cut at a line
    (or word) boundary later."""
    P = []
    add = lambda name, kind, source, text: P.append((name, kind, source, text))

    # --- code --------------------------------------------------------------------------------
    add("code_heapq_heappop", "code", "Python 3.11 stdlib heapq.py: heappop",
        stdlib_function("heapq.py", "heappop"))
    add("code_bisect_insort_right", "code", "Python 3.11 stdlib bisect.py: insort_right",
        stdlib_function("bisect.py", "insort_right"))
    add("code_textwrap_dedent", "code", "Python 3.11 stdlib textwrap.py: dedent",
        stdlib_function("textwrap.py", "dedent"))
    add("code_json_encoder", "code", "Python 3.11 stdlib json/encoder.py: py_encode_basestring_ascii",
        stdlib_function("json/encoder.py", "py_encode_basestring_ascii"))
    add("code_c_string_h", "code", "/usr/include/string.h (glibc), from the memcpy declaration",
        lines_between(Path("/usr/include/string.h"), "extern void *memcpy", 24))
    add("code_shell_gunzip", "code", "/usr/bin/gunzip (shell script from gzip)",
        Path("/usr/bin/gunzip").read_text(encoding="utf-8"))

    # --- English prose -------------------------------------------------------------------------
    add("prose_zen_of_python", "prose", "Python 3.11 stdlib this.py (rot13-decoded)", zen_of_python())
    add("prose_lru_cache_doc", "prose", "Python 3.11 stdlib functools.py: lru_cache docstring",
        stdlib_docstring("functools.py", "lru_cache"))
    add("prose_subprocess_doc", "prose", "Python 3.11 stdlib subprocess.py module docstring",
        stdlib_docstring("subprocess.py"))
    add("prose_gpl3_preamble", "prose", "/usr/share/common-licenses/GPL-3, Preamble",
        lines_between(Path("/usr/share/common-licenses/GPL-3"), "The GNU General Public License is a free", 20))
    add("prose_bash_readme", "prose", "/usr/share/doc/bash/README.gz, Introduction",
        lines_between(Path("/usr/share/doc/bash/README.gz"), "This is GNU Bash", 26))
    add("prose_bash_changelog", "prose", "/usr/share/doc/bash/changelog.Debian.gz, head",
        lines_between(Path("/usr/share/doc/bash/changelog.Debian.gz"), "bash (", 24))
    add("prose_man_ls", "prose", "/usr/share/man/man1/ls.1.gz, DESCRIPTION (roff stripped)",
        man_section("/usr/share/man/man1/ls.1.gz", "DESCRIPTION", 30))

    # --- chat-formatted ---------------------------------------------------------------------------
    add("chat_explain_code", "chat", "chat template around Python 3.11 stdlib bisect.py: bisect_left",
        chat(("user", "Explain what this Python function does:\n\n```python\n"
              + stdlib_function("bisect.py", "bisect_left") + "```")))
    add("chat_summarize", "chat", "chat template around /usr/share/doc/bash/README.gz",
        chat(("user", "Summarize the following text in one sentence.\n\n"
              + lines_between(Path("/usr/share/doc/bash/README.gz"), "This is GNU Bash", 12))))
    add("chat_translate_fr", "chat", "chat template around the French Vim tutor",
        chat(("user", "Translate into English:\n\n" + vim_tutor("tutor.fr.utf-8", 8))))
    add("chat_option_question", "chat", "chat template around coreutils.mo msgid (ls --help)",
        chat(("user", "What does `ls` do with these options?\n\n"
              + mo_msgid("de", "coreutils", "  -a, --all"))))
    add("chat_multi_turn", "chat", "chat template, system + 2 user turns; Zen of Python lines",
        chat(("system", "You are a helpful AI assistant named SmolLM, trained by Hugging Face"),
             ("user", "What is the Zen of Python?"),
             ("assistant", "\n".join(zen_of_python().splitlines()[:5])),
             ("user", "What does \"" + zen_of_python().splitlines()[6] + "\" mean?")))
    add("chat_german_help", "chat", "chat template around German coreutils.mo (ls description)",
        chat(("user", mo_string("de", "coreutils", "List information about the FILEs")
              + "\nWas bedeutet das?")))

    # --- non-English -------------------------------------------------------------------------------
    for lang, fname in [("fr", "tutor.fr.utf-8"), ("de", "tutor.de.utf-8"), ("es", "tutor.es.utf-8"),
                        ("ru", "tutor.ru.utf-8"), ("zh_cn", "tutor.zh_cn.utf-8"), ("ja", "tutor.ja.utf-8"),
                        ("it", "tutor.it.utf-8")]:
        add(f"i18n_vimtutor_{lang}", "non_english", f"{VIM_TUTOR}/{fname}, introduction",
            vim_tutor(fname))
    add("i18n_coreutils_ru", "non_english", "/usr/share/locale/ru/LC_MESSAGES/coreutils.mo (ls description + options)",
        mo_string("ru", "coreutils", "List information about the FILEs")
        + mo_string("ru", "coreutils", "  -a, --all"))
    add("i18n_coreutils_es", "non_english", "/usr/share/locale/es/LC_MESSAGES/coreutils.mo (ls options)",
        mo_string("es", "coreutils", "  -a, --all"))
    return P


# ----------------------------------------------------------------------------------------------
# llama.cpp
# ----------------------------------------------------------------------------------------------

def log_softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def top2(lp: np.ndarray) -> list:
    # ties broken towards the lower id, as np.argmax / llama.cpp's greedy sampler do
    i1 = int(np.argmax(lp))
    rest = lp.copy()
    rest[i1] = -np.inf
    i2 = int(np.argmax(rest))
    return [i1, r5(lp[i1]), i2, r5(lp[i2])]


def fit_to_budget(text: str, tokenize) -> str:
    """Cut text at line boundaries (then word boundaries) until it has <= MAX_TOKENS tokens."""
    if len(tokenize(text)) <= MAX_TOKENS:
        return text
    lines = text.splitlines(keepends=True)
    while len(lines) > 1 and len(tokenize("".join(lines))) > MAX_TOKENS:
        lines.pop()
    text = "".join(lines)
    words = text.split(" ")
    while len(tokenize(" ".join(words))) > MAX_TOKENS:
        words.pop()
    return " ".join(words)


class LlamaCpp:
    def __init__(self):
        self.llm = llama_cpp.Llama(model_path=str(MODEL), n_ctx=N_CTX, n_batch=N_CTX, n_ubatch=N_CTX,
                                   n_threads=N_THREADS, n_threads_batch=N_THREADS, logits_all=True,
                                   verbose=False)
        self.eog = {t for t in range(self.llm.n_vocab())
                    if llama_cpp.llama_vocab_is_eog(self.llm._model.vocab, t)}

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def run(self, ids: list[int]):
        llm = self.llm
        llm.reset()
        llm.eval(ids)
        lp = log_softmax(llm.scores[: len(ids)])
        tf = [r5(lp[t - 1, ids[t]]) for t in range(1, len(ids))]
        tf_top2 = [top2(lp[t - 1]) for t in range(1, len(ids))]
        last_logits = np.array(llm.scores[len(ids) - 1], dtype=np.float64)
        gen, gen_top2 = [], []
        row = lp[len(ids) - 1]
        for _ in range(N_GEN):
            t2 = top2(row)
            gen.append(t2[0])
            gen_top2.append(t2)
            llm.eval([t2[0]])
            row = log_softmax(llm.scores[llm.n_tokens - 1])
        eos_at = next((i for i, t in enumerate(gen) if t in self.eog), None)
        return tf, tf_top2, gen, gen_top2, eos_at, last_logits


# ----------------------------------------------------------------------------------------------
# float64 numpy reference
# ----------------------------------------------------------------------------------------------

class Float64Llama:
    def __init__(self, path: Path):
        r = gguf.GGUFReader(str(path))
        kv = {f.name: f for f in r.fields.values()}

        def val(key):
            return kv[key].contents()

        arch = val("general.architecture")
        assert arch == "llama", arch
        self.n_layer = val("llama.block_count")
        self.d = val("llama.embedding_length")
        self.n_head = val("llama.attention.head_count")
        self.n_kv = val("llama.attention.head_count_kv")
        self.eps = val("llama.attention.layer_norm_rms_epsilon")
        self.theta = val("llama.rope.freq_base")
        self.n_ff = val("llama.feed_forward_length")
        self.hd = self.d // self.n_head
        self.rope_dim = val("llama.rope.dimension_count") if "llama.rope.dimension_count" in kv else self.hd
        self.hparams = dict(n_layer=self.n_layer, d=self.d, n_head=self.n_head, n_kv=self.n_kv, eps=self.eps,
                            rope_theta=self.theta, n_ff=self.n_ff, head_dim=self.hd, rope_dim=self.rope_dim)
        self.W, self.types = {}, {}
        for t in r.tensors:
            # dequantize() returns numpy shape reversed from ggml dims: (ne1 = rows/out, ne0 = cols/in)
            a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)
            assert a.shape == tuple(int(x) for x in reversed(t.shape.tolist())), (t.name, a.shape, t.shape)
            self.W[t.name] = a
            self.types[t.name] = t.tensor_type.name
        assert "output.weight" not in self.W  # tied head
        # RoPE tables, "normal" style (adjacent pairs) as llama.cpp uses for LLM_ARCH_LLAMA.
        i = np.arange(self.rope_dim // 2, dtype=np.float64)
        self.inv_freq = self.theta ** (-2.0 * i / self.rope_dim)

    def rmsnorm(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x, pos):
        """x: (T, heads, hd). Rotate adjacent pairs (2i, 2i+1) by pos * inv_freq[i]."""
        ang = pos[:, None] * self.inv_freq[None, :]            # (T, hd/2)
        c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        x0, x1 = x[..., 0:self.rope_dim:2], x[..., 1:self.rope_dim:2]
        out = x.copy()
        out[..., 0:self.rope_dim:2] = x0 * c - x1 * s
        out[..., 1:self.rope_dim:2] = x0 * s + x1 * c
        return out

    def ffn(self, l, x):
        """SwiGLU feed-forward of layer l (make_coreinfer_fixtures.py overrides it)."""
        W, pre = self.W, f"blk.{l}."
        gate = x @ W[pre + "ffn_gate.weight"].T
        up = x @ W[pre + "ffn_up.weight"].T
        return (gate / (1.0 + np.exp(-gate)) * up) @ W[pre + "ffn_down.weight"].T

    def new_cache(self):
        return {"k": [np.zeros((0, self.n_kv, self.hd)) for _ in range(self.n_layer)],
                "v": [np.zeros((0, self.n_kv, self.hd)) for _ in range(self.n_layer)], "n": 0}

    def forward(self, ids, cache, trace=None):
        """Runs new tokens `ids` after the cached ones; returns logits (T, n_vocab)."""
        W, T, p0 = self.W, len(ids), cache["n"]
        pos = np.arange(p0, p0 + T, dtype=np.float64)
        h = W["token_embd.weight"][ids]                           # (T, d)
        if trace is not None:
            trace["embedding"] = h.copy()
        rep = self.n_head // self.n_kv
        for l in range(self.n_layer):
            pre = f"blk.{l}."
            x = self.rmsnorm(h, W[pre + "attn_norm.weight"])
            q = (x @ W[pre + "attn_q.weight"].T).reshape(T, self.n_head, self.hd)
            k = (x @ W[pre + "attn_k.weight"].T).reshape(T, self.n_kv, self.hd)
            v = (x @ W[pre + "attn_v.weight"].T).reshape(T, self.n_kv, self.hd)
            q, k = self.rope(q, pos), self.rope(k, pos)
            K = np.concatenate([cache["k"][l], k]); V = np.concatenate([cache["v"][l], v])
            cache["k"][l], cache["v"][l] = K, V
            S = K.shape[0]
            mask = np.arange(S)[None, :] > (p0 + np.arange(T))[:, None]   # (T, S) future positions
            att = np.empty((T, self.n_head, self.hd))
            for hh in range(self.n_head):
                g = hh // rep                                                # GQA: head -> kv head
                sc = q[:, hh, :] @ K[:, g, :].T / math.sqrt(self.hd)
                sc[mask] = -np.inf
                sc = np.exp(sc - sc.max(axis=-1, keepdims=True))
                sc /= sc.sum(axis=-1, keepdims=True)
                att[:, hh, :] = sc @ V[:, g, :]
            h = h + att.reshape(T, self.d) @ W[pre + "attn_output.weight"].T
            if trace is not None and l == 0:
                trace["attn_norm_0"] = x.copy(); trace["q_rope_0"] = q.copy(); trace["k_rope_0"] = k.copy()
                trace["after_attn_0"] = h.copy()
            x = self.rmsnorm(h, W[pre + "ffn_norm.weight"])
            h = h + self.ffn(l, x)
            if trace is not None and l == 0:
                trace["after_layer_0"] = h.copy()
        cache["n"] = p0 + T
        hn = self.rmsnorm(h, W["output_norm.weight"])
        if trace is not None:
            trace["final_norm"] = hn.copy()
        return hn @ W["token_embd.weight"].T

    def run(self, ids):
        cache = self.new_cache()
        lp = log_softmax(self.forward(ids, cache))
        tf = [r5(lp[t - 1, ids[t]]) for t in range(1, len(ids))]
        tf_top2 = [top2(lp[t - 1]) for t in range(1, len(ids))]
        gen, gen_top2, row = [], [], lp[-1]
        for _ in range(N_GEN):
            t2 = top2(row)
            gen.append(t2[0]); gen_top2.append(t2)
            row = log_softmax(self.forward([t2[0]], cache))[-1]
        return tf, tf_top2, gen, gen_top2, lp


# ----------------------------------------------------------------------------------------------

def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    t_start = time.time()
    lc = LlamaCpp()
    ref = Float64Llama(MODEL)
    print("hparams", ref.hparams, file=sys.stderr)

    prompts, stats = [], {"abs_diff": [], "top1_agree": 0, "top1_total": 0, "greedy_prefix": []}
    for name, kind, source, text in prompt_specs():
        text = fit_to_budget(text, lc.tokenize)
        ids = lc.tokenize(text)
        assert MIN_TOKENS <= len(ids) <= MAX_TOKENS, (name, len(ids))
        tf, tf_top2, gen, gen_top2, eos_at, _ = lc.run(ids)
        ftf, ftf_top2, fgen, fgen_top2, _ = ref.run(ids)
        d = np.abs(np.array(tf) - np.array(ftf))
        agree = sum(a[0] == b[0] for a, b in zip(tf_top2, ftf_top2))
        same_prefix = next((i for i, (a, b) in enumerate(zip(gen, fgen)) if a != b), N_GEN)
        stats["abs_diff"].extend(d.tolist()); stats["top1_agree"] += agree
        stats["top1_total"] += len(tf_top2); stats["greedy_prefix"].append(same_prefix)
        print(f"{name:28s} n={len(ids):3d} mean|dlp|={d.mean():.4f} max={d.max():.4f} "
              f"top1 {agree}/{len(tf_top2)} greedy-common-prefix {same_prefix}/{N_GEN} "
              f"({time.time() - t_start:.0f}s)", file=sys.stderr)
        prompts.append({
            "name": name, "kind": kind, "source": source, "text": text, "prompt_ids": ids,
            "teacher_forced": {"llama_cpp": tf, "top2": tf_top2, "float64": ftf, "float64_top2": ftf_top2,
                               "mean_abs_diff": r5(d.mean()), "max_abs_diff": r5(d.max()),
                               "top1_agreement": agree},
            "greedy": {"llama_cpp_ids": gen, "top2": gen_top2, "eos_at": eos_at,
                       "text": lc.llm.detokenize(gen, special=True).decode("utf-8", "replace"),
                       "float64_ids": fgen, "float64_top2": fgen_top2,
                       "common_prefix_with_float64": same_prefix},
        })

    # debugging aid on a short prompt
    dids = lc.tokenize(DEBUG_PROMPT)
    _, _, dgen, _, _, dlast = lc.run(dids)
    trace = {}
    flog = ref.forward(dids, ref.new_cache(), trace=trace)[-1]
    top10 = lambda z: [[int(i), r5(z[i])] for i in np.argsort(-z, kind="stable")[:10]]
    first8 = lambda a: [float(x) for x in a[:8]]
    debug = {
        "text": DEBUG_PROMPT, "prompt_ids": dids,
        "llama_cpp_last_logits_top10": top10(dlast),
        "float64_last_logits_top10": top10(flog),
        "llama_cpp_greedy_ids": dgen,
        "float64": {
            "embedding_pos0_first8": first8(trace["embedding"][0]),
            "attn_norm_layer0_pos0_first8": first8(trace["attn_norm_0"][0]),
            "q_after_rope_layer0_pos1_head0_first8": first8(trace["q_rope_0"][1, 0]),
            "k_after_rope_layer0_pos1_kvhead0_first8": first8(trace["k_rope_0"][1, 0]),
            "hidden_after_attn_layer0_pos0_first8": first8(trace["after_attn_0"][0]),
            "hidden_after_layer0_pos0_first8": first8(trace["after_layer_0"][0]),
            "final_norm_pos0_first8": first8(trace["final_norm"][0]),
            "final_norm_last_first8": first8(trace["final_norm"][-1]),
        },
    }

    ad = np.array(stats["abs_diff"])
    summary = {
        "mean_abs_logprob_diff": r5(ad.mean()), "median_abs_logprob_diff": r5(np.median(ad)),
        "p99_abs_logprob_diff": r5(np.percentile(ad, 99)), "max_abs_logprob_diff": r5(ad.max()),
        "top1_agreement": r5(stats["top1_agree"] / stats["top1_total"]),
        "top1_positions": stats["top1_total"],
        "greedy_identical_prompts": sum(p == N_GEN for p in stats["greedy_prefix"]),
        "greedy_mean_common_prefix": r5(np.mean(stats["greedy_prefix"])),
    }
    print("summary", summary, file=sys.stderr)

    doc = {
        "model": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "model_sha256": sha256(MODEL),
        "llama_cpp_python": llama_cpp.__version__,
        "gguf_py": getattr(gguf, "__version__", None) or _dist_version("gguf"),
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "settings": {"n_ctx": N_CTX, "n_batch": N_CTX, "n_ubatch": N_CTX, "n_threads": N_THREADS,
                     "logits_all": True, "tokenize": {"add_bos": False, "special": True},
                     "greedy": {"n": N_GEN, "sampler": "argmax, lowest id on ties", "ignore_eos": True,
                                "repetition_penalty": None},
                     "logprob": "natural log-softmax in float64 of the logits, rounded to 5 decimals",
                     "teacher_forced_index": "entry t-1 is log p(prompt_ids[t] | prompt_ids[:t])",
                     "top2": "[id1, logprob1, id2, logprob2]"},
        "hparams": ref.hparams,
        "eog_ids": sorted(lc.eog),
        "summary_float64_vs_llama_cpp": summary,
        "debug": debug,
        "prompts": prompts,
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    OUT_JSON.write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {OUT_JSON} ({OUT_JSON.stat().st_size} bytes) in {time.time() - t_start:.0f}s", file=sys.stderr)


def _dist_version(name):
    from importlib.metadata import version
    return version(name)


if __name__ == "__main__":
    main()
