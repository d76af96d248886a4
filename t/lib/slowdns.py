#!/usr/bin/env python3
# slowdns.py -- a DNS server of t/146-redis-dns.t that answers as slowly as
# the test says: on UDP port 53 of a free 127.x.y.z address (written to
# --ready once bound), A queries for --name get --answer after the number of
# seconds in --delay-file (read when the query arrives; 0 or no file: at
# once), AAAA queries for it NOERROR with no records after the seconds in
# --aaaa-delay-file (the same rules), any other name NXDOMAIN at once.  One line per
# query into --log: "TIME NAME TYPE DELAY".  Exits after --lifetime seconds
# whatever happens to the test.
#
#   slowdns.py --name redis.slow.test --answer 127.0.0.1 --delay-file F --ready F --log F
import argparse
import os
import random
import socket
import struct
import sys
import threading
import time

A, AAAA, IN = 1, 28, 1


def parse_question(q):
    """(id, flags, qname, qtype, end of the question) of a query, or None."""
    if len(q) < 12:
        return None
    qid, flags, qdcount = struct.unpack("!HHH", q[:6])
    if qdcount != 1:
        return None
    labels, i = [], 12
    while i < len(q) and q[i] != 0:
        n = q[i]
        if n > 63 or i + 1 + n > len(q):
            return None
        labels.append(q[i + 1:i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    if i + 5 > len(q):
        return None
    qtype, _ = struct.unpack("!HH", q[i + 1:i + 5])
    return qid, flags, ".".join(labels).lower(), qtype, i + 5


def answer(q, parsed, rcode, rdata):
    qid, flags, _, qtype, end = parsed
    # QR, AA, the query's RD, RA; one question; one A record (TTL 0: nothing cached) or none.
    out = struct.pack("!HHHHHH", qid, 0x8480 | (flags & 0x0100) | rcode, 1, 1 if rdata else 0, 0, 0) + q[12:end]
    if rdata:
        out += struct.pack("!HHHIH", 0xC00C, qtype, IN, 0, len(rdata)) + rdata
    return out


def bind():
    for _ in range(50):
        addr = "127.77.%d.%d" % (random.randint(0, 255), random.randint(1, 254))
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((addr, 53))
            return s, addr
        except OSError:
            s.close()
    sys.exit("no free 127.77.x.y:53")


def delay_of(path):
    try:
        with open(path) as f:
            return float(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--answer", required=True)
    ap.add_argument("--delay-file", required=True)
    ap.add_argument("--aaaa-delay-file")
    ap.add_argument("--ready", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--lifetime", type=float, default=300)
    o = ap.parse_args()
    name, rdata = o.name.lower(), socket.inet_aton(o.answer)
    s, addr = bind()
    log = open(o.log, "a", buffering=1)
    lock = threading.Lock()
    with open(o.ready + ".tmp", "w") as f:
        f.write(addr + "\n")
    os.rename(o.ready + ".tmp", o.ready)
    end = time.time() + o.lifetime
    while time.time() < end:
        s.settimeout(max(0.1, end - time.time()))
        try:
            q, peer = s.recvfrom(4096)
        except socket.timeout:
            continue
        p = parse_question(q)
        if p is None:
            continue
        qname, qtype = p[2], p[3]
        delay = 0.0
        if qname != name:
            reply = answer(q, p, 3, None)  # NXDOMAIN
        elif qtype == A:
            reply, delay = answer(q, p, 0, rdata), delay_of(o.delay_file)
        else:
            reply = answer(q, p, 0, None)  # NOERROR, no records
            delay = delay_of(o.aaaa_delay_file) if qtype == AAAA and o.aaaa_delay_file else 0.0
        with lock:
            log.write("%.3f %s %d %.1f\n" % (time.time(), qname, qtype, delay))
        if delay > 0:
            threading.Timer(delay, s.sendto, (reply, peer)).start()
        else:
            s.sendto(reply, peer)


if __name__ == "__main__":
    main()
