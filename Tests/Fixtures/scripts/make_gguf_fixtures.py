#!/usr/bin/env python3
"""Writes the GGUF reader's test fixtures with the PyPI `gguf` package (an independent writer
and reference dequantiser):

    Tests/Fixtures/gguf/small.gguf       metadata of every value type, one tensor per type
    Tests/Fixtures/gguf/small.json       what the Swift tests expect to read from it

Regenerate (from the repository root):

    python3 -m venv /tmp/ggufenv && /tmp/ggufenv/bin/pip install gguf==0.19.0 numpy==2.4.6
    /tmp/ggufenv/bin/python Tests/Fixtures/scripts/make_gguf_fixtures.py

Everything is deterministic (fixed seed), so rerunning with the same package versions gives the
same bytes.

Tensor data: random normal values (seed 1234). F32/F16/BF16/Q8_0/Q4_0/Q4_1 go through
`gguf.quants.quantize`. The package cannot quantise the K-quants (Q4_K, Q5_K, Q6_K), so their
blocks are random bytes with the f16 scale fields (`d`, `dmin`) replaced by small finite values;
every bit pattern of the other fields is a valid block. The expected values are what
`gguf.quants.dequantize` gives for the bytes read back from the written file with
`gguf.GGUFReader`, stored as float32 bit patterns so the comparison can be exact.

Metadata scalars are stored in the JSON as strings (decimal integers, shortest round-trip
decimal for floats of their own width, "true"/"false") so that 64-bit integers and floats
survive JSON untouched; arrays are (nested) lists of such strings.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

import gguf
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V

ROOT = Path(__file__).resolve().parents[1]  # Tests/Fixtures
OUT_DIR = ROOT / "gguf"
GGUF_PATH = OUT_DIR / "small.gguf"
JSON_PATH = OUT_DIR / "small.json"

ARCH = "apus-test"
ALIGNMENT = 64  # not the default 32, so that the reader must honour general.alignment
SEED = 1234

# (key, value type, value, array element type or None). Written in this order after
# general.architecture (which GGUFWriter adds first) and general.alignment.
SCALARS = [
    ("test.uint8", V.UINT8, 200),
    ("test.int8", V.INT8, -100),
    ("test.uint16", V.UINT16, 60000),
    ("test.int16", V.INT16, -30000),
    ("test.uint32", V.UINT32, 4_000_000_000),
    ("test.int32", V.INT32, -2_000_000_000),
    ("test.uint64", V.UINT64, 2**64 - 1),
    ("test.int64", V.INT64, -(2**63)),
    ("test.float32", V.FLOAT32, 3.14159),
    ("test.float64", V.FLOAT64, 2.718281828459045),
    ("test.bool_true", V.BOOL, True),
    ("test.bool_false", V.BOOL, False),
    ("test.string", V.STRING, "hello"),
    ("test.unicode", V.STRING, "h\u00e9llo w\u00f6rld \u2014 \u4f60\u597d \U0001f98a"),
    ("test.empty_string", V.STRING, ""),
]

ARRAYS = [
    ("test.array.uint8", V.UINT8, [0, 1, 255]),
    ("test.array.int8", V.INT8, [-128, 0, 127]),
    ("test.array.uint16", V.UINT16, [0, 65535]),
    ("test.array.int16", V.INT16, [-32768, 32767]),
    ("test.array.uint32", V.UINT32, [0, 4294967295]),
    ("test.array.int32", V.INT32, [-2147483648, 7, 2147483647]),
    ("test.array.uint64", V.UINT64, [0, 2**64 - 1]),
    ("test.array.int64", V.INT64, [-(2**63), 2**63 - 1]),
    ("test.array.float32", V.FLOAT32, [0.5, -1.25, 1e-8]),
    ("test.array.float64", V.FLOAT64, [0.1, -2.5e300]),
    ("test.array.bool", V.BOOL, [True, False, True]),
    ("test.array.string", V.STRING, ["a", "\u00fcn\u00ef", "", "<|im_end|>"]),
    # Nested arrays: inner element types are inferred by the writer (int -> int32).
    ("test.array.nested", None, [[1, 2, 3], [4, 5]]),
    ("test.array.nested_strings", None, [["x"], ["y", "z"]]),
    ("test.array.nested3", None, [[[1]], [[2, 3], [4]]]),
]

# Tensors: (name, ggml type, numpy shape (rows first, as numpy), how).
TENSORS = [
    ("t.f32", Q.F32, (2, 64)),
    ("t.f32_3d", Q.F32, (3, 2, 32)),
    ("t.f16", Q.F16, (2, 64)),
    ("t.bf16", Q.BF16, (2, 64)),
    ("t.q8_0", Q.Q8_0, (2, 64)),
    ("t.q4_0", Q.Q4_0, (2, 64)),
    ("t.q4_1", Q.Q4_1, (2, 64)),
    ("t.q4_k", Q.Q4_K, (2, 256)),
    ("t.q5_k", Q.Q5_K, (2, 256)),
    ("t.q6_k", Q.Q6_K, (2, 256)),
]

# Byte offsets of the f16 scale fields inside one block of each K-quant.
K_QUANT_F16_FIELDS = {
    Q.Q4_K: [0, 2],  # d, dmin
    Q.Q5_K: [0, 2],  # d, dmin
    Q.Q6_K: [208],  # d (after ql[128], qh[64], scales[16])
}


def value_type_name(vtype: V) -> str:
    return vtype.name.lower()


def canonical_scalar(vtype: V, value) -> str:
    if vtype == V.FLOAT32:
        return repr(float(np.float32(value)))
    if vtype == V.FLOAT64:
        return repr(float(value))
    if vtype == V.BOOL:
        return "true" if value else "false"
    if vtype == V.STRING:
        return value
    return str(int(value))


def canonical_array(element_type: V | None, values: list):
    """Returns (type name, nested list of canonical strings)."""
    if element_type is not None:
        return f"array<{value_type_name(element_type)}>", [canonical_scalar(element_type, v) for v in values]
    inner = [canonical_array(inferred_type(v), v) for v in values]
    return f"array<{inner[0][0]}>", [v for _, v in inner]


def inferred_type(values: list) -> V | None:
    """The element type GGUFWriter infers for a list (None for lists of lists)."""
    first = values[0]
    if isinstance(first, list):
        return None
    return {str: V.STRING, float: V.FLOAT32, bool: V.BOOL, int: V.INT32}[type(first)]


def make_tensor_bytes(rng: np.random.Generator, qtype: Q, shape: tuple[int, ...]) -> np.ndarray:
    """Encoded bytes (uint8, shape rows × bytes-per-row) or a float array for F32/F16."""
    if qtype in K_QUANT_F16_FIELDS:
        block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
        rows = int(np.prod(shape[:-1]))
        n_blocks = rows * shape[-1] // block_size
        blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
        for field in K_QUANT_F16_FIELDS[qtype]:
            scales = rng.uniform(0.001, 0.05, size=n_blocks).astype(np.float16)
            blocks[:, field : field + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
        return blocks.reshape(*shape[:-1], shape[-1] // block_size * type_size)
    values = rng.standard_normal(size=shape).astype(np.float32)
    if qtype == Q.F32:
        return values
    if qtype == Q.F16:
        return values.astype(np.float16)
    return gguf.quants.quantize(values, qtype)


def main() -> int:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)

    writer = gguf.GGUFWriter(str(GGUF_PATH), ARCH)
    writer.add_custom_alignment(ALIGNMENT)
    for key, vtype, value in SCALARS:
        writer.add_key_value(key, value, vtype)
    for key, element_type, values in ARRAYS:
        writer.add_key_value(key, values, V.ARRAY, sub_type=element_type)

    for name, qtype, shape in TENSORS:
        data = make_tensor_bytes(rng, qtype, shape)
        if data.dtype == np.uint8:
            writer.add_tensor(name, data, raw_dtype=qtype)
        else:
            writer.add_tensor(name, data)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    # Read back with the package's own reader: metadata order/types and tensor bytes.
    reader = gguf.GGUFReader(str(GGUF_PATH))

    expected_metadata = [
        {"key": "general.architecture", "type": "string", "value": ARCH},
        {"key": "general.alignment", "type": "uint32", "value": str(ALIGNMENT)},
    ]
    for key, vtype, value in SCALARS:
        expected_metadata.append({"key": key, "type": value_type_name(vtype), "value": canonical_scalar(vtype, value)})
    for key, element_type, values in ARRAYS:
        type_name, canonical = canonical_array(element_type, values)
        expected_metadata.append({"key": key, "type": type_name, "value": canonical})

    read_keys = [k for k in reader.fields if not k.startswith("GGUF.")]
    assert read_keys == [m["key"] for m in expected_metadata], (read_keys, expected_metadata)
    for m in expected_metadata:
        field = reader.fields[m["key"]]
        outer = gguf.GGUFValueType(field.types[0]).name.lower()
        assert m["type"].startswith(outer), (m, field.types)

    tensors = []
    for (name, qtype, shape), t in zip(TENSORS, reader.tensors):
        assert t.name == name and t.tensor_type == qtype, (t.name, t.tensor_type)
        raw = np.asarray(t.data)
        dequantized = gguf.quants.dequantize(raw, qtype).astype(np.float32).reshape(-1)
        assert dequantized.size == int(np.prod(shape))
        assert np.all(np.isfinite(dequantized)), name
        tensors.append(
            {
                "name": name,
                "type": qtype.name,
                "type_id": int(qtype),
                "dims": [int(d) for d in t.shape],  # ggml order: ne0 (row length) first
                "offset": int(t.data_offset) - int(reader.data_offset),
                "n_bytes": int(t.n_bytes),
                "expected_f32_bits": [int(b) for b in dequantized.view(np.uint32)],
            }
        )

    document = {
        "generator": "Tests/Fixtures/scripts/make_gguf_fixtures.py",
        "gguf_package_version": getattr(gguf, "__version__", None) or package_version("gguf"),
        "numpy_version": np.__version__,
        "version": 3,
        "alignment": ALIGNMENT,
        "data_offset": int(reader.data_offset),
        "file_size": GGUF_PATH.stat().st_size,
        "metadata": expected_metadata,
        "tensors": tensors,
    }
    with open(JSON_PATH, "w", encoding="utf-8") as f:
        f.write(format_json(document))
    print(f"wrote {GGUF_PATH} ({GGUF_PATH.stat().st_size} bytes) and {JSON_PATH} ({JSON_PATH.stat().st_size} bytes)")
    return 0


def format_json(document: dict) -> str:
    """Top-level keys one per line, each list element (metadata entry, tensor) on one line."""
    lines = []
    items = list(document.items())
    for index, (key, value) in enumerate(items):
        comma = "," if index < len(items) - 1 else ""
        if isinstance(value, list):
            elements = [json.dumps(v, ensure_ascii=False) for v in value]
            body = ",\n    ".join(elements)
            lines.append(f"  {json.dumps(key)}: [\n    {body}\n  ]{comma}")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}{comma}")
    return "{\n" + "\n".join(lines) + "\n}\n"


def package_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    sys.exit(main())
