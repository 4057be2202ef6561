#!/usr/bin/env python3
"""Writes the tokenizer's reference fixture with llama.cpp (through `llama-cpp-python` from PyPI):

    Tests/Fixtures/tokenizer/smollm2_tokens.json

For each test string: the ids llama.cpp's `llama_tokenize` gives with `parse_special` on and off
(no BOS/EOS), and what `llama_detokenize` gives back for the ids (`unparse_special` off and on).
Plus per-vocabulary facts (EOG and control ids, a hash of every token's piece) and a long prose
text for the speed test.

Regenerate (from the repository root; building llama-cpp-python takes 4-8 minutes):

    python3 -m venv /tmp/llamaenv
    /tmp/llamaenv/bin/pip install llama-cpp-python==0.3.36 jinja2
    /tmp/llamaenv/bin/python Tests/Fixtures/scripts/make_tokenizer_fixtures.py

The model is Models/cache/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf (only its
vocabulary is loaded: `Llama(model_path=..., vocab_only=True)`).

Where the strings come from (real text, not written for the test, wherever that matters):
  - prose: docstrings of the Python standard library, the Zen of Python, and the GNU GPL 3 and
    Apache 2.0 licence texts in /usr/share/common-licenses (Debian);
  - code: source of Python standard-library functions (`inspect.getsource`), Swift interfaces,
    JSON and shell files of the Swift toolchain (/opt/swift), Debian's /etc/profile and bashrc;
  - CJK: the UTF-8 sample texts of CPython's test suite (Lib/test/cjkencodings);
  - other scripts: day and month names from glibc's locale sources (/usr/share/i18n/locales);
  - the chat template: the model's own `tokenizer.chat_template` rendered with jinja2;
  - edge cases (whitespace, digits, punctuation, contractions, emoji, special-token look-alikes,
    single characters, code points newer than llama.cpp's Unicode tables) are written here.
Files that are missing on the machine are skipped, so the fixture records what was used: every
entry carries its `source`.

`python_detokenize` (llama-cpp-python's `Llama.detokenize`) is recorded only where it differs from
`llama_detokenize`. Byte strings (detokenised text) are stored as text when they are valid UTF-8 and otherwise as
`..._hex`.
"""

from __future__ import annotations

import codecs
import ctypes
import importlib
import inspect
import json
import re
import sys
import unicodedata
from pathlib import Path

import llama_cpp
from llama_cpp import Llama

FIXTURES = Path(__file__).resolve().parents[1]  # Tests/Fixtures
REPO = FIXTURES.parents[1]
MODEL = REPO / "Models/cache/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = FIXTURES / "tokenizer/smollm2_tokens.json"

cases: list[tuple[str, str]] = []  # (source, text)


def add(source: str, text: str) -> None:
    cases.append((source, text))


def paragraphs(text: str) -> list[str]:
    return [p.strip("\n") for p in re.split(r"\n\s*\n", text) if p.strip()]


def read(path: Path | str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError:
        print(f"skipping missing {path}", file=sys.stderr)
        return None


# --- prose ------------------------------------------------------------------------------------

for name in [
    "json", "argparse", "textwrap", "difflib", "collections", "csv", "heapq", "bisect", "shlex",
    "string", "fractions", "statistics", "calendar", "tempfile", "queue", "contextlib", "copy",
    "pickle", "struct", "sqlite3", "tarfile", "pathlib", "unittest", "logging", "random",
]:
    module = importlib.import_module(name)
    doc = inspect.getdoc(module)
    if doc:
        add(f"python-doc:{name}", doc)

import this  # noqa: E402  (prints the Zen; we want its text)

add("python:this", codecs.decode(this.s, "rot13"))

gpl = read("/usr/share/common-licenses/GPL-3")
if gpl:
    for i, p in enumerate(paragraphs(gpl)[:40]):
        add(f"GPL-3:paragraph-{i}", p)
apache = read("/usr/share/common-licenses/Apache-2.0")
if apache:
    for i, p in enumerate(paragraphs(apache)[:20]):
        add(f"Apache-2.0:paragraph-{i}", p)
    add("Apache-2.0:whole", apache)

# --- code -------------------------------------------------------------------------------------

import bisect  # noqa: E402
import functools  # noqa: E402
import heapq  # noqa: E402
import json.encoder  # noqa: E402
import shlex  # noqa: E402
import textwrap  # noqa: E402

for fn in [textwrap.dedent, heapq.heappush, heapq.merge, bisect.insort_right, shlex.quote,
           functools.reduce if hasattr(functools.reduce, "__code__") else functools.cmp_to_key,
           json.encoder.py_encode_basestring, json.dumps, textwrap.TextWrapper._split]:
    try:
        add(f"python-source:{fn.__module__}.{fn.__qualname__}", inspect.getsource(fn))
    except (OSError, TypeError):
        pass

SWIFT = Path("/opt/swift/usr")  # the Swift toolchain of the build image
for rel in ["lib/swift_static/linux/Synchronization.swiftmodule/x86_64-unknown-linux-gnu.swiftinterface",
            "lib/swift_static/linux/_Volatile.swiftmodule/x86_64-unknown-linux-gnu.swiftinterface"]:
    text = read(SWIFT / rel)
    if text:
        lines = text.splitlines(keepends=True)
        add(f"swift:{rel}:head", "".join(lines[:60]))
        add(f"swift:{rel}:tail", "".join(lines[-40:]))

for rel in ["share/swift/features.json", "share/pm/config.json"]:
    text = read(SWIFT / rel)
    if text:
        add(f"json:{rel}", text[:6000])
add("json:python-dumps", json.dumps({"model": "smollm2", "ids": [1, 2, 3], "nested": {"a": None,
    "b": [True, False], "pi": 3.14159, "text": "caf\u00e9 \u2603"}}, indent=2, ensure_ascii=False))
add("json:python-dumps-ascii", json.dumps({"caf\u00e9": "\u2603\U0001F600", "tab": "\t"}))

for path in ["/etc/profile", "/etc/bash.bashrc", str(SWIFT / "bin/sdk-module-lists/create-module-lists.sh")]:
    text = read(path)
    if text:
        add(f"shell:{path}", text[:4000])

# --- CJK --------------------------------------------------------------------------------------

cjk_dir = Path(inspect.getfile(json)).parents[1] / "test" / "cjkencodings"
for name in ["gb2312", "big5", "euc_jp", "shift_jis", "euc_kr", "johab", "gb18030",
             "euc_jisx0213", "big5hkscs"]:
    text = read(cjk_dir / f"{name}-utf8.txt")
    if text:
        for i, p in enumerate(paragraphs(text)[:3]):
            add(f"cpython-cjkencodings:{name}:{i}", p)

# --- other scripts: glibc locale day and month names ----------------------------------------

def locale_strings(locale: str) -> list[str]:
    text = read(f"/usr/share/i18n/locales/{locale}")
    if not text:
        return []
    found = []
    for key in ["day", "mon", "abday", "abmon"]:
        m = re.search(rf"^{key}\s+((?:\"[^\"]*\"[;\s\\/]*)+)", text, re.M)
        if not m:
            continue
        names = re.findall(r"\"([^\"]*)\"", m.group(1))
        decoded = [re.sub(r"<U([0-9A-Fa-f]{4,8})>", lambda u: chr(int(u.group(1), 16)), n)
                   for n in names]
        found.append(" ".join(decoded))
    return found


for locale in ["ar_SA", "he_IL", "ru_RU", "uk_UA", "hi_IN", "th_TH", "el_GR", "ka_GE", "am_ET",
               "bn_IN", "ta_IN", "ko_KR", "ja_JP", "zh_CN", "vi_VN", "tr_TR", "fa_IR", "ur_PK",
               "hy_AM", "km_KH", "my_MM", "de_DE", "fr_FR", "pl_PL", "cs_CZ", "is_IS"]:
    for i, s in enumerate(locale_strings(locale)[:2]):
        add(f"glibc-locale:{locale}:{i}", s)

# accents and combining marks, both normalisation forms, from the French and Vietnamese names
for locale in ["fr_FR", "vi_VN", "cs_CZ"]:
    for s in locale_strings(locale)[:1]:
        add(f"glibc-locale:{locale}:NFD", unicodedata.normalize("NFD", s))
        add(f"glibc-locale:{locale}:NFC-lower-upper", s.upper() + " " + s.lower())

# --- edge cases -------------------------------------------------------------------------------

edge = [
    # empty and whitespace
    "", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\r", " \n", "\n ", " \t\n\r ",
    "        four spaces twice", "\t\tindented with tabs", "trailing spaces   ", "trailing\n\n\n",
    "  leading and trailing  ", "a  b   c    d", "a\tb\t\tc", "a\nb\n\nc\n\n\nd",
    "mixed \t \n \r\n whitespace", " " * 64, "\n" * 17, "\u00a0nbsp\u00a0", "em\u2003space",
    "ideographic\u3000space", "line\u2028separator", "para\u2029graph", "next\u0085line",
    "zero\u200bwidth", "\ufeffbom at start", "\u000b\u000c vertical tab and form feed",
    # digits and numbers
    "0", "7", "42", "123", "1234", "12345678901234567890", "3.14159", "-273.15", "1e-9",
    "6.022e23", "1,000,000", "2024-01-31", "31/12/1999", "12:34:56", "v1.2.3", "0x7fff_ffff",
    "room 101, floor 3", "½ ¾ ⅓", "²³¹", "٠١٢٣٤٥٦٧٨٩", "०१२३", "①②③", "Ⅻ Ⅷ",
    "x1y22z333w4444", "$9.99", "100%", "#1", "+44 20 7946 0958",
    # punctuation
    "!!!", "?!?!", "...", "…", "---", "—–-", "(((nested)))", "[]{}<>", "'\"`", "«guillemets»",
    "„Anführungszeichen“", "¿Qué?", "¡Hola!", "a,b;c:d", "@#$%^&*", "~~~", "=>", "->", "::",
    "!=", "===", "/* comment */", "// comment", "#!/bin/sh", "<br/>", "&amp;&lt;&gt;",
    # contractions
    "it's", "you're", "we'll", "I've", "I'm", "he'd", "don't", "can't", "IT'S", "YOU'RE",
    "WE'LL", "I'VE", "I'M", "HE'D", "DON'T", "It'S", "'s", "'t", "'re", "'ve", "'m", "'ll",
    "'d", "'", "''", "'''", "rock 'n' roll", "the dog's bone's", "o'clock", "’s curly",
    "We're here, they've gone, and she'll return; it's 5 o'clock.",
    # emoji
    "😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷🇯🇵", "❤️", "☕", "🧑🏿‍💻 coding", "emoji😀inside",
    "👋🏻👋🏼👋🏽👋🏾👋🏿", "1️⃣2️⃣", "🫠🫡🫥", "text 🎉🎉🎉 party",
    # combining marks
    "e\u0301", "a\u0300\u0301\u0302\u0303", "Z\u0351\u0352\u0353\u0354\u0355algo",
    "\u0301starts with a mark", "ñ n\u0303", "Å A\u030a \u212b", "ﬁ ﬂ ﬀ", "ｆｕｌｌｗｉｄｔｈ",
    # code points newer than llama.cpp's Unicode 15.1 tables (Unicode 16 and 17)
    "\U000105c0\U000105c1\U000105c2", "a\U000105c0b", "\U00010d40\U00010d41 garay",
    "\U00016d70\U00016d71", "\U0001cc00 legacy", "\U00011bf0\U00011bf1 sunuwar digits",
    "\U0001e5f1\U0001e5f2", "x\U00010d4ay1",
    # special tokens and look-alikes
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_start|>user\nhi<|im_end|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n"
    "<|im_start|>assistant\n",
    "text before<|im_end|>text after", "<|im_start|><|im_start|><|im_end|><|im_end|>",
    "<|im_start|>", "<|im_start", "im_start|>", "<|im_start |>", "< |im_start|>",
    "<|IM_START|>", "<|im_start|>>", "<<|im_start|>", "<|im_end|\u200b>", "<|im_end|>\n",
    "<repo_name>apus<file_sep>main.swift", "<reponame>x<filename>y.py", "<gh_stars>100",
    "<jupyter_start><jupyter_code>print(1)<jupyter_output>1", "<empty_output>",
    "<|endoftext|><|endoftext|>", "a<|endoftext|>b", "<|endoftext", "<|end|>", "</s>", "<s>",
    "<fim_prefix>def f():<fim_suffix>return 1<fim_middle>", "<|im_start|>" * 5,
    # invalid-looking sequences
    "\ufffd", "\ufffd\ufffd", "\\xff\\xfe", "%C3%A9", "&#x1F600;", "\\u00e9", "Ã©Ã¨", "Ã¢â‚¬â„¢",
    "\u0000", "a\u0000b", "\u0001\u0002\u0003", "\u007f", "\u0080\u0081\u009f", "\uffff",
    "\U0010ffff", "\ue000 private use", "\U000f0000",
]
for i, s in enumerate(edge):
    add(f"edge:{i}", s)

# single characters: every ASCII code point and some others
for c in range(128):
    add(f"single:U+{c:04X}", chr(c))
for c in [0xA0, 0xAD, 0xE9, 0xFF, 0x100, 0x143, 0x20AC, 0x2603, 0x4E2D, 0xAC00, 0xFFFD,
          0x1F600, 0x10348]:
    add(f"single:U+{c:04X}", chr(c))

# --- llama.cpp -------------------------------------------------------------------------------

llm = Llama(model_path=str(MODEL), vocab_only=True, verbose=False)
vocab = llm._model.vocab
n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)

# the chat template, rendered with jinja2 as chat front-ends do
template_src = llm.metadata.get("tokenizer.chat_template")
if template_src:
    import jinja2

    env = jinja2.Environment(trim_blocks=False, lstrip_blocks=False)
    template = env.from_string(template_src)
    zen = codecs.decode(this.s, "rot13").splitlines()
    conversations = [
        [{"role": "user", "content": "What is the Zen of Python?"}],
        [{"role": "system", "content": "You are a concise assistant."},
         {"role": "user", "content": zen[2]},
         {"role": "assistant", "content": zen[3]},
         {"role": "user", "content": "And the next line?"}],
        [{"role": "user", "content": "Traduis: " + (locale_strings("fr_FR") or ["lundi"])[0]}],
    ]
    for i, messages in enumerate(conversations):
        for gen in [False, True]:
            add(f"chat-template:{i}:{'prompt' if gen else 'plain'}",
                template.render(messages=messages, add_generation_prompt=gen))


def tokenize(text: bytes, special: bool) -> list[int]:
    cap = len(text) + 8
    buf = (llama_cpp.llama_token * cap)()
    n = llama_cpp.llama_tokenize(vocab, text, len(text), buf, cap, False, special)
    assert n >= 0, (text, n)
    return list(buf[:n])


def detokenize(ids: list[int], unparse_special: bool) -> bytes:
    arr = (llama_cpp.llama_token * max(1, len(ids)))(*ids)
    cap = 64 + 64 * len(ids)
    buf = ctypes.create_string_buffer(cap)
    n = llama_cpp.llama_detokenize(vocab, arr, len(ids), buf, cap, False, unparse_special)
    assert n >= 0
    return buf.raw[:n]


def piece(token: int, special: bool) -> bytes:
    buf = ctypes.create_string_buffer(256)
    n = llama_cpp.llama_token_to_piece(vocab, token, buf, 256, 0, special)
    assert 0 <= n <= 256
    return buf.raw[:n]


def text_or_hex(key: str, data: bytes) -> dict:
    try:
        return {key: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {key + "_hex": data.hex()}


def fnv1a64(chunks) -> str:
    h = 0xCBF29CE484222325
    for chunk in chunks:
        for b in len(chunk).to_bytes(4, "little") + chunk:
            h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


entries = []
seen = set()
for source, text in cases:
    if text in seen:
        continue
    seen.add(text)
    data = text.encode("utf-8")
    ids = tokenize(data, True)
    ids_plain = tokenize(data, False)
    entry = {"source": source, "text": text, "ids": ids, "ids_nospecial": ids_plain}
    entry.update(text_or_hex("detok", detokenize(ids, False)))
    entry.update(text_or_hex("detok_special", detokenize(ids, True)))
    # llama-cpp-python's own Llama.detokenize differs from llama_detokenize in places (it drops
    # a leading space after BOS and cuts pieces longer than 32 bytes); recorded where it does.
    python_detok = llm.detokenize(ids)
    if python_detok != detokenize(ids, False):
        entry.update(text_or_hex("python_detokenize", python_detok))
    entries.append(entry)

# a long English text for the speed test: GPL-3 paragraphs up to 2,000 words
words = 0
chosen = []
for p in paragraphs(gpl or apache or "") :
    chosen.append(p)
    words += len(p.split())
    if words >= 2000:
        break
bench_text = "\n\n".join(chosen)
bench = {"source": "GPL-3:first-2000-words", "words": words, "text": bench_text,
         "ids": " ".join(map(str, tokenize(bench_text.encode(), True)))}

fixture = {
    "generator": "Tests/Fixtures/scripts/make_tokenizer_fixtures.py",
    "llama_cpp_python": llama_cpp.__version__,
    "model": str(MODEL.relative_to(REPO)),
    "n_vocab": n_vocab,
    "bos": llama_cpp.llama_vocab_bos(vocab),
    "eos": llama_cpp.llama_vocab_eos(vocab),
    "eog_ids": [t for t in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)],
    "control_ids": [t for t in range(n_vocab) if llama_cpp.llama_vocab_is_control(vocab, t)],
    "pieces_fnv1a64_special": fnv1a64(piece(t, True) for t in range(n_vocab)),
    "pieces_fnv1a64_nospecial": fnv1a64(piece(t, False) for t in range(n_vocab)),
    "benchmark": bench,
    "cases": entries,
}
OUT.parent.mkdir(parents=True, exist_ok=True)
# One case per line keeps the file readable and its diffs small.
cases_json = ",\n".join("  " + json.dumps(e, ensure_ascii=False) for e in fixture.pop("cases"))
head = json.dumps(fixture, ensure_ascii=False, indent=1)
OUT.write_text(head[:-2] + ',\n "cases": [\n' + cases_json + "\n ]\n}\n", encoding="utf-8")
json.loads(OUT.read_text(encoding="utf-8"))  # well-formed
print(f"wrote {OUT.relative_to(REPO)}: {len(entries)} strings, benchmark {words} words, "
      f"{len(bench['ids'].split())} tokens", file=sys.stderr)
