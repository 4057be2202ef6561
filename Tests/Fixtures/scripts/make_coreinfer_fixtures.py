#!/usr/bin/env python3
"""Reference data for CoreInfer sparse decoding: Tests/Fixtures/generation/coreinfer_reference.json

    /tmp/llamaenv/bin/python Tests/Fixtures/scripts/make_coreinfer_fixtures.py
    (numpy 2.4.6 and gguf 0.19.0; about 40 s on 2 cores)

Independent of Apus: the float64 numpy Llama of make_generation_fixtures.py (weights dequantised by
gguf.quants.dequantize), with CoreInfer as the research note describes it (../shared/research/
coreinfer.md, §1.1-1.5, per-token variant of the vote):

* Dense prefill of the prompt. In every sparsified layer (all but the first 3 and last 2), each
  prompt token t votes for its k_t = round(alpha * positives_t) largest entries of the down input
  h = SiLU(gate x) * (up x) (ties at the threshold in neuron order); the layer's core set is the
  round(beta * d_ff) neurons with the most votes, ties by summed positive activation, then index.
* Decode: the sparsified layers' FFN uses only the core neurons (h is zero elsewhere).

Per prompt (eight prompts of smollm2_reference.json: code, prose, chat, non-English; the token ids
come from llama.cpp's tokenizer there): the core sets at alpha 0.4, beta 0.5 (hex bitmasks: bit n of
byte n // 8 for neuron n), and the log-probabilities of a teacher-forced continuation (that
fixture's float64 greedy tokens) through the sparse decode path, with the top-2 at each step. The Swift test feeds these sets to the model (CoreNeurons(fixed:)) and compares the
log-probabilities, and compares the sets Apus chooses itself with these.
"""
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_generation_fixtures import MODEL, Float64Llama, log_softmax, r5, top2  # noqa: E402

ALPHA, BETA, DENSE_FIRST, DENSE_LAST = 0.4, 0.5, 3, 2
# Code, prose, chat and non-English prompts of smollm2_reference.json (by index).
PROMPTS = [0, 4, 6, 9, 13, 16, 19, 27]
CONTINUATION = 12


class SparseLlama(Float64Llama):
    """Float64Llama whose FFN votes during prefill and uses the core sets during decode."""

    def sparsified(self, layer):
        return DENSE_FIRST <= layer < self.n_layer - DENSE_LAST

    state = None  # set by main: the prompt's votes while prefilling, then its sets

    def ffn(self, l, x):
        W, pre, state = self.W, f"blk.{l}.", self.state
        gate = x @ W[pre + "ffn_gate.weight"].T
        up = x @ W[pre + "ffn_up.weight"].T
        h = gate / (1.0 + np.exp(-gate)) * up
        if state["mode"] == "prefill" and self.sparsified(l):
            votes, sums = state["votes"][l], state["sums"][l]
            for row in h:
                pos = row > 0
                sums += np.where(pos, row, 0.0)
                k = int(round(ALPHA * pos.sum()))
                if k == 0:
                    continue
                threshold = np.sort(row[pos])[::-1][k - 1]
                above = np.nonzero(row > threshold)[0]
                ties = np.nonzero(row == threshold)[0][: k - len(above)]
                votes[above] += 1
                votes[ties] += 1
        elif state["mode"] == "decode" and state["sets"][l] is not None:
            mask = np.zeros(self.n_ff)
            mask[state["sets"][l]] = 1
            h = h * mask
        return h @ W[pre + "ffn_down.weight"].T

    def choose(self, state):
        keep = int(round(BETA * self.n_ff))
        sets = []
        for l in range(self.n_layer):
            if not self.sparsified(l):
                sets.append(None)
                continue
            votes, sums = state["votes"][l], state["sums"][l]
            order = sorted(range(self.n_ff), key=lambda n: (-votes[n], -sums[n], n))
            sets.append(sorted(order[:keep]))
        return sets


def bitmask(neurons, count):
    """A set of neurons as hex: bit n (of byte n // 8, least significant first) set for neuron n."""
    bits = bytearray(count // 8)
    for n in neurons:
        bits[n // 8] |= 1 << (n % 8)
    return bits.hex()


def main():
    generation = json.loads((ROOT / "Tests/Fixtures/generation/smollm2_reference.json").read_text())
    ref = SparseLlama(MODEL)
    out = []
    for prompt in (generation["prompts"][i] for i in PROMPTS):
        ids = prompt["prompt_ids"]
        continuation = prompt["greedy"]["float64_ids"][:CONTINUATION]
        state = {"mode": "prefill", "votes": [np.zeros(ref.n_ff, dtype=np.int64) for _ in range(ref.n_layer)],
                 "sums": [np.zeros(ref.n_ff) for _ in range(ref.n_layer)], "sets": None}
        cache = ref.new_cache()
        ref.state = state
        row = log_softmax(ref.forward(ids, cache))[-1]
        state["sets"] = ref.choose(state)
        state["mode"] = "decode"
        logprobs, tops = [], []
        for token in continuation:
            logprobs.append(r5(row[token]))
            tops.append(top2(row))
            row = log_softmax(ref.forward([token], cache))[-1]
        print(f"{prompt['name']}: {len(ids)} tokens", file=sys.stderr)
        out.append({"name": prompt["name"], "prompt_ids": ids, "continuation": continuation,
                    "sets": [None if s is None else bitmask(s, ref.n_ff) for s in state["sets"]],
                    "sparse_logprobs": logprobs, "sparse_top2": tops})
    fixture = {"alpha": ALPHA, "beta": BETA, "dense_first_layers": DENSE_FIRST, "dense_last_layers": DENSE_LAST,
               "prompts": out}
    path = ROOT / "Tests/Fixtures/generation/coreinfer_reference.json"
    path.write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
