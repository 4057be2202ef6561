#!/usr/bin/env python3
"""Reference embeddings of all-MiniLM-L6-v2 from sentence-transformers.

    Tests/Fixtures/embeddings/minilm_reference.json

Regenerate (from the repository root; Python 3.11.7). PyPI's torch wheel pulls in the CUDA
runtime packages (about 3 GB on disk); nothing else is needed and it runs on the CPU. The install
took about 3 minutes here, the run about a minute:

    python3 -m venv /tmp/stenv
    /tmp/stenv/bin/pip install torch==2.15.0
    /tmp/stenv/bin/pip install sentence-transformers==6.2.0 transformers==5.24.0 tokenizers==0.23.3 \
        safetensors==0.8.0 numpy==2.4.6
    HF_HUB_OFFLINE=1 /tmp/stenv/bin/python Tests/Fixtures/scripts/make_embedding_fixtures.py \
        Models/cache/all-minilm-l6-v2

What it writes, per input (texts are real text read from files on this machine, never written for
the test: the Debian licence texts in /usr/share/common-licenses, README and copyright files under
/usr/share/doc, the Vim tutor in several languages and the model's own README.md):

* text: the input string.
* input_ids: the ids sentence-transformers fed the model (`model.tokenize`, i.e. the Hugging Face
  fast tokenizer with [CLS]/[SEP] and truncation at max_seq_length = 256).
* full_length: the token count without truncation (> 256 for the long inputs).
* embedding: `model.encode(..., normalize_embeddings=True)` in float32 (batch size 32, CPU),
  rounded to 8 significant digits.

At least 100 sentences of 6 to 60 words, and at least 10 passages longer than 256 tokens (which
sentence-transformers truncates). Selection is deterministic (sha1 of the text), so the same files
give the same fixture.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[3]
OUT = REPO / "Tests/Fixtures/embeddings/minilm_reference.json"

SHORT_TARGET = 110
LONG_TARGET = 12
PER_FILE = 4  # at most this many sentences from one file, for variety


def read_text(path: Path) -> str | None:
    try:
        raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def sentences(text: str) -> list[str]:
    """Sentences of running prose: paragraphs (blank-line separated) joined into one line and split
    after . ! ? ; keeps those of 6 to 60 words that are mostly letters."""
    out = []
    for paragraph in re.split(r"\n\s*\n", text):
        line = " ".join(paragraph.split())
        for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"'(])", line):
            words = s.split()
            if not 6 <= len(words) <= 60:
                continue
            letters = sum(c.isalpha() for c in s)
            if letters < 0.7 * len(s.replace(" ", "")) or "http" in s or "@" in s:
                continue
            if not s[0].isalpha() and s[0] not in "\"'(":
                continue
            out.append(s)
    return out


def passages(text: str, min_words: int = 260) -> list[str]:
    """Runs of consecutive paragraphs joined until they pass `min_words` words (long inputs)."""
    out, current = [], []
    for paragraph in re.split(r"\n\s*\n", text):
        line = " ".join(paragraph.split())
        if not line:
            continue
        current.append(line)
        if sum(len(p.split()) for p in current) >= min_words:
            out.append("\n\n".join(current))
            current = []
    return out


def collect() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    files: list[Path] = []
    files += sorted(Path("/usr/share/common-licenses").glob("*"))
    files += sorted(Path("/usr/share/doc").glob("*/README*"))
    files += sorted(Path("/usr/share/doc").glob("*/copyright"))
    tutors = sorted(Path("/usr/share/vim").glob("vim*/tutor"))
    if tutors:
        files += sorted(tutors[-1].glob("tutor.*.utf-8"))
    model_readme = Path(ARGS.model) / "README.md"
    files.append(model_readme)

    short: dict[str, tuple[str, str]] = {}
    per_file: list[list[tuple[str, str]]] = []
    for path in files:
        if not path.is_file():
            continue
        text = read_text(path)
        if text is None:
            continue
        found = sorted(set(sentences(text)), key=key)[:PER_FILE]
        per_file.append([(str(path), s) for s in found])

    # Round-robin over files (in sha1 order of their paths) so that no source dominates.
    per_file.sort(key=lambda entries: key(entries[0][0]) if entries else "")
    round_index = 0
    while len(short) < SHORT_TARGET and any(len(e) > round_index for e in per_file):
        for entries in per_file:
            if round_index < len(entries) and len(short) < SHORT_TARGET:
                source, s = entries[round_index]
                short.setdefault(s, (source, s))
        round_index += 1

    # Some licences are symlinks to others (LGPL -> LGPL-3): one copy of each text.
    long: dict[str, tuple[str, str]] = {}
    for path in sorted(Path("/usr/share/common-licenses").glob("*")) + [model_readme]:
        text = read_text(path) if path.is_file() else None
        if text is None:
            continue
        for p in sorted(passages(text), key=key)[:2]:
            long.setdefault(p, (str(path), p))
    chosen = sorted(long.values(), key=lambda e: key(e[1]))[:LONG_TARGET]
    return list(short.values()), chosen


def sig8(x: float) -> float:
    return float(f"{x:.8g}")


def main() -> None:
    import sentence_transformers
    import tokenizers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(2)
    model = SentenceTransformer(ARGS.model, device="cpu")
    assert model.max_seq_length == 256, model.max_seq_length

    short, long = collect()
    entries = short + long
    texts = [t for _, t in entries]
    embeddings = model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)

    records = []
    long_count = 0
    for (source, text), vector in zip(entries, embeddings):
        features = model.tokenize([text])
        ids = features["input_ids"][0][features["attention_mask"][0].bool()].tolist()
        full = len(model.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])
        if full > model.max_seq_length:
            long_count += 1
        records.append({
            "source": source,
            "text": text,
            "input_ids": ids,
            "full_length": full,
            "embedding": [sig8(v) for v in vector.tolist()],
        })

    short_count = sum(1 for r in records if r["full_length"] <= model.max_seq_length)
    assert short_count >= 100, short_count
    assert long_count >= 10, long_count

    document = {
        "model": "all-minilm-l6-v2",
        "max_seq_length": model.max_seq_length,
        "dimension": int(embeddings.shape[1]),
        "normalized": True,
        "generator": {
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "torch": torch.__version__,
            "batch_size": 32,
            "threads": 2,
        },
        "sentences": records,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes): {short_count} short, {long_count} longer than "
          f"{model.max_seq_length} tokens", file=sys.stderr)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", default=str(REPO / "Models/cache/all-minilm-l6-v2"),
                        help="the sentence-transformers model directory")
    ARGS = parser.parse_args()
    main()
