#!/usr/bin/env python3
# h2cancel.py -- a client of t/76-modern.t that walks away from a modern
# request: on one HTTP/2 (prior knowledge) connection it opens stream 1 with
# a 2026-07-28 tools/call, sends part of its body, resets the stream
# (RST_STREAM CANCEL), then asks again on stream 3 with a whole request.
# Prints one JSON line: what stream 3 got (status byte, body) and whether the
# server reset or closed anything.  Frame helpers come from h2attack.py.
#
#   h2cancel.py --port P --key KEY --first BODY1 --name1 NAME --then BODY2 --name2 NAME
import argparse
import json
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from h2attack import (DATA, END_HEADERS, END_STREAM, H2, HEADERS, RST_STREAM, Closed, frame, hpack_str,  # noqa: E402
                      request_block)


def new_name(name, value):
    # "Literal Header Field without Indexing -- New Name".
    return b"\x00" + hpack_str(name) + hpack_str(value)


def block(c, a, name, length):
    out = request_block("POST", "/api/mcp", c.authority(), "application/json")
    for k, v in (("accept", "application/json, text/event-stream"), ("authorization", "Bearer " + a.key),
                 ("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call"), ("mcp-name", name),
                 ("content-length", str(length))):
        out += new_name(k, v)
    return out


class Client(H2):
    """Keeps each stream's first HEADERS block and its DATA."""

    def __init__(self, args):
        super().__init__(args)
        self.heads, self.bodies, self.ended, self.reset_streams = {}, {}, set(), []

    def on_frame(self, ftype, flags, stream, payload):
        if ftype == HEADERS and stream not in self.heads:
            self.heads[stream] = payload
        elif ftype == DATA:
            self.bodies[stream] = self.bodies.get(stream, b"") + payload
        elif ftype == RST_STREAM:
            self.reset_streams.append(stream)
        if ftype in (HEADERS, DATA) and flags & END_STREAM:
            self.ended.add(stream)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bind", default=None)
    p.add_argument("--key", required=True)
    p.add_argument("--first", required=True)
    p.add_argument("--name1", required=True)
    p.add_argument("--then", required=True)
    p.add_argument("--name2", required=True)
    a = p.parse_args()
    c = Client(a)
    first, then = a.first.encode(), a.then.encode()
    out = {"closed": None}
    try:
        c.queue(frame(HEADERS, END_HEADERS, 1, block(c, a, a.name1, len(first))))
        c.queue(frame(DATA, 0, 1, first[:len(first) // 2]))
        c.idle(0.3)
        c.queue(frame(RST_STREAM, 0, 1, struct.pack(">I", 8)))  # CANCEL
        c.idle(0.3)
        c.queue(frame(HEADERS, END_HEADERS, 3, block(c, a, a.name2, len(then))) + frame(DATA, END_STREAM, 3, then))
        deadline = time.time() + 10
        while 3 not in c.ended and time.time() < deadline:
            c.pump(0.1)
    except Closed:
        pass
    head = c.heads.get(3, b"")
    out.update({"closed": c.closed, "status_byte": head[0] if head else None, "body": c.bodies.get(3, b"").decode("utf-8", "replace"),
                "stream1_answered": 1 in c.heads, "server_resets": c.reset_streams})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
