"""One measurement of llama.cpp (llama-cpp-python) for bench_vs_llamacpp.py; prints one JSON line.

Usage: llamacpp_child.py MODEL PROMPT_FILE PROMPT_TOKENS NEW_TOKENS THREADS
Prefill: the whole prompt in one llama_decode batch. Decode: greedy (argmax of the last logits),
one token per llama_decode call, as llama-bench's tg test does.
"""
import json
import sys
import time

import numpy as np
from llama_cpp import Llama


def main():
    model, prompt_file, n_prompt, n_new, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    llm = Llama(model_path=model, n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=threads,
                n_threads_batch=threads, logits_all=False, verbose=False)
    text = open(prompt_file, encoding="utf-8").read()
    pieces = llm.tokenize(text.encode(), add_bos=False, special=False)
    tokens = (pieces * (n_prompt // max(len(pieces), 1) + 1))[:n_prompt]

    def run():
        llm.reset()
        llm._ctx.kv_cache_clear() if hasattr(llm._ctx, "kv_cache_clear") else None
        t0 = time.perf_counter()
        llm.eval(tokens)
        t1 = time.perf_counter()
        for _ in range(n_new):
            nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            llm.eval([nxt])
        t2 = time.perf_counter()
        return len(tokens) / (t1 - t0), (n_new / (t2 - t1)) if n_new else 0.0

    run()  # warm-up
    prefill, decode = run()
    print(json.dumps({"prefill_tokens_per_second": prefill, "decode_tokens_per_second": decode}))


if __name__ == "__main__":
    main()
