#!/usr/bin/env python3
"""Load generator for the Stripe stand-in (Python 3 standard library only).

    python3 test/standin_load.py --url http://127.0.0.1:PORT [--seconds 2]
        [--connections 32] [--kind create|get]

Keeps --connections keep-alive HTTP/1.1 connections busy for --seconds, one
request at a time on each, and prints one JSON line:
{"requests": N, "seconds": S, "rps": R, "errors": E, "kind": K, "connections": C}.

kind=create sends what the outbox worker sends most: POST /v1/payment_intents
with confirm=true, pm_card_visa, metadata[payment_id] and a fresh
Idempotency-Key each time (so every request is a new charge).  kind=get
retrieves one PaymentIntent over and over.
"""

import argparse
import asyncio
import json
import sys
import time
import uuid
from urllib.parse import urlsplit


def create_request(host, n, tag):
    body = ("amount=2800&currency=usd&confirm=true&payment_method=pm_card_visa"
            "&automatic_payment_methods[enabled]=true&automatic_payment_methods[allow_redirects]=never"
            "&metadata[payment_id]=%s-%d" % (tag, n)).encode()
    head = ("POST /v1/payment_intents HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer sk_test_load\r\n"
            "Stripe-Version: 2023-08-16\r\nIdempotency-Key: %s-%d\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n"
            % (host, tag, n, len(body))).encode()
    return head + body


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    i = head.lower().find(b"content-length:")
    length = int(head[i + 15:head.find(b"\r\n", i)]) if i >= 0 else 0
    body = await reader.readexactly(length)
    return status, body


async def run(url, seconds, connections, kind):
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port
    tag = uuid.uuid4().hex[:12]
    get_req = None
    if kind == "get":
        r, w = await asyncio.open_connection(host, port)
        w.write(create_request("%s:%d" % (host, port), 0, tag))
        status, body = await read_response(r)
        pid = json.loads(body)["id"]
        w.close()
        get_req = ("GET /v1/payment_intents/%s HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer sk_test_load\r\n\r\n"
                   % (pid, host, port)).encode()
    counter = {"n": 0, "ok": 0, "err": 0}
    deadline = time.perf_counter() + seconds

    async def worker():
        reader, writer = await asyncio.open_connection(host, port)
        while time.perf_counter() < deadline:
            counter["n"] += 1
            writer.write(get_req or create_request("%s:%d" % (host, port), counter["n"], tag))
            status, _ = await read_response(reader)
            if status == 200:
                counter["ok"] += 1
            else:
                counter["err"] += 1
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - t0
    done = counter["ok"] + counter["err"]
    return {"requests": done, "seconds": round(elapsed, 3), "rps": round(done / elapsed),
            "errors": counter["err"], "kind": kind, "connections": connections}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--kind", choices=("create", "get"), default="create")
    a = ap.parse_args()
    print(json.dumps(asyncio.run(run(a.url, a.seconds, a.connections, a.kind))))


if __name__ == "__main__":
    sys.exit(main())
