#!/usr/bin/env python3
"""Bounded streaming load generator for text-generation servers (loopback only, stdlib only).

    Benchmarks/serving/load.py --url http://127.0.0.1:8080 --api tgi --clients 16 --requests 32
    Benchmarks/serving/load.py --url http://127.0.0.1:8000 --api openai --clients 4

N clients (--clients) each keep one keep-alive connection and send streaming requests back to back
until --requests requests have been sent in total (default: max(2 x clients, 8)). Each request
asks for --max-new-tokens tokens (default 64) with greedy decoding:

    --api tgi     POST /generate_stream  {"inputs": p, "parameters": {"max_new_tokens": n}}
    --api openai  POST /v1/completions   {"prompt": p, "max_tokens": n, "stream": true, "temperature": 0}

Prompts are real text: windows of sentences from /usr/share/common-licenses/*, cut in the middle of
a sentence so that the model keeps writing (the TGI API has no ignore_eos, so a request may end
early on EOS; the report counts the tokens actually streamed and uses those in every rate). Request
i gets prompt i of a fixed sequence (--seed), so two servers driven with the same arguments see the
same prompts in the same order.

Measured per request: time to first token (TTFT, from sending the request to the first token
event), every inter-token gap (ITL), tokens streamed, end-to-end time. Reported for the run:
aggregate generated tokens/s = all tokens streamed / wall time of the run (first request sent to
last response finished), p50/p99 TTFT, p50/p99 ITL, p50 e2e, errors by kind (HTTP status,
timeout, connection, protocol), requests that ended before --max-new-tokens and why.

Output: one JSON line on stdout; a human summary on stderr. Exit status 0, or 1 when any request
failed. It never hangs: connect (--connect-timeout), each read (--read-timeout), each request
(--request-timeout) and the whole run (--run-timeout) have deadlines.
"""
import argparse
import asyncio
import glob
import ipaddress
import json
import os
import random
import re
import socket
import statistics
import sys
import time
from urllib.parse import urlsplit

LICENCES = "/usr/share/common-licenses"


# ----------------------------------------------------------------------------------------------
# Prompts


def licence_sentences():
    """[(file name, [sentences])] from the licence texts, whitespace-normalised, deduplicated."""
    seen, out = set(), []
    for path in sorted(glob.glob(os.path.join(LICENCES, "*"))):
        real = os.path.realpath(path)
        if real in seen or not os.path.isfile(real):
            continue
        seen.add(real)
        with open(real, encoding="utf-8", errors="replace") as f:
            text = " ".join(f.read().split())
        sentences = []
        for s in re.split(r"(?<=[.;:!?])\s+", text):
            words = s.split()
            letters = sum(c.isalpha() for c in s)
            # Drop rulers, headings, addresses and URLs: keep prose.
            if len(words) >= 6 and letters >= 0.7 * len(s.replace(" ", "")) and "http" not in s:
                sentences.append(s)
        if len(sentences) >= 10:
            out.append((os.path.basename(real), sentences))
    if not out:
        sys.exit(f"load.py: no usable text under {LICENCES}")
    return out


def make_prompt(corpus, rng, words):
    """About `words` words of consecutive sentences from one licence, cut mid-sentence."""
    _, sentences = corpus[rng.randrange(len(corpus))]
    i = rng.randrange(len(sentences))
    out = []
    while len(out) < words:
        out.extend(sentences[i % len(sentences)].split())
        i += 1
    tail = sentences[i % len(sentences)].split()
    out.extend(tail[: max(2, len(tail) // 2)])  # end mid-sentence: "continue this"
    return " ".join(out)


def prompts(n, seed, words):
    corpus = licence_sentences()
    return [make_prompt(corpus, random.Random(seed * 1_000_003 + i), words) for i in range(n)]


# ----------------------------------------------------------------------------------------------
# HTTP/1.1 over asyncio streams


class ProtocolError(Exception):
    pass


def check_loopback(url):
    parts = urlsplit(url)
    if parts.scheme != "http":
        sys.exit(f"load.py: only http:// URLs (got {url!r})")
    host = parts.hostname or ""
    try:
        addrs = {ai[4][0] for ai in socket.getaddrinfo(host, parts.port or 80, proto=socket.IPPROTO_TCP)}
    except socket.gaierror as e:
        sys.exit(f"load.py: cannot resolve {host!r}: {e}")
    for a in addrs:
        if not ipaddress.ip_address(a.split("%")[0]).is_loopback:
            sys.exit(f"load.py: refusing non-loopback target {host!r} ({a}); this tool only drives local servers")
    return parts.hostname, parts.port or 80


class Connection:
    def __init__(self, host, port, connect_timeout, read_timeout):
        self.host, self.port = host, port
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.reader = self.writer = None

    async def open(self):
        if self.writer is None:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.connect_timeout)
            sock = self.writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self):
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:
                pass
        self.reader = self.writer = None

    async def _readline(self):
        line = await asyncio.wait_for(self.reader.readline(), self.read_timeout)
        if not line:
            raise ConnectionError("connection closed by server")
        return line

    async def _readexactly(self, n):
        return await asyncio.wait_for(self.reader.readexactly(n), self.read_timeout)

    async def request(self, path, body, on_data):
        """POSTs JSON body; calls on_data(bytes) for every piece of the response body as it arrives.
        Returns (status, headers, body bytes when not an event stream)."""
        await self.open()
        payload = json.dumps(body).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n").encode()
        self.writer.write(head + payload)
        await self.writer.drain()
        status_line = await self._readline()
        m = re.match(rb"HTTP/1\.[01] (\d{3})", status_line)
        if not m:
            raise ProtocolError(f"bad status line {status_line[:80]!r}")
        status = int(m.group(1))
        headers = {}
        while True:
            line = await self._readline()
            if line in (b"\r\n", b"\n"):
                break
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        streaming = status == 200 and headers.get("content-type", "").startswith("text/event-stream")
        collected = bytearray()
        sink = on_data if streaming else collected.extend
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size_line = await self._readline()
                try:
                    size = int(size_line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size {size_line[:40]!r}")
                if size == 0:
                    while (await self._readline()) not in (b"\r\n", b"\n"):
                        pass  # trailers
                    break
                data = await self._readexactly(size)
                await self._readexactly(2)
                sink(data)
        elif "content-length" in headers:
            n = int(headers["content-length"])
            if n:
                sink(await self._readexactly(n))
        else:  # body delimited by close
            while True:
                data = await asyncio.wait_for(self.reader.read(65536), self.read_timeout)
                if not data:
                    break
                sink(data)
            self.close()
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, bytes(collected)


# ----------------------------------------------------------------------------------------------
# API adapters: turn server-sent events into token timestamps


class SSEParser:
    """Splits a byte stream into SSE `data:` payloads (comments such as `: ping` are ignored)."""

    def __init__(self, on_event):
        self.buf = b""
        self.data = []
        self.on_event = on_event

    def feed(self, chunk):
        self.buf += chunk
        while True:
            nl = self.buf.find(b"\n")
            if nl < 0:
                return
            line, self.buf = self.buf[:nl].rstrip(b"\r"), self.buf[nl + 1:]
            if not line:
                if self.data:
                    self.on_event(b"\n".join(self.data))
                    self.data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                self.data.append(value[1:] if value.startswith(b" ") else value)
            # other fields (event:, id:, retry:) and comments are ignored

    def finish(self):
        if self.data:
            self.on_event(b"\n".join(self.data))
            self.data = []


class Result:
    __slots__ = ("ok", "error", "status", "start", "token_times", "tokens", "end", "finish")

    def __init__(self):
        self.ok, self.error, self.status = False, None, None
        self.start, self.end = 0.0, 0.0
        self.token_times = []
        self.tokens = 0
        self.finish = None  # "length", "eos", "stop", "truncated"


def tgi_request(prompt, n):
    return "/generate_stream", {"inputs": prompt, "parameters": {"max_new_tokens": n}}


def openai_request(prompt, n):
    return "/v1/completions", {"prompt": prompt, "max_tokens": n, "stream": True, "temperature": 0}


def tgi_event(res, payload, now):
    ev = json.loads(payload)
    if "error" in ev and "token" not in ev:
        raise ProtocolError(f"error event: {str(ev['error'])[:120]}")
    tok = ev.get("token")
    if tok is not None:
        res.tokens += 1
        res.token_times.append(now)
        if tok.get("special"):
            res.finish = "eos"
    if ev.get("generated_text") is not None:
        det = ev.get("details") or {}
        res.finish = det.get("finish_reason") or res.finish or "end"


def openai_event(res, payload, now):
    if payload.strip() == b"[DONE]":
        if res.finish is None:
            res.finish = "done-without-finish_reason"  # e.g. llama-cpp-python's interrupt_requests
        return
    ev = json.loads(payload)
    if "error" in ev:
        raise ProtocolError(f"error event: {str(ev['error'])[:120]}")
    choice = (ev.get("choices") or [{}])[0]
    text = choice.get("text") or ""
    reason = choice.get("finish_reason")
    # llama-cpp-python sends one chunk per generated token, then a final chunk with finish_reason
    # (empty text unless it held back bytes of an incomplete character).
    if reason is None or text:
        res.tokens += 1
        res.token_times.append(now)
    if reason is not None:
        res.finish = "length" if reason == "length" else reason


# ----------------------------------------------------------------------------------------------
# Load


async def one_request(conn, api, prompt, n, request_timeout, model=None):
    make, handle = (tgi_request, tgi_event) if api == "tgi" else (openai_request, openai_event)
    path, body = make(prompt, n)
    if model:
        body["model"] = model
    res = Result()
    parse_error = []

    def on_event(payload):
        if parse_error:
            return
        try:
            handle(res, payload, time.perf_counter())
        except (ValueError, ProtocolError) as e:
            parse_error.append(e)

    parser = SSEParser(on_event)
    res.start = time.perf_counter()
    try:
        status, headers, body_bytes = await asyncio.wait_for(
            conn.request(path, body, parser.feed), request_timeout)
        parser.finish()
        res.status = status
        if status != 200:
            res.error = f"http {status}"
            if status == 429:
                res.error = "http 429"
        elif parse_error:
            res.error = f"protocol: {parse_error[0]}"
            conn.close()
        elif res.tokens == 0:
            res.error = "no tokens"
        else:
            res.ok = True
    except asyncio.TimeoutError:
        res.error = "timeout"
        conn.close()
    except (ConnectionError, OSError, asyncio.IncompleteReadError) as e:
        res.error = f"connection: {type(e).__name__}"
        conn.close()
    except ProtocolError as e:
        res.error = f"protocol: {e}"
        conn.close()
    res.end = time.perf_counter()
    if res.ok and res.finish is None:
        res.finish = "truncated"  # stream ended without a final event
    return res


async def run(args, host, port, prompt_list):
    results = []
    next_index = 0
    deadline = time.perf_counter() + args.run_timeout

    async def client():
        nonlocal next_index
        conn = Connection(host, port, args.connect_timeout, args.read_timeout)
        try:
            while next_index < args.requests and time.perf_counter() < deadline:
                i = next_index
                next_index += 1
                left = max(0.1, min(args.request_timeout, deadline - time.perf_counter()))
                res = await one_request(conn, args.api, prompt_list[i], args.max_new_tokens, left, args.model)
                results.append(res)
                if res.status == 429 or (res.error and res.error.startswith("connection")):
                    await asyncio.sleep(0.1)  # do not spin on a refusing server
        finally:
            conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(args.clients)))
    t1 = time.perf_counter()
    return results, t0, t1


def quantile(xs, q):
    """Linear interpolation between closest ranks; None for no data."""
    if not xs:
        return None
    xs = sorted(xs)
    pos = (len(xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarise(args, results, t0, t1):
    ok = [r for r in results if r.ok]
    wall = t1 - t0
    tokens = sum(r.tokens for r in results)  # tokens streamed, also by requests that failed later
    ttft = [r.token_times[0] - r.start for r in ok if r.token_times]
    itl = [b - a for r in ok for a, b in zip(r.token_times, r.token_times[1:])]
    e2e = [r.end - r.start for r in ok]
    per_req_rate = [(r.tokens - 1) / (r.token_times[-1] - r.token_times[0])
                    for r in ok if r.tokens > 1 and r.token_times[-1] > r.token_times[0]]
    errors = {}
    for r in results:
        if not r.ok:
            errors[r.error] = errors.get(r.error, 0) + 1
    finishes = {}
    for r in ok:
        finishes[r.finish] = finishes.get(r.finish, 0) + 1
    ms = lambda x: None if x is None else round(x * 1000, 3)
    return {
        "api": args.api, "url": args.url, "clients": args.clients, "requests": len(results),
        "ok": len(ok), "errors": sum(errors.values()), "error_kinds": errors,
        "max_new_tokens": args.max_new_tokens, "tokens": tokens,
        "tokens_per_request_mean": round(tokens / len(results), 2) if results else None,
        "short_requests": sum(1 for r in ok if r.tokens < args.max_new_tokens), "finish": finishes,
        "wall_s": round(wall, 3), "tokens_per_s": round(tokens / wall, 2) if wall > 0 else None,
        "ttft_p50_ms": ms(quantile(ttft, 0.5)), "ttft_p99_ms": ms(quantile(ttft, 0.99)),
        "ttft_max_ms": ms(max(ttft) if ttft else None),
        "itl_p50_ms": ms(quantile(itl, 0.5)), "itl_p99_ms": ms(quantile(itl, 0.99)),
        "itl_max_ms": ms(max(itl) if itl else None), "itl_count": len(itl),
        "e2e_p50_ms": ms(quantile(e2e, 0.5)), "e2e_max_ms": ms(max(e2e) if e2e else None),
        "per_request_decode_tok_s_p50": round(quantile(per_req_rate, 0.5), 2) if per_req_rate else None,
        "prompt_words": args.prompt_words, "seed": args.seed,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="base URL, loopback only, e.g. http://127.0.0.1:8080")
    ap.add_argument("--api", choices=["tgi", "openai"], required=True)
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--requests", type=int, default=None, help="total requests (default max(2 x clients, 8))")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--prompt-words", type=int, default=60, help="words of licence text per prompt (~1.5 tokens each)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--model", default=None, help="model id to name in each request (default: the server's)")
    ap.add_argument("--connect-timeout", type=float, default=10.0)
    ap.add_argument("--read-timeout", type=float, default=120.0, help="longest silence within a response")
    ap.add_argument("--request-timeout", type=float, default=600.0)
    ap.add_argument("--run-timeout", type=float, default=1800.0, help="no new request after this; run ends")
    ap.add_argument("--quiet", action="store_true", help="no human summary on stderr")
    args = ap.parse_args()
    if args.clients < 1:
        sys.exit("load.py: --clients must be at least 1")
    if args.requests is None:
        args.requests = max(2 * args.clients, 8)
    host, port = check_loopback(args.url)
    prompt_list = prompts(args.requests, args.seed, args.prompt_words)
    results, t0, t1 = asyncio.run(run(args, host, port, prompt_list))
    s = summarise(args, results, t0, t1)
    print(json.dumps(s), flush=True)
    if not args.quiet:
        f = lambda x: "-" if x is None else f"{x:.1f}"
        print(f"{args.api} {args.url}: {s['clients']} clients, {s['requests']} requests "
              f"({s['ok']} ok, {s['errors']} errors {s['error_kinds'] or ''}), {s['tokens']} tokens in "
              f"{s['wall_s']:.2f} s = {s['tokens_per_s']} tok/s\n"
              f"  TTFT p50 {f(s['ttft_p50_ms'])} ms, p99 {f(s['ttft_p99_ms'])} ms; "
              f"ITL p50 {f(s['itl_p50_ms'])} ms, p99 {f(s['itl_p99_ms'])} ms, max {f(s['itl_max_ms'])} ms; "
              f"e2e p50 {f(s['e2e_p50_ms'])} ms\n"
              f"  tokens/request {s['tokens_per_request_mean']}, short {s['short_requests']}, finish {s['finish']}",
              file=sys.stderr)
    sys.exit(1 if s["errors"] else 0)


if __name__ == "__main__":
    main()
