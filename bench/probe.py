#!/usr/bin/env python3
"""The latency probe of the comparison (issue 21 point 3).

A thin flow of UDP packets crosses the load balancer beside the load, each
carrying its send time, so that the bench can say what a daemon adds per
packet (the probe's delay through it minus through the kernel's own HMARK
path in the same round) and no CPU gain is paid in latency invisibly.

  probe.py recv PORT           in a target namespace: receives on PORT (IPv4
                               and IPv6), prints `ready`; on SIGUSR1 prints one
                               JSON line {"count": n, "delaysUs": [...]} of the
                               packets since the last one; exits on SIGTERM.
  probe.py send DST PORT RATE SECONDS
                               in the generator: RATE packets/s for SECONDS
                               from 16 source ports in turn, then prints
                               {"sent": n}.

The delay is the kernel's receive timestamp of the datagram in the target
(SO_TIMESTAMPNS: taken when the packet enters the target's stack, so the
receiver's own scheduling does not count) minus the sender's
CLOCK_REALTIME just before sendto(); one clock for every namespace of the
machine. Python (the standard library only), because Node.js's dgram does
not give the kernel's timestamps.
"""
import json
import os
import select
import signal
import socket
import struct
import sys
import time

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


def recv(port):
    socks = []
    for fam, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        s = socket.socket(fam, socket.SOCK_DGRAM)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        s.bind((addr, port))
        s.setblocking(False)
        socks.append(s)
    delays = []
    report = [False]
    signal.signal(signal.SIGUSR1, lambda *_: report.__setitem__(0, True))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    while True:
        try:
            ready, _, _ = select.select(socks, [], [], 0.05)
        except InterruptedError:
            ready = []
        for s in ready:
            while True:
                try:
                    data, anc, _, _ = s.recvmsg(64, 64)
                except BlockingIOError:
                    break
                if len(data) < 8:
                    continue
                sent = struct.unpack_from("<q", data)[0]
                for level, kind, val in anc:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(val) >= 16:
                        sec, nsec = struct.unpack_from("qq", val)
                        delays.append(round((sec * 1_000_000_000 + nsec - sent) / 1000, 1))
        if report[0]:
            report[0] = False
            # Packets already in the sockets belong to the run that just ended.
            print(json.dumps({"count": len(delays), "delaysUs": delays}), flush=True)
            delays = []


def send(dst, port, rate, seconds):
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    socks = [socket.socket(fam, socket.SOCK_DGRAM) for _ in range(16)]
    count = int(round(rate * seconds))
    t0 = time.monotonic()
    sent = 0
    while sent < count:
        due = min(count, int((time.monotonic() - t0) * rate) + 1)
        while sent < due:
            socks[sent % len(socks)].sendto(struct.pack("<q", time.clock_gettime_ns(time.CLOCK_REALTIME)) + bytes(8), (dst, port))
            sent += 1
        time.sleep(0.001)
    print(json.dumps({"sent": sent}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "recv":
        recv(int(sys.argv[2]))
    elif len(sys.argv) == 6 and sys.argv[1] == "send":
        send(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]))
    else:
        sys.stderr.write("usage: probe.py recv PORT | send DST PORT RATE SECONDS\n")
        sys.exit(2)
