#!/usr/bin/env python3
"""Writes the WordPiece tokenizer's reference fixture with Hugging Face `tokenizers` (PyPI):

    Tests/Fixtures/tokenizer/wordpiece_minilm.json

For each test string: the ids `tokenizers` gives for it with the all-MiniLM-L6-v2 tokenizer.json
(BertNormalizer, BertPreTokenizer, WordPiece, [CLS] ... [SEP]), with special tokens added and with
the truncation and padding that tokenizer.json asks for (128, fixed) switched off.

Regenerate (from the repository root; tokenizers 0.23.3 on CPython 3.11 made the committed file):

    python3 -m venv /tmp/wpenv
    /tmp/wpenv/bin/pip install tokenizers==0.23.3
    /tmp/wpenv/bin/python Tests/Fixtures/scripts/make_wordpiece_fixtures.py \
        [Models/cache/all-minilm-l6-v2/tokenizer.json]

Where the strings come from (real text, not written for the test, wherever that matters):
  - prose: the model's own README.md, the GNU GPL 3 and Apache 2.0 licence texts in
    /usr/share/common-licenses (Debian), lines of the Debian copyright files in /usr/share/doc
    (names with accents and other scripts are common there), docstrings of the Python standard
    library;
  - CJK: the UTF-8 sample texts of CPython's test suite (Lib/test/cjkencodings);
  - other scripts: day and month names from glibc's locale sources (/usr/share/i18n/locales),
    also decomposed (NFD) and upper-cased;
  - long paragraphs (more than 256 tokens) joined from the licence texts;
  - edge cases (accents, combining marks, control characters, Unicode spaces, zero-width
    characters, CJK, emoji, punctuation runs, URLs, numbers, long words, the added tokens such as
    [MASK] inside text) are written here.
Files missing on the machine are skipped; every entry carries its `source`. Random choices use a
fixed seed, so the output depends only on the files present.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import inspect
import json
import platform
import random
import re
import string
import sys
import unicodedata
from pathlib import Path

import tokenizers
from tokenizers import Tokenizer

FIXTURES = Path(__file__).resolve().parents[1]  # Tests/Fixtures
REPO = FIXTURES.parents[1]
DEFAULT_TOKENIZER = REPO / "Models/cache/all-minilm-l6-v2/tokenizer.json"
OUT = FIXTURES / "tokenizer/wordpiece_minilm.json"

rng = random.Random(20240531)
cases: list[tuple[str, str]] = []  # (source, text)


def add(source: str, text: str) -> None:
    cases.append((source, text))


def paragraphs(text: str) -> list[str]:
    return [p.strip("\n") for p in re.split(r"\n\s*\n", text) if p.strip()]


def read(path: Path | str) -> str | None:
    path = Path(path)
    try:
        if path.suffix == ".gz":
            return gzip.decompress(path.read_bytes()).decode("utf-8")
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        print(f"skipping unreadable {path}", file=sys.stderr)
        return None


# --- prose -------------------------------------------------------------------------------------

readme = read(REPO / "Models/cache/all-minilm-l6-v2/README.md")
if readme:
    lines = [line for line in readme.splitlines() if len(line.strip()) > 3]
    for i, line in enumerate(rng.sample(lines, min(40, len(lines)))):
        add(f"model-readme:line-{i}", line)
    for i, p in enumerate(paragraphs(readme)[:6]):
        add(f"model-readme:paragraph-{i}", p)

gpl = read("/usr/share/common-licenses/GPL-3")
apache = read("/usr/share/common-licenses/Apache-2.0")
gpl_paragraphs = paragraphs(gpl) if gpl else []
apache_paragraphs = paragraphs(apache) if apache else []
for i in sorted(rng.sample(range(len(gpl_paragraphs)), min(25, len(gpl_paragraphs)))):
    add(f"GPL-3:paragraph-{i}", gpl_paragraphs[i])
for i in sorted(rng.sample(range(len(apache_paragraphs)), min(12, len(apache_paragraphs)))):
    add(f"Apache-2.0:paragraph-{i}", apache_paragraphs[i])
# long texts, past the 256-token limit of the model
for name, ps, starts in [("GPL-3", gpl_paragraphs, [10, 40, 80]), ("Apache-2.0", apache_paragraphs, [5])]:
    for start in starts:
        chunk = ps[start:start + 6]
        if chunk:
            add(f"{name}:paragraphs-{start}-{start + len(chunk) - 1}", "\n\n".join(chunk))

copyright_files = sorted(Path("/usr/share/doc").glob("*/copyright"))
non_ascii_lines: list[tuple[str, str]] = []
ascii_lines: list[tuple[str, str]] = []
for path in copyright_files:
    text = read(path)
    if not text:
        continue
    for line in text.splitlines():
        line = line.strip()
        if len(line) < 12:
            continue
        (ascii_lines if line.isascii() else non_ascii_lines).append((path.parent.name, line))
for package, line in rng.sample(non_ascii_lines, min(40, len(non_ascii_lines))):
    add(f"debian-copyright:{package}", line)
for package, line in rng.sample(ascii_lines, min(20, len(ascii_lines))):
    add(f"debian-copyright:{package}", line)

for name in ["json", "argparse", "textwrap", "difflib", "collections", "csv", "heapq", "string",
             "statistics", "unicodedata", "pathlib", "logging", "random", "re"]:
    doc = inspect.getdoc(importlib.import_module(name))
    if doc:
        add(f"python-doc:{name}", doc[:1500])

# --- CJK ---------------------------------------------------------------------------------------

cjk_dir = Path(inspect.getfile(json)).parents[1] / "test" / "cjkencodings"
for name in ["gb2312", "big5", "euc_jp", "shift_jis", "euc_kr", "johab", "gb18030",
             "euc_jisx0213", "big5hkscs", "cp949"]:
    text = read(cjk_dir / f"{name}-utf8.txt")
    if text:
        for i, p in enumerate(paragraphs(text)[:2]):
            add(f"cpython-cjkencodings:{name}:{i}", p[:800])

# --- other scripts: glibc locale day and month names ------------------------------------------


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
               "bn_IN", "ta_IN", "ko_KR", "ja_JP", "zh_CN", "vi_VN", "tr_TR", "fa_IR", "hy_AM",
               "km_KH", "my_MM", "de_DE", "fr_FR", "pl_PL", "cs_CZ", "is_IS", "ro_RO", "hu_HU"]:
    for i, s in enumerate(locale_strings(locale)[:2]):
        add(f"glibc-locale:{locale}:{i}", s)
for locale in ["fr_FR", "vi_VN", "cs_CZ", "el_GR", "ko_KR", "ja_JP"]:
    for s in locale_strings(locale)[:1]:
        add(f"glibc-locale:{locale}:NFD", unicodedata.normalize("NFD", s))
        add(f"glibc-locale:{locale}:upper", s.upper())

# --- edge cases --------------------------------------------------------------------------------

edge = [
    # empty and whitespace
    "", " ", "   ", "\t", "\n", "\r\n", " \t\n\r ", "a  b   c", "a\tb\nc\rd", "trailing   ",
    "\u00a0nbsp\u00a0between\u00a0words", "em\u2003space", "thin\u2009space", "ideographic\u3000space",
    "line\u2028separator", "para\u2029graph", "next\u0085line", "ogham\u1680space",
    "narrow\u202fnbsp", "math\u205fspace", "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a",
    "\u000b\u000c vertical tab and form feed", "\u001c\u001d\u001e\u001f separators",
    # zero-width and format characters
    "zero\u200bwidth", "zero\u200cwidth\u200dnon-joiner", "\ufeffbom at start", "soft\u00adhyphen",
    "left\u200eto\u200fright", "word\u2060joiner", "\u202aembedded\u202c", "mongolian\u180evowel",
    "arabic\u061cmark", "invisible\u2062times",
    # control characters, NUL, replacement character, private use, noncharacters
    "\u0000", "a\u0000b", "nul\u0000\u0000\u0000end", "\u0001\u0002\u0003", "bell\u0007",
    "esc\u001b[31mred\u001b[0m", "\u007f", "del\u007fete", "\u0080\u0081\u009f", "\ufffd",
    "bad\ufffd\ufffdbytes", "\ue000 private use", "private\uf8ffapple", "\U000f0000\U0010fffd",
    "\uffff", "\ufdd0\ufdef", "\U0010ffff",
    # accented Latin
    "café", "naïve", "Ångström", "résumé", "Crème brûlée", "Dvořák", "Łódź", "São Paulo",
    "Zürich", "Ærøskøbing", "Œuvre", "façade", "jalapeño", "El Niño", "Ñandú", "Björk",
    "Straße STRASSE", "İstanbul ıi", "Tiếng Việt có dấu", "Hà Nội", "Gdańsk", "Ελληνικά",
    "ÀÁÂÃÄÅ àáâãäå ÈÉÊË èéêë", "Æ æ Ð ð Ø ø Þ þ", "ǅ ǈ ǋ ǲ titlecase digraphs",
    "\u212b angstrom sign", "\u212a kelvin sign", "ﬁ ﬂ ﬀ ﬃ ligatures", "ｆｕｌｌｗｉｄｔｈ ＡＢＣ",
    "ℌ𝔢𝔩𝔩𝔬 𝕎𝕠𝕣𝕝𝕕", "½ ¾ ⅓", "x² y³", "№ ™ ℠",
    # combining marks (decomposed input, stacked marks, marks without a base)
    "e\u0301", "cafe\u0301", "a\u0300\u0301\u0302\u0303\u0304", "Z\u0351\u0352\u0353\u0354algo",
    "Z̸̢̛̛͎̺̥̼̯͚̖͍̀͗̌̐̆̒ͅa̷̛̠͕͙͈̯̓̓̄̍͐l̴̨̬̗̐̌g̸͔̬͛̈́ǫ̶̰̓", "\u0301starts with a mark", "n\u0303 ñ",
    "A\u030a \u00c5 \u212b", "q\u0307\u0323 q\u0323\u0307", "\u0344\u0345", "ḋ\u0323",
    "\u1e9b\u0323", "\u0390 \u03b0", "क़ क\u093c", "ﬀ\u0301",
    # Greek and Cyrillic
    "ΣΊΣΥΦΟΣ σίσυφος", "Ἀριστοτέλης", "ὈΔΥΣΣΕΎΣ", "Москва — столица России.",
    "Київ, Україна", "Ёлка ёжик", "Српски језик", "ПРИВЕТ, МИР!",
    # CJK, kana, hangul
    "東京都", "中文分词测试：我爱北京天安门。", "日本語のテキスト、ひらがなとカタカナ。",
    "がぎぐげご ガギグゲゴ ぱぴぷぺぽ", "ｶﾞｷﾞｸﾞ halfwidth kana", "한국어 텍스트입니다.",
    "서울특별시", "\u1100\u1161\u11a8 conjoining jamo", "豈 更 車 compatibility ideographs",
    "\U00020000\U0002a6d6\U0002b740\U0002b820\U0002b920 extension ideographs",
    "〇一二三", "漢字kanji混合mixed", "“中文引号”《书名》【括号】", "Ａ１！？",
    # other scripts
    "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "สวัสดีชาวโลก", "ሰላም ልዑል", "გამარჯობა",
    "Բարեւ", "ᚠᚢᚦᚨᚱᚲ", "𐌰𐌱𐌲 gothic", "ꦗꦮ javanese",
    # emoji
    "😀", "👍🏽", "👨\u200d👩\u200d👧\u200d👦", "🏳️\u200d🌈", "🇫🇷🇯🇵", "❤️", "☕", "emoji😀inside",
    "1️⃣2️⃣", "🫠🫡", "text 🎉🎉🎉 party", "✓ ✗ ★ ☆ ♠ ♣",
    # punctuation runs and symbols
    "!!!", "?!?!", "...", "…", "---", "—–-", "(((nested)))", "[]{}<>", "'\"`", "«guillemets»",
    "„Anführungszeichen“", "¿Qué?", "¡Hola!", "a,b;c:d", "@#$%^&*", "~~~", "=>", "->", "::",
    "!=", "===", "/* comment */", "<br/>", "&amp;&lt;&gt;", "$100", "€50 £20 ¥1000", "§ ¶ † ‡",
    "a+b=c", "x^2|y", "under_score", "kebab-case-word", "don't", "it's", "rock 'n' roll",
    "‘curly’ “quotes”", "dash—em dash–en", "·•‣", "〜～", "¡¿", "‼⁉", "(c) ©",
    # URLs, paths, code
    "https://www.sbert.net/docs/pretrained_models.html#model-overview",
    "http://example.com/path?query=1&b=two#frag", "user.name+tag@example.co.uk",
    "/usr/share/doc/README.md", "C:\\Windows\\System32", "snake_case_identifier = 42",
    "func encode(_ text: String) -> [Int32]", "if (a < b && c > d) { return; }",
    "<div class=\"x\">Hi</div>", "{\"key\": [1, 2, 3], \"ok\": true}", "SELECT * FROM t WHERE id=1;",
    # numbers
    "0", "42", "1234567890", "3.14159", "-273.15", "1e-9", "6.022e23", "1,000,000", "2024-01-31",
    "12:34:56", "v1.2.3", "0x7fff_ffff", "+44 20 7946 0958", "٠١٢٣٤٥٦٧٨٩", "०१२३", "①②③",
    "Ⅻ Ⅷ", "98.6°F", "50%", "#1", "1st 2nd 3rd 4th",
    # words that split into many pieces, long words and the 100-character limit
    "antidisestablishmentarianism", "pneumonoultramicroscopicsilicovolcanoconiosis",
    "supercalifragilisticexpialidocious", "hippopotomonstrosesquippedaliophobia",
    "Donaudampfschifffahrtsgesellschaftskapitän", "electroencephalographically",
    "unbelievably unrecognizable untokenizable", "ACGTTGCAACGTAGCTAGCTAGGCTA",
    "aGVsbG8gd29ybGQgdGhpcyBpcyBiYXNlNjQ=", "3f2a9c7be1d04f55a6b8c9d0e1f2a3b4",
    "a" * 99, "b" * 100, "c" * 101, "x" * 250, "é" * 100, "é" * 101, "word " + "z" * 150 + " word",
    "ab" * 60, "Ω" * 101, "再" * 120,
    # the added tokens inside text
    "[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]", "Paris is the [MASK] of France.",
    "hello[SEP]world", "[CLS][CLS]", "[[MASK]]", "[MASK][MASK]", "[cls] [mask] lower case",
    "[ MASK ]", "[MASK", "MASK]", "[unused0]", "[SEP] leading and trailing [SEP]",
    "text[UNK]text", "x[PAD]", "Ｍ[MASK]",
    # mixed case
    "Hello World", "HELLO WORLD", "hElLo WoRlD", "McDonald's iPhone macOS", "ALLCAPSWORD",
    "CamelCaseIdentifier", "XMLHttpRequest", "The QUICK brown FoX.",
]
for i, s in enumerate(edge):
    add(f"edge:{i}", s)

# single characters: every ASCII code point and some others
for c in range(128):
    add(f"single:U+{c:04X}", chr(c))
for c in [0x85, 0xA0, 0xAD, 0xB4, 0xB7, 0xBF, 0xD7, 0xE9, 0xFF, 0x130, 0x131, 0x2BC, 0x300,
          0x37E, 0x387, 0x55A, 0x5BE, 0x60C, 0x6D4, 0x964, 0xE3F, 0x166D, 0x1734, 0x180E,
          0x1885, 0x2010, 0x2019, 0x201C, 0x2026, 0x2030, 0x203B, 0x20AC, 0x2116, 0x2603,
          0x3001, 0x3002, 0x3099, 0x30FB, 0x4E00, 0x9FFF, 0xA9BD, 0xAC00, 0xD7A3, 0xF900,
          0xFE10, 0xFF01, 0xFF5E, 0xFFFD, 0x1171E, 0x111C9, 0x1F600, 0x10348, 0x2A6DF, 0x2B820,
          0x2F800, 0xE0001]:
    add(f"single:U+{c:04X}", chr(c))

# random words from the alphabet, to exercise long ## chains (fixed seed)
for i in range(15):
    n = rng.randint(8, 40)
    add(f"random-letters:{i}", "".join(rng.choice(string.ascii_lowercase) for _ in range(n)))
for i in range(5):
    n = rng.randint(5, 20)
    add(f"random-mixed:{i}", "".join(
        rng.choice(string.ascii_letters + string.digits + string.punctuation + "éüñßøåç ")
        for _ in range(n)))

# --- tokenize ----------------------------------------------------------------------------------

tokenizer_path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_TOKENIZER
tok = Tokenizer.from_file(str(tokenizer_path))
tok.no_truncation()
tok.no_padding()

entries = []
seen = set()
longest = 0
for source, text in cases:
    if text in seen:
        continue
    seen.add(text)
    ids = tok.encode(text, add_special_tokens=True).ids
    plain = tok.encode(text, add_special_tokens=False).ids
    assert ids[0] == 101 and ids[-1] == 102 and ids[1:-1] == plain, (source, text)
    longest = max(longest, len(ids))
    entries.append({"source": source, "text": text, "ids": ids})

try:
    shown_path = str(tokenizer_path.resolve().relative_to(REPO))
except ValueError:
    shown_path = str(tokenizer_path)
header = {
    "generator": "Tests/Fixtures/scripts/make_wordpiece_fixtures.py",
    "tokenizers": tokenizers.__version__,
    "python": platform.python_version(),
    "tokenizer_json": shown_path,
    "tokenizer_json_sha256": hashlib.sha256(tokenizer_path.read_bytes()).hexdigest(),
    "vocab_size": tok.get_vocab_size(),
    "cls": tok.token_to_id("[CLS]"),
    "sep": tok.token_to_id("[SEP]"),
    "pad": tok.token_to_id("[PAD]"),
    "unk": tok.token_to_id("[UNK]"),
    "mask": tok.token_to_id("[MASK]"),
}
OUT.parent.mkdir(parents=True, exist_ok=True)
with OUT.open("w", encoding="utf-8") as f:
    f.write("{\n")
    for key, value in header.items():
        f.write(f"  {json.dumps(key)}: {json.dumps(value)},\n")
    f.write('  "cases": [\n')
    f.write(",\n".join(
        "    " + json.dumps(e, ensure_ascii=False, separators=(",", ":")) for e in entries))
    f.write("\n  ]\n}\n")
print(f"wrote {OUT}: {len(entries)} strings, longest {longest} ids, {OUT.stat().st_size} bytes",
      file=sys.stderr)
