#!/usr/bin/env python3
"""Helper of scripts/bench-dns.sh (standard library only).

Subcommands (the shell script calls them; see `bench_dns.py SUB --help`):
  gen       write the registry (JSON lines), the zone file and the dnsperf
            query file for S services x N instances
  freeport  print a loopback port free for both UDP and TCP
  wait      wait until a DNS server answers on a port
  register  PUT every instance of the registry to signpost's admin API
  check     ask every server the same questions and compare the answers
  run       run dnsperf against each server, R rounds, for one placement
            (with --writers, each signpost run again under writes)
  writers   re-register random instances with a new weight until stdin closes
  report    print the tables and write the combined JSON results
  memory    signpost's RSS empty and with a registry of one size loaded
            (--phase load), or after a restart on that data (--phase restart)
  memory-report  the memory table and its JSON results
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.parse

DOMAIN = "internal"
TTL = 5  # signpost's default instance TTL
NS_TTL = 3600  # signpost's apex NS and ns.<domain> TTL
PRIORITY = 10  # signpost's default priority, registered explicitly
CLK_TCK = os.sysconf("SC_CLK_TCK")

QTYPES = {"A": 1, "NS": 2, "SOA": 6, "HINFO": 13, "MX": 15, "TXT": 16,
          "AAAA": 28, "SRV": 33, "OPT": 41}
QTYPE_NAMES = {v: k for k, v in QTYPES.items()}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN",
          4: "NOTIMP", 5: "REFUSED"}


def log(*args):
    print("bench:", *args, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# gen: the data set


# Digits in service names: svc0001..svc9999, and wider (svc00001...) when a
# registry has more services. gen and gen-export set it from their count.
NAME_WIDTH = 4


def set_name_width(services: int) -> None:
    global NAME_WIDTH
    NAME_WIDTH = max(4, len(str(services)))


def service_name(s: int) -> str:
    return f"svc{s:0{NAME_WIDTH}d}"


def instance_id(s: int, i: int) -> str:
    return f"{service_name(s)}-{i}"


def registry(services: int, instances: int, total: int | None = None):
    """Yields (service, id, address, port, weight, meta) for every instance
    (at most `total` of them: then the last service has fewer)."""
    k = 0
    for s in range(1, services + 1):
        for i in range(1, instances + 1):
            if total is not None and k >= total:
                return
            k += 1
            yield instance_row(s, i, k)


def instance_row(s: int, i: int, k: int):
    """Instance i (1-based) of service s, the k-th (1-based) of the registry."""
    n = 0x0A000000 + k  # 10.0.0.1, 10.0.0.2, ...
    address = socket.inet_ntoa(struct.pack(">I", n))
    port = 8000 + i
    weight = 10 + (k * 37) % 91  # 10..100, varied
    meta = {"version": f"v{1 + k % 3}"}
    return service_name(s), instance_id(s, i), address, port, weight, meta


def registration_body(address, port, weight, meta) -> dict:
    return {"address": address, "port": port, "weight": weight,
            "priority": PRIORITY, "meta": meta}


def cmd_gen(a):
    set_name_width(a.services)
    os.makedirs(a.dir, exist_ok=True)
    rows = list(registry(a.services, a.instances))
    with open(os.path.join(a.dir, "registry.jsonl"), "w") as f:
        for svc, iid, addr, port, weight, meta in rows:
            body = registration_body(addr, port, weight, meta)
            f.write(json.dumps({"service": svc, "id": iid, "body": body}) + "\n")

    # The same records as RFC 1035 master file. The serial is what signpost
    # reports after exactly this many registrations (its registry index).
    serial = len(rows)
    zone = [
        f"$ORIGIN {DOMAIN}.",
        f"$TTL {TTL}",
        f"@ {TTL} IN SOA ns.{DOMAIN}. hostmaster.{DOMAIN}. {serial} 3600 600 86400 {TTL}",
        f"@ {NS_TTL} IN NS ns.{DOMAIN}.",
        f"ns {NS_TTL} IN A 127.0.0.1",
    ]
    by_service: dict[str, list] = {}
    for row in rows:
        by_service.setdefault(row[0], []).append(row)
    for svc, insts in by_service.items():
        for _, iid, addr, port, weight, meta in insts:
            target = f"{iid}.{svc}.instance.{DOMAIN}."
            zone.append(f"{svc}.service {TTL} IN A {addr}")
            # signpost serves SRV at both name forms.
            zone.append(f"{svc}.service {TTL} IN SRV {PRIORITY} {weight} {port} {target}")
            zone.append(f"_{svc}._tcp.service {TTL} IN SRV {PRIORITY} {weight} {port} {target}")
        for _, iid, addr, port, weight, meta in insts:
            owner = f"{iid}.{svc}.instance"
            txt = " ".join('"%s=%s"' % (k, v) for k, v in sorted(meta.items()))
            zone.append(f"{owner} {TTL} IN A {addr}")
            zone.append(f"{owner} {TTL} IN TXT {txt}")
    with open(os.path.join(a.dir, "internal.zone"), "w") as f:
        f.write("\n".join(zone) + "\n")

    # Queries: ~45% A, ~45% SRV (half `_svc._tcp.service`, half
    # `svc.service`), ~5% NXDOMAIN, ~5% NODATA; services uniform at random.
    rng = random.Random(a.seed)
    svcs = list(by_service)
    queries = []
    for _ in range(a.queries):
        svc = rng.choice(svcs)
        x = rng.random()
        if x < 0.45:
            queries.append(f"{svc}.service.{DOMAIN} A")
        elif x < 0.675:
            queries.append(f"_{svc}._tcp.service.{DOMAIN} SRV")
        elif x < 0.90:
            queries.append(f"{svc}.service.{DOMAIN} SRV")
        elif x < 0.95:
            n = rng.randrange(1_000_000)
            queries.append(rng.choice([
                f"nosuch{n}.service.{DOMAIN} A",
                f"_nosuch{n}._tcp.service.{DOMAIN} SRV",
                f"{svc}-x{n}.{svc}.instance.{DOMAIN} A",
                f"nosuch{n}.{DOMAIN} A",
            ]))
        else:
            i = rng.randrange(1, a.instances + 1)
            queries.append(rng.choice([
                f"{svc}.service.{DOMAIN} MX",
                f"{svc}.service.{DOMAIN} AAAA",
                f"_{svc}._tcp.service.{DOMAIN} A",
                f"{svc}-{i}.{svc}.instance.{DOMAIN} AAAA",
            ]))
    with open(os.path.join(a.dir, "queries.txt"), "w") as f:
        f.write("\n".join(queries) + "\n")
    log(f"generated {len(svcs)} services x {a.instances} instances "
        f"({len(rows)} registrations, {len(zone)} zone lines, {len(queries)} queries)")


# --------------------------------------------------------------------------
# A minimal DNS client, for readiness and for comparing answers


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\0"


def build_query(qid: int, name: str, qtype: str, edns: bool) -> bytes:
    header = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 1 if edns else 0)
    msg = header + encode_name(name) + struct.pack(">HH", QTYPES[qtype], 1)
    if edns:
        msg += b"\0" + struct.pack(">HHIH", 41, 1232, 0, 0)
    return msg


def read_name(msg: bytes, off: int) -> tuple[str, int]:
    labels, end, hops = [], None, 0
    while True:
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if end is None:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            hops += 1
            if hops > 64:
                raise ValueError("compression loop")
            continue
        off += 1
        if n == 0:
            break
        labels.append(msg[off:off + n].decode("ascii", "replace").lower())
        off += n
    return ".".join(labels) + ".", (end if end is not None else off)


def parse_response(msg: bytes) -> dict:
    qid, flags, qd, an, ns, ar = struct.unpack(">HHHHHH", msg[:12])
    off = 12
    for _ in range(qd):
        _, off = read_name(msg, off)
        off += 4
    sections = []
    serial = None
    for count in (an, ns, ar):
        records = []
        for _ in range(count):
            name, off = read_name(msg, off)
            rtype, _cls, ttl, rdlen = struct.unpack(">HHIH", msg[off:off + 10])
            off += 10
            rd = msg[off:off + rdlen]
            if rtype == 1:
                text = socket.inet_ntoa(rd)
            elif rtype == 28:
                text = socket.inet_ntop(socket.AF_INET6, rd)
            elif rtype == 2:
                text = read_name(msg, off)[0]
            elif rtype == 33:
                p, w, port = struct.unpack(">HHH", rd[:6])
                text = f"{p} {w} {port} {read_name(msg, off + 6)[0]}"
            elif rtype == 6:
                mname, o = read_name(msg, off)
                rname, o = read_name(msg, o)
                serial, refresh, retry, expire, minimum = struct.unpack(">IIIII", msg[o:o + 20])
                # The serial is left out of the text (signpost's is its
                # registry index), and kept apart as "serial".
                text = f"{mname} {rname} SERIAL {refresh} {retry} {expire} {minimum}"
            elif rtype == 16:
                strings, i = [], 0
                while i < len(rd):
                    strings.append(rd[i + 1:i + 1 + rd[i]].decode("ascii", "replace"))
                    i += 1 + rd[i]
                text = " ".join(f'"{s}"' for s in strings)
            elif rtype == 41:
                text = f"udp={_cls}"
                ttl = 0
            else:
                text = rd.hex()
            off += rdlen
            records.append((name, QTYPE_NAMES.get(rtype, str(rtype)), ttl, text))
        sections.append(records)
    return {
        "id": qid,
        "rcode": RCODES.get(flags & 0xF, str(flags & 0xF)),
        "aa": bool(flags & 0x0400),
        "tc": bool(flags & 0x0200),
        "answer": sections[0],
        "authority": sections[1],
        "additional": [r for r in sections[2] if r[1] != "OPT"],
        "opt": [r for r in sections[2] if r[1] == "OPT"],
        "size": len(msg),
        "serial": serial,
    }


def ask(port: int, name: str, qtype: str, edns: bool, timeout: float = 1.0,
        tries: int = 3) -> dict | None:
    for attempt in range(tries):
        qid = random.randrange(65536)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            try:
                s.sendto(build_query(qid, name, qtype, edns), ("127.0.0.1", port))
                while True:
                    data, _ = s.recvfrom(65535)
                    if len(data) >= 12 and struct.unpack(">H", data[:2])[0] == qid:
                        return parse_response(data)
            except (socket.timeout, ConnectionRefusedError):
                continue
    return None


def ask_tcp(port: int, name: str, qtype: str, timeout: float = 2.0) -> dict | None:
    """One question over TCP (for answers that UDP truncates)."""
    qid = random.randrange(65536)
    msg = build_query(qid, name, qtype, False)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(struct.pack(">H", len(msg)) + msg)
            buf = b""
            while len(buf) < 2 or len(buf) < 2 + struct.unpack(">H", buf[:2])[0]:
                chunk = s.recv(65537)
                if not chunk:
                    return None
                buf += chunk
    except OSError:
        return None
    data = buf[2:2 + struct.unpack(">H", buf[:2])[0]]
    if len(data) < 12 or struct.unpack(">H", data[:2])[0] != qid:
        return None
    return parse_response(data)


def cmd_freeport(a):
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
        print(port)
        return 0
    print("no free port", file=sys.stderr)
    return 1


def cmd_wait(a):
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        if a.pid and not os.path.exists(f"/proc/{a.pid}"):
            log(f"{a.name}: process {a.pid} exited")
            return 1
        r = ask(a.port, f"{DOMAIN}.", "SOA", False, timeout=0.3, tries=1)
        if r is not None and r["rcode"] == "NOERROR" and r["answer"]:
            return 0
        time.sleep(0.1)
    log(f"{a.name}: no SOA answer on 127.0.0.1:{a.port} within {a.timeout} s")
    return 1


# --------------------------------------------------------------------------
# register: PUT every instance, keep-alive connections in parallel


def cmd_register(a):
    with open(a.registry) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return 0 if register_rows(a.api, rows, a.connections) else 1


def register_rows(api: str, rows: list[dict], connections: int) -> bool:
    """PUTs every row; True if all of them succeeded."""
    url = urllib.parse.urlsplit(api)
    lock = threading.Lock()
    state = {"next": 0, "done": 0, "errors": []}

    def worker():
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        while True:
            with lock:
                if state["next"] >= len(rows) or len(state["errors"]) >= 5:
                    break
                row = rows[state["next"]]
                state["next"] += 1
            path = f"/v1/services/{row['service']}/instances/{row['id']}"
            body = json.dumps(row["body"]).encode()
            for attempt in range(3):
                try:
                    conn.request("PUT", path, body, {"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    text = resp.read()
                    break
                except (OSError, http.client.HTTPException) as e:
                    conn.close()
                    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
                    if attempt == 2:
                        with lock:
                            state["errors"].append(f"PUT {path}: {e}")
                        resp = None
            with lock:
                if resp is not None and resp.status == 200:
                    state["done"] += 1
                elif resp is not None:
                    state["errors"].append(f"PUT {path}: HTTP {resp.status} {text[:200]!r}")
        conn.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - t0
    for e in state["errors"]:
        log("register:", e)
    if state["done"] != len(rows):
        log(f"register: only {state['done']} of {len(rows)} registrations succeeded")
        return False
    log(f"registered {len(rows)} instances in {took:.2f} s "
        f"({len(rows) / took:.0f}/s, {connections} keep-alive connections)")
    return True


# --------------------------------------------------------------------------
# writers: concurrent re-registrations with a new weight, while dnsperf runs


def cmd_writers(a):
    """N writers, one keep-alive connection and one thread each, each PUTting
    a random instance's full body from the registry with a changed weight,
    `rate` times a second (0: back to back). Prints "ready" once connected;
    writes until stdin closes (or --max-seconds), then writes its figures.
    With --procs P the writers are spread over P processes (the GIL holds
    one process to about one core)."""
    total = a.total or a.writers
    procs = max(1, min(a.procs, a.writers))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def wait_stdin():
        try:
            sys.stdin.read()
        except (OSError, ValueError):
            pass
        stop.set()

    if procs > 1:
        children, first = [], a.first
        for p in range(procs):
            n = a.writers // procs + (1 if p < a.writers % procs else 0)
            out = f"{a.out}.{p}"
            cmd = [sys.executable, os.path.abspath(__file__), "writers", "--api", a.api,
                   "--registry", a.registry, "--writers", str(n), "--first", str(first),
                   "--total", str(total), "--rate", f"{a.rate:g}", "--seed", str(a.seed),
                   "--max-seconds", f"{a.max_seconds:g}", "--raw", "--out", out]
            children.append((subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                              text=True), out))
            first += n
        try:
            for c, _ in children:
                if c.stdout.readline().strip() != "ready":
                    log("writers: a writer process did not start")
                    return 1
            print("ready", flush=True)
            threading.Thread(target=wait_stdin, daemon=True).start()
            stop.wait(a.max_seconds)
            for c, _ in children:
                c.stdin.close()
            parts = []
            for c, out in children:
                c.wait(timeout=60)
                with open(out) as f:
                    parts.append(json.load(f))
                os.unlink(out)
        finally:
            for c, _ in children:
                if c.poll() is None:
                    c.kill()
                    c.wait()
        result = merge_writer_results(parts, a)
        result["processes"] = procs
    else:
        result = run_writers(a, total, stop, wait_stdin)
        result["processes"] = 1
    if not a.raw:
        result.pop("latencies", None)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    return 0


def merge_writer_results(parts: list[dict], a) -> dict:
    lat = sorted(x for p in parts for x in p["latencies"])
    elapsed = max(p["elapsed_s"] for p in parts)
    firsts = [p["index_first"] for p in parts if p["index_first"] is not None]
    lasts = [p["index_last"] for p in parts if p["index_last"] is not None]
    return {
        "writers": a.writers,
        "rate_per_writer": a.rate,
        "target_per_s": a.rate * a.writers if a.rate > 0 else None,
        "elapsed_s": elapsed,
        "writes_ok": len(lat),
        "write_errors": sum(p["write_errors"] for p in parts),
        "error_samples": [x for p in parts for x in p["error_samples"]][:5],
        "writes_per_s": round(len(lat) / elapsed, 1) if elapsed > 0 else None,
        "fell_behind": sum(p["fell_behind"] for p in parts),
        "latency_s": {f"p{q}": percentile(lat, q) for q in (50, 90, 99, 99.9)},
        "max_latency_s": lat[-1] if lat else None,
        "index_first": min(firsts) if firsts else None,
        "index_last": max(lasts) if lasts else None,
        "cpu_s": round(sum(p["cpu_s"] for p in parts), 3),
        "writers_unfinished": sum(p["writers_unfinished"] for p in parts),
        "latencies": lat,
    }


def run_writers(a, total: int, stop: threading.Event, wait_stdin) -> dict:
    url = urllib.parse.urlsplit(a.api)
    with open(a.registry) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if not rows:
        raise SystemExit("writers: empty registry")
    lock = threading.Lock()
    results: list[dict] = []
    interval = 1.0 / a.rate if a.rate > 0 else 0.0
    conns = []
    for _ in range(a.writers):
        c = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        c.connect()
        conns.append(c)
    start = time.monotonic()

    def writer(w: int):
        rng = random.Random(a.seed * 100003 + w)
        conn = conns[w - a.first]
        lat, errors, samples, late = [], 0, [], 0
        idx_first = idx_last = None
        k = 0
        next_t = start + rng.random() * interval
        while not stop.is_set():
            if interval:
                now = time.monotonic()
                if next_t > now and stop.wait(next_t - now):
                    break
                next_t += interval
                now = time.monotonic()
                if next_t < now - 1.0:  # over a second behind: do not burst
                    late += 1
                    next_t = now
            row = rows[rng.randrange(len(rows))]
            body = dict(row["body"])
            # 101..65535: never a generated weight (10..100), and distinct
            # between writers, so that every PUT changes the instance.
            body["weight"] = 101 + (w + total * k) % 65435
            k += 1
            path = f"/v1/services/{row['service']}/instances/{row['id']}"
            data = json.dumps(body).encode()
            t0 = time.perf_counter()
            try:
                conn.request("PUT", path, data, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                text = resp.read()
            except (OSError, http.client.HTTPException) as e:
                errors += 1
                if len(samples) < 3:
                    samples.append(f"PUT {path}: {e}")
                conn.close()
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
                stop.wait(0.05)  # not a tight loop against a server that is gone
                continue
            took = time.perf_counter() - t0
            if resp.status == 200:
                lat.append(took)
                try:
                    idx = int(resp.getheader("X-Signpost-Index") or "")
                    idx_first = idx if idx_first is None else min(idx_first, idx)
                    idx_last = idx if idx_last is None else max(idx_last, idx)
                except ValueError:
                    pass
            else:
                errors += 1
                if len(samples) < 3:
                    samples.append(f"PUT {path}: HTTP {resp.status} {text[:200]!r}")
        conn.close()
        with lock:
            results.append({"lat": lat, "errors": errors, "samples": samples, "late": late,
                            "index_first": idx_first, "index_last": idx_last})

    threads = [threading.Thread(target=writer, args=(w,), daemon=True)
               for w in range(a.first, a.first + a.writers)]
    for t in threads:
        t.start()
    print("ready", flush=True)
    threading.Thread(target=wait_stdin, daemon=True).start()
    stop.wait(a.max_seconds)
    stop.set()
    end = time.monotonic()
    for t in threads:
        t.join(15)
    elapsed = end - start
    lat = sorted(x for r in results for x in r["lat"])
    firsts = [r["index_first"] for r in results if r["index_first"] is not None]
    lasts = [r["index_last"] for r in results if r["index_last"] is not None]
    ru = os.times()
    return {
        "writers": a.writers,
        "rate_per_writer": a.rate,
        "target_per_s": a.rate * a.writers if a.rate > 0 else None,
        "elapsed_s": round(elapsed, 3),
        "writes_ok": len(lat),
        "write_errors": sum(r["errors"] for r in results),
        "error_samples": [x for r in results for x in r["samples"]][:5],
        "writes_per_s": round(len(lat) / elapsed, 1) if elapsed > 0 else None,
        "fell_behind": sum(r["late"] for r in results),
        "latency_s": {f"p{p}": percentile(lat, p) for p in (50, 90, 99, 99.9)},
        "max_latency_s": lat[-1] if lat else None,
        "index_first": min(firsts) if firsts else None,
        "index_last": max(lasts) if lasts else None,
        "cpu_s": round(ru.user + ru.system, 3),
        "writers_unfinished": sum(t.is_alive() for t in threads),
        "latencies": lat,
    }


class SrvChecker:
    """While writers run: asks SRV for random services over UDP (TCP again
    when the answer is truncated) and checks that every answer holds exactly
    the registered instances (target and port; priority 10; weights may be
    anything valid), with the right address for every target in Additional."""

    def __init__(self, port: int, registry_path: str, edns: bool, interval: float = 0.02,
                 seed: int = 7):
        self.port, self.edns, self.interval = port, edns, interval
        self.rng = random.Random(seed)
        self.expected: dict[str, set] = {}
        self.address: dict[str, str] = {}
        with open(registry_path) as f:
            for line in f:
                if not line.strip():
                    continue
                row = json.loads(line)
                svc, iid, body = row["service"], row["id"], row["body"]
                target = f"{iid}.{svc}.instance.{DOMAIN}."
                self.expected.setdefault(svc, set()).add((body["port"], target))
                self.address[target] = body["address"]
        self.services = sorted(self.expected)
        self.stats = {"asked": 0, "ok": 0, "wrong": 0, "unanswered": 0,
                      "truncated_reasked_tcp": 0, "wrong_examples": []}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def start(self):
        self.thread.start()

    def finish(self) -> dict:
        self.stop.set()
        self.thread.join(10)
        return self.stats

    def _wrong(self, qname: str, why: str, r: dict | None):
        self.stats["wrong"] += 1
        if len(self.stats["wrong_examples"]) < 5:
            self.stats["wrong_examples"].append(
                {"query": f"{qname} SRV", "why": why,
                 "answer": r and r["answer"], "rcode": r and r["rcode"]})

    def check_one(self):
        svc = self.rng.choice(self.services)
        qname = (f"_{svc}._tcp.service.{DOMAIN}." if self.rng.random() < 0.5
                 else f"{svc}.service.{DOMAIN}.")
        self.stats["asked"] += 1
        r = ask(self.port, qname, "SRV", self.edns, timeout=1.0, tries=2)
        if r is not None and r["tc"]:
            self.stats["truncated_reasked_tcp"] += 1
            r = ask_tcp(self.port, qname, "SRV")
        if r is None:
            self.stats["unanswered"] += 1
            return
        if r["rcode"] != "NOERROR":
            return self._wrong(qname, f"rcode {r['rcode']}", r)
        got = []
        for name, rtype, _ttl, text in r["answer"]:
            if rtype != "SRV" or name != qname:
                return self._wrong(qname, f"unexpected record {name} {rtype}", r)
            prio, weight, port, target = text.split()
            if int(prio) != PRIORITY or not 1 <= int(weight) <= 65535:
                return self._wrong(qname, f"priority/weight {prio} {weight}", r)
            got.append((int(port), target))
        want = self.expected[svc]
        if len(got) != len(set(got)) or set(got) != want:
            missing, extra = len(want - set(got)), len(set(got) - want)
            return self._wrong(qname, f"{len(got)} records for {len(want)} instances "
                                      f"({missing} missing, {extra} not registered, "
                                      f"{len(got) - len(set(got))} repeated)", r)
        for name, rtype, _ttl, text in r["additional"]:
            if rtype == "A" and self.address.get(name) != text:
                return self._wrong(qname, f"additional {name} A {text}", r)
        self.stats["ok"] += 1

    def _loop(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                self.check_one()
            except Exception as e:  # a malformed answer counts as wrong
                self._wrong("?", f"{type(e).__name__}: {e}", None)
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - t0)))


# --------------------------------------------------------------------------
# check: same questions to every server, compare the answers as sets


def comparable(r: dict | None) -> dict | None:
    if r is None:
        return None
    return {
        "rcode": r["rcode"],
        "aa": r["aa"],
        "tc": r["tc"],
        "answer": sorted(r["answer"]),
        "authority": sorted(r["authority"]),
        "additional": sorted(r["additional"]),
    }


def cmd_check(a):
    servers = [s.split("=", 1) for s in a.server]
    with open(a.queries) as f:
        sample = [line.split() for line in f if line.strip()][: a.sample]
    # Names the query mix never asks for directly; the first instance's
    # names as the registry has them (their width depends on its size).
    svc1, iid1 = service_name(1), instance_id(1, 1)
    if a.registry:
        with open(a.registry) as f:
            first = json.loads(f.readline())
        svc1, iid1 = first["service"], first["id"]
    fixed = [
        [f"{DOMAIN}.", "SOA"], [f"{DOMAIN}.", "NS"], [f"ns.{DOMAIN}.", "A"],
        [f"{iid1}.{svc1}.instance.{DOMAIN}.", "A"],
        [f"{iid1}.{svc1}.instance.{DOMAIN}.", "TXT"],
        [f"{svc1}.instance.{DOMAIN}.", "A"],
        [f"_tcp.service.{DOMAIN}.", "SRV"],
    ]
    questions = fixed + sample
    ref_name = servers[0][0]
    mismatches: dict[str, list] = {name: [] for name, _ in servers[1:]}
    sizes: dict[str, list] = {name: [] for name, _ in servers}
    unanswered: dict[str, int] = {name: 0 for name, _ in servers}
    for qname, qtype in questions:
        results = {}
        for name, port in servers:
            r = ask(int(port), qname, qtype, a.edns)
            results[name] = comparable(r)
            if r is None:
                unanswered[name] += 1
            else:
                sizes[name].append(r["size"])
        ref = results[ref_name]
        for name, _ in servers[1:]:
            if results[name] != ref:
                other = results[name]
                sections = (["no answer"] if other is None or ref is None else
                            [k for k in ("rcode", "aa", "tc", "answer", "authority",
                                         "additional") if other[k] != ref[k]])
                mismatches[name].append({"query": f"{qname} {qtype}", "differ": sections,
                                         ref_name: ref, name: other})
    differ = {name: {} for name in mismatches}
    for name, ms in mismatches.items():
        for m in ms:
            for k in m["differ"]:
                differ[name][k] = differ[name].get(k, 0) + 1
    out = {
        "questions": len(questions),
        "reference": ref_name,
        "differ_by_section": differ,
        "edns": a.edns,
        "unanswered": unanswered,
        "mean_response_bytes": {k: (round(statistics.mean(v), 1) if v else None)
                                for k, v in sizes.items()},
        "mismatches": mismatches,
    }
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    for name, n in unanswered.items():
        if n:
            log(f"check: {name} did not answer {n} of {len(questions)} questions")
    for name, ms in mismatches.items():
        if not ms:
            log(f"check: {name} answers the same as {ref_name} "
                f"({len(questions)} questions, records compared as sets)")
            continue
        by = ", ".join(f"{k} on {v}" for k, v in differ[name].items())
        serious = any(k not in ("authority", "additional") for k in differ[name])
        log(f"check: {'WARNING ' if serious else ''}{name} differs from {ref_name} in "
            f"{len(ms)} of {len(questions)} responses ({by}); first:")
        m = ms[0]
        log(f"  {m['query']}")
        for who in (ref_name, name):
            log(f"  {who}: {json.dumps(m[who])}")
    return 0


# --------------------------------------------------------------------------
# run: dnsperf rounds for one placement


def proc_tree(pid: int) -> list[int]:
    """pid and its descendants (NSD forks its serving processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    """utime+stime of pid and its descendants, seconds (from /proc/PID/stat)."""
    ticks = 0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return ticks / CLK_TCK


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread ("comm/tid") of pid and its descendants."""
    out = {}
    for p in proc_tree(pid):
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/stat") as f:
                    head, rest = f.read().rsplit(")", 1)
                fields = rest.split()
                comm = head.split("(", 1)[1]
                out[f"{comm}/{tid}"] = (int(fields[11]) + int(fields[12])) / CLK_TCK
            except (OSError, IndexError, ValueError):
                pass
    return out


def status_field(pid: int, key: str) -> int:
    total = 0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
        except (OSError, ValueError):
            pass
    return total


def udp_drops(port: int) -> int:
    """Receive drops of the UDP sockets bound to port (from /proc/net/udp)."""
    total = 0
    try:
        with open("/proc/net/udp") as f:
            next(f)
            for line in f:
                fields = line.split()
                if len(fields) >= 13 and int(fields[1].split(":")[1], 16) == port:
                    total += int(fields[12])
    except (OSError, ValueError):
        pass
    return total


def num(pattern: str, text: str, cast=float):
    m = re.search(pattern, text, re.M)
    return cast(m.group(1)) if m else None


def parse_dnsperf(text: str) -> dict:
    out = {
        "sent": num(r"^\s*Queries sent:\s+(\d+)", text, int),
        "completed": num(r"^\s*Queries completed:\s+(\d+)", text, int),
        "lost": num(r"^\s*Queries lost:\s+(\d+)", text, int),
        "qps": num(r"^\s*Queries per second:\s+([\d.]+)", text),
        "run_time_s": num(r"^\s*Run time \(s\):\s+([\d.]+)", text),
        "avg_latency_s": num(r"^\s*Average Latency \(s\):\s+([\d.]+)", text),
        "min_latency_s": num(r"^\s*Average Latency \(s\):.*\(min ([\d.]+)", text),
        "max_latency_s": num(r"^\s*Average Latency \(s\):.*max ([\d.]+)\)", text),
        "stddev_latency_s": num(r"^\s*Latency StdDev \(s\):\s+([\d.]+)", text),
        "request_bytes": num(r"^\s*Average packet size:\s+request (\d+)", text, int),
        "response_bytes": num(r"^\s*Average packet size:.*response (\d+)", text, int),
    }
    m = re.search(r"^\s*Response codes:\s+(.*)$", text, re.M)
    if m:
        out["rcodes"] = {k: int(v) for k, v in re.findall(r"(\w+) (\d+) \(", m.group(1))}
    return out


def percentile(sorted_values: list[float], p: float) -> float | None:
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100 * len(sorted_values))) - 1))
    return sorted_values[k]


def host_speed(seconds: float = 0.1) -> float | None:
    """Millions of iterations per second of a fixed busy loop on the slowest
    CPU this process may use, measured while no server is under load.

    On a quiet host it is steady; when other tenants share the cores (the
    hypervisor's steal time does not always show it) it drops, and so does
    every server's throughput in that run."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    rates = []
    try:
        for cpu in cpus:
            os.sched_setaffinity(0, {cpu})
            n = 0
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                for _ in range(1000):
                    pass
                n += 1
            rates.append(n * 1000 / seconds / 1e6)
    finally:
        os.sched_setaffinity(0, cpus)
    return round(min(rates), 2)


def run_dnsperf(a, server: dict, duration: float, verbose: bool, workdir: str,
                label: str) -> dict:
    cmd = []
    if a.client_cpus:
        cmd += ["taskset", "-c", a.client_cpus]
    cmd += [a.dnsperf, "-s", "127.0.0.1", "-p", str(server["port"]), "-d", a.queries,
            "-l", f"{duration:g}", "-c", str(a.clients), "-T", str(a.threads),
            "-m", a.mode, "-t", f"{a.query_timeout:g}"]
    if a.edns:
        cmd.append("-e")
    if verbose:
        cmd.append("-v")
    cmd += a.dnsperf_arg
    out_path = os.path.join(workdir, f"dnsperf-{label}.out")
    err_path = os.path.join(workdir, f"dnsperf-{label}.err")
    pid = server["pid"]
    drops0 = udp_drops(server["port"])
    with open(out_path, "w") as out, open(err_path, "w") as err:
        threads0 = thread_cpu(pid)
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        deadline = t0 + duration + a.query_timeout + 30
        status = rusage = None
        try:
            while status is None:
                wpid, st, ru = os.wait4(proc.pid, os.WNOHANG)
                if wpid:
                    status, rusage = st, ru
                    break
                if time.monotonic() > deadline:
                    proc.kill()
                    _, status, rusage = os.wait4(proc.pid, 0)
                    log(f"{label}: dnsperf overran its time limit; killed")
                    break
                time.sleep(0.05)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - t0
        cpu1 = cpu_seconds(pid)
        threads1 = thread_cpu(pid)
    drops1 = udp_drops(server["port"])

    latencies = []
    summary_lines = []
    with open(out_path, errors="replace") as f:
        for line in f:
            if line.startswith("> "):
                if verbose:
                    parts = line.split()
                    try:
                        latencies.append(float(parts[-1]))
                    except ValueError:
                        pass
            else:
                summary_lines.append(line)
    text = "".join(summary_lines)
    with open(err_path, errors="replace") as f:
        err_text = f.read()
    os.unlink(out_path)
    os.unlink(err_path)

    r = parse_dnsperf(text)
    # Utilisation over dnsperf's run time: after it, dnsperf may sit out the
    # query timeout waiting for lost answers while everything idles.
    busy = r["run_time_s"] or wall
    r.update({
        "server": server["name"],
        "exit_code": proc.returncode,
        "wall_s": round(wall, 3),
        "server_cpu_s": round(cpu1 - cpu0, 3),
        "server_cpu_pct": round(100 * (cpu1 - cpu0) / busy, 1) if busy else None,
        "client_cpu_s": round(rusage.ru_utime + rusage.ru_stime, 3),
        "client_cpu_pct": round(100 * (rusage.ru_utime + rusage.ru_stime) / busy, 1) if busy else None,
        "server_udp_drops": drops1 - drops0 if a.mode == "udp" else None,
        # The busiest threads: is the work spread over them or on one?
        "server_thread_cpu_s": dict(sorted(
            ((k, round(v - threads0.get(k, 0), 2)) for k, v in threads1.items()
             if v - threads0.get(k, 0) > 0), key=lambda kv: -kv[1])[:8]),
        "dnsperf_stderr": err_text[-2000:],
        "dnsperf_summary": text[-4000:],
        "command": cmd,
    })
    if r.get("completed"):
        r["cpu_us_per_query"] = round((cpu1 - cpu0) * 1e6 / r["completed"], 3)
    else:
        r["cpu_us_per_query"] = None
    if verbose:
        latencies.sort()
        r["latency_percentiles_s"] = {
            f"p{p}": percentile(latencies, p) for p in (50, 90, 99, 99.9)}
        r["latency_samples"] = len(latencies)
    if proc.returncode != 0:
        log(f"{label}: dnsperf exited with {proc.returncode}: {err_text.strip()[-500:]}")
    return r


def run_with_writers(a, server: dict, workdir: str, label: str) -> dict:
    """One dnsperf run while the writers (a subprocess) re-register instances
    and a checker thread verifies SRV answers."""
    cmd = []
    if a.client_cpus:
        cmd += ["taskset", "-c", a.client_cpus]
    # The Rust writers (examples/bench_writers.rs) when the script built
    # them: the Python ones take about 40% of a core, from dnsperf's CPU.
    writers = ([a.writers_bin] if a.writers_bin
               else [sys.executable, os.path.abspath(__file__), "writers"])
    cmd += writers + ["--api", a.api,
            "--registry", a.registry, "--writers", str(a.writers),
            "--rate", f"{a.write_rate:g}", "--procs", str(a.writer_procs),
            "--seed", str(sum(label.encode())),
            "--max-seconds", f"{a.duration + a.query_timeout + 120:g}",
            "--out", os.path.join(workdir, f"writers-{label}.json")]
    err = open(os.path.join(workdir, f"writers-{label}.err"), "w")
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                            text=True)
    checker = None
    try:
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"{label}: the writers did not start "
                               f"(see {err.name}); they said {line!r}")
        checker = SrvChecker(server["port"], a.registry, a.edns)
        checker.start()
        r = run_dnsperf(a, server, a.duration, a.percentiles, workdir, label)
        r["check"] = checker.finish()
        checker = None
        proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            log(f"{label}: writers did not stop within 30 s; killed")
            proc.kill()
            proc.wait()
        with open(os.path.join(workdir, f"writers-{label}.json")) as f:
            r["writers"] = json.load(f)
    finally:
        if checker is not None:
            checker.finish()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err.close()
    w = r["writers"]
    # Index steps from the first write the API acknowledged to the last,
    # both included: each changed weight is one step, so this is writes_ok
    # when every PUT changed something and nothing else wrote.
    if w.get("index_first") is not None:
        w["index_steps"] = w["index_last"] - w["index_first"] + 1
    return r


def cmd_run(a):
    servers = []
    for spec in a.server:
        name, port, pid = spec.split(":")
        servers.append({"name": name, "port": int(port), "pid": int(pid)})
    workdir = os.path.dirname(os.path.abspath(a.out))
    runs = []
    writer_runs = []
    if a.writers and not (a.api and a.registry):
        log("run: --writers needs --api and --registry")
        return 2

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    if a.warmup > 0:
        for s in servers:
            w = run_dnsperf(a, s, a.warmup, False, workdir, f"warmup-{s['name']}")
            log(f"{a.placement} warm-up {s['name']}: {w['qps'] or 0:.0f} qps")
    for rnd in range(1, a.rounds + 1):
        # Alternate servers; rotate who goes first each round.
        k = (rnd - 1) % len(servers)
        order = servers[k:] + servers[:k]
        for s in order:
            label = f"{a.placement}-r{rnd}-{s['name']}"
            speed = host_speed()
            r = run_dnsperf(a, s, a.duration, a.percentiles, workdir, label)
            r["host_speed"] = speed
            r["round"] = rnd
            r["placement"] = a.placement
            runs.append(r)
            cpq = r["cpu_us_per_query"]
            log(f"{a.placement} round {rnd}/{a.rounds} {s['name']:<8} "
                f"{r['qps'] or 0:>9.0f} qps  lost {r['lost']}  "
                f"avg {1000 * (r['avg_latency_s'] or 0):.3f} ms  "
                f"server cpu {r['server_cpu_s']:.2f} s "
                f"({cpq if cpq is not None else '-'} us/q)  "
                f"dnsperf cpu {r['client_cpu_pct']:.0f}%  host speed {speed}")
            if a.writers and s["name"] == "signpost":
                # The same run again at once, with the writers.
                w_speed = host_speed()
                w = run_with_writers(a, s, workdir, label + "-writers")
                w["host_speed"] = w_speed
                w["round"] = rnd
                w["placement"] = a.placement
                writer_runs.append(w)
                ws, ck, cpq = w["writers"], w["check"], w["cpu_us_per_query"]
                log(f"{a.placement} round {rnd}/{a.rounds} {'+writers':<8} "
                    f"{w['qps'] or 0:>9.0f} qps  lost {w['lost']}  "
                    f"avg {1000 * (w['avg_latency_s'] or 0):.3f} ms  "
                    f"({cpq if cpq is not None else '-'} us/q)  "
                    f"writes {ws['writes_per_s']}/s, {ws['write_errors']} errors, "
                    f"p99 {fmt(ws['latency_s']['p99'] and ws['latency_s']['p99'] * 1000, '.2f')} ms; "
                    f"SRV checked {ck['asked']}, wrong {ck['wrong']}, "
                    f"unanswered {ck['unanswered']}")
    info = {}
    for s in servers:
        info[s["name"]] = {
            "pid": s["pid"], "port": s["port"],
            "processes": len(proc_tree(s["pid"])),
            "threads": status_field(s["pid"], "Threads"),
            "rss_kib_after": status_field(s["pid"], "VmRSS"),
            "alive_after": os.path.exists(f"/proc/{s['pid']}"),
        }
    for note in a.note:
        who, _, kv = note.partition(":")
        key, _, value = kv.partition("=")
        if who in info and value:
            info[who][key] = value
    with open(a.out, "w") as f:
        json.dump({"placement": a.placement, "runs": runs, "writer_runs": writer_runs,
                   "servers": info}, f, indent=1)
    return 0


# --------------------------------------------------------------------------
# memory: signpost's RSS empty and with a registry of a given size


class LazyRows:
    """The registry's rows ({"service", "id", "body"}), made when asked for:
    a million of them as dicts would take a good part of a gigabyte."""

    def __init__(self, size: int, per_service: int):
        self.size, self.per = size, per_service

    def __len__(self):
        return self.size

    def __getitem__(self, j: int) -> dict:
        svc, iid, addr, port, weight, meta = instance_row(j // self.per + 1, j % self.per + 1, j + 1)
        return {"service": svc, "id": iid, "body": registration_body(addr, port, weight, meta)}


def write_export(path: str, size: int, per_service: int, cluster: str) -> int:
    """The registry as an export document (the format of `signpost export`:
    src/registry/codec.rs), one service at a time; returns its size in bytes."""
    services = -(-size // per_service)
    with open(path, "w") as f:
        f.write('{"format":"signpost-export","version":1,"index":%d,"services":[' % size)
        batch, current = [], None

        def flush():
            if batch:
                f.write(("," if flush.started else "") + json.dumps(
                    {"name": current, "settings": None, "instances": batch},
                    separators=(",", ":")))
                flush.started = True

        flush.started = False
        for k, (svc, iid, addr, port, weight, meta) in enumerate(
                registry(services, per_service, size), 1):
            if svc != current:
                flush()
                batch, current = [], svc
            inst = {"service": svc, "id": iid, **registration_body(addr, port, weight, meta),
                    "cluster": cluster, "create_index": k, "modify_index": k}
            batch.append(inst)
        flush()
        f.write("]}")
    return os.path.getsize(path)


def proc_memory(pid: int) -> dict:
    """VmRSS, VmHWM (peak), RssAnon and RssFile of pid, KiB."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
                    out[key] = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return out


def settle_rss(pid: int, min_s: float, max_s: float = 120.0, step: float = 0.5) -> dict:
    """Samples RSS until the last five samples (2 s) are within 0.5% (or
    256 KiB) of each other, for at least min_s seconds."""
    t0, samples = time.monotonic(), []
    while True:
        if not os.path.exists(f"/proc/{pid}"):
            raise SystemExit(f"memory: signpost (pid {pid}) exited")
        samples.append(proc_memory(pid).get("VmRSS", 0))
        took = time.monotonic() - t0
        last = samples[-5:]
        steady = len(last) == 5 and max(last) - min(last) <= max(256, last[-1] // 200)
        if (took >= min_s and steady) or took >= max_s:
            m = proc_memory(pid)
            m["settle_s"] = round(took, 1)
            m["settled"] = steady
            return m
        time.sleep(step)


def wait_serial(port: int, index: int, timeout: float) -> float | None:
    """Seconds until the zone's SOA serial (signpost's registry index) is
    at least index; None if it never is."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        r = ask(port, f"{DOMAIN}.", "SOA", False, timeout=0.5, tries=1)
        if r is not None and r["serial"] is not None and r["serial"] >= index:
            return round(time.monotonic() - t0, 3)
        time.sleep(0.1)
    return None


def served_ok(port: int, rows: LazyRows) -> dict:
    """The first and the last service: all their instances in SRV (TCP)."""
    out = {}
    for j in (0, len(rows) - 1):
        svc = rows[j]["service"]
        want = rows.per if j == 0 else (len(rows) - 1) % rows.per + 1
        r = ask_tcp(port, f"{svc}.service.{DOMAIN}.", "SRV", timeout=10)
        got = len([x for x in r["answer"] if x[1] == "SRV"]) if r else None
        out[svc] = {"srv_records": got, "instances": want}
    return out


def registry_loaded_ms(log_path: str) -> int | None:
    """elapsed_ms of the last `registry loaded` line signpost logged."""
    ms = None
    try:
        with open(log_path, errors="replace") as f:
            for line in f:
                if "registry loaded" in line:
                    m = re.search(r"elapsed_ms=(\d+)", line)
                    ms = int(m.group(1)) if m else ms
    except OSError:
        pass
    return ms


def dir_bytes(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


def import_file(api: str, path: str) -> tuple[int, bytes, float]:
    url = urllib.parse.urlsplit(api)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=3600,
                                      blocksize=1 << 20)
    t0 = time.monotonic()
    try:
        with open(path, "rb") as body:
            conn.request("PUT", "/v1/import", body,
                         {"Content-Type": "application/json",
                          "Content-Length": str(os.path.getsize(path))})
            resp = conn.getresponse()
            text = resp.read()
    finally:
        conn.close()
    return resp.status, text, time.monotonic() - t0


def cmd_memory(a):
    if a.phase == "restart":
        with open(a.out) as f:
            result = json.load(f)
        set_name_width(result["services"])
        index = result["index"]
        took = wait_serial(a.dns_port, index, 600)
        if took is None:
            log(f"memory: after the restart the zone never reached index {index}")
            return 1
        m = settle_rss(a.pid, a.settle)
        m["registry_loaded_ms"] = registry_loaded_ms(a.log)
        m["served"] = served_ok(a.dns_port, LazyRows(result["size"], result["per_service"]))
        result["restarted"] = m
        log(f"memory {result['size']}: after a restart {m['VmRSS'] / 1024:.1f} MiB RSS "
            f"(loaded in {m['registry_loaded_ms']} ms)")
    else:
        rows = LazyRows(a.size, a.per_service)
        set_name_width(-(-a.size // a.per_service))
        result = {"size": a.size, "per_service": a.per_service,
                  "services": -(-a.size // a.per_service), "load": a.load}
        doc = os.path.join(a.dir, "export.json")
        if a.load == "import":
            t0 = time.monotonic()
            result["export_bytes"] = write_export(doc, a.size, a.per_service, a.cluster)
            log(f"memory {a.size}: export document {result['export_bytes'] / 1e6:.1f} MB "
                f"written in {time.monotonic() - t0:.1f} s")
        result["empty"] = settle_rss(a.pid, a.settle)
        log(f"memory {a.size}: empty registry {result['empty']['VmRSS'] / 1024:.1f} MiB RSS")
        index = None
        if a.load == "import":
            status, text, took = import_file(a.api, doc)
            os.unlink(doc)
            if status in (404, 405):
                log(f"memory: PUT /v1/import answered {status}: this signpost has no bulk "
                    f"import; registering one PUT at a time instead")
                result["load"] = "put (no /v1/import)"
            elif status != 200:
                log(f"memory: PUT /v1/import: HTTP {status} {text[:300]!r}")
                return 1
            else:
                index = json.loads(text)["index"]
                result["load_s"] = round(took, 2)
        if index is None:
            t0 = time.monotonic()
            if not register_rows(a.api, rows, a.connections):
                return 1
            result["load_s"] = round(time.monotonic() - t0, 2)
            index = a.size  # a fresh registry, one index step per new instance
        took = wait_serial(a.dns_port, index, 600)
        if took is None:
            log(f"memory: the zone never reached index {index}")
            return 1
        result["index"] = index
        result["dns_caught_up_s"] = took
        m = settle_rss(a.pid, a.settle)
        m["served"] = served_ok(a.dns_port, rows)
        result["loaded"] = m
        result["data_dir_bytes"] = dir_bytes(a.data_dir) if a.data_dir else None
        result["registry_loaded_ms_at_start"] = registry_loaded_ms(a.log)
        d = m["VmRSS"] - result["empty"]["VmRSS"]
        log(f"memory {a.size}: loaded ({result['load']}, {result['load_s']} s) "
            f"{m['VmRSS'] / 1024:.1f} MiB RSS, +{d / 1024:.1f} MiB, "
            f"{d * 1024 / a.size:.0f} B/instance; peak {m['VmHWM'] / 1024:.1f} MiB")
    served = result["restarted" if a.phase == "restart" else "loaded"]["served"]
    bad = {k: v for k, v in served.items() if v["srv_records"] != v["instances"]}
    if bad:
        log(f"memory: WARNING: SRV answers short of the registry: {bad}")
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    return 0


def mib(kib):
    return None if kib is None else kib / 1024


def cmd_memory_report(a):
    with open(a.meta) as f:
        meta = json.load(f)
    sizes = []
    for path in a.size:
        with open(path) as f:
            sizes.append(json.load(f))
    cfg = meta["config"]
    out = ["", f"== memory: signpost alone, store {cfg.get('signpost_store', 'default')}"
               f"{' (' + a.store_seen + ')' if a.store_seen else ''}, "
               f"{cfg['memory_per_service']} instances per service ==",
           f"{'instances':>10} {'services':>8} {'load':>13} {'empty':>10} {'loaded':>10} "
           f"{'+RSS':>10} {'B/inst':>6} {'peak':>10} {'restart':>10} {'B/inst':>6} "
           f"{'start ms':>8} {'on disk':>10}"]
    for r in sizes:
        e, l, x = r["empty"], r["loaded"], r.get("restarted")
        delta = l["VmRSS"] - e["VmRSS"]
        r["rss_empty_kib"] = e["VmRSS"]
        r["rss_loaded_kib"] = l["VmRSS"]
        r["rss_delta_kib"] = delta
        r["bytes_per_instance"] = round(delta * 1024 / r["size"], 1)
        if x:
            r["rss_restarted_kib"] = x["VmRSS"]
            r["bytes_per_instance_restarted"] = round((x["VmRSS"] - e["VmRSS"]) * 1024 / r["size"], 1)
        load = f"{r['load'].split()[0]} {r.get('load_s', 0):.1f} s"
        out.append(
            f"{r['size']:>10} {r['services']:>8} {load:>13} "
            f"{mib(e['VmRSS']):>6.1f} MiB {mib(l['VmRSS']):>6.1f} MiB {mib(delta):>6.1f} MiB "
            f"{r['bytes_per_instance']:>6.0f} {mib(l['VmHWM']):>6.1f} MiB "
            + (f"{mib(x['VmRSS']):>6.1f} MiB {r['bytes_per_instance_restarted']:>6.0f} "
               f"{fmt(x.get('registry_loaded_ms'), 'd'):>8} " if x else
               f"{'-':>10} {'-':>6} {'-':>8} ")
            + f"{fmt(r.get('data_dir_bytes') and r['data_dir_bytes'] / 2**20, '.1f') + ' MiB':>10}")
        for phase in ("loaded", "restarted"):
            for svc, v in ((r.get(phase) or {}).get("served") or {}).items():
                if v["srv_records"] != v["instances"]:
                    out.append(f"WARNING: {phase}: {svc} SRV held {v['srv_records']} of "
                               f"{v['instances']} instances")
            if r.get(phase) and not r[phase].get("settled"):
                out.append(f"WARNING: {r['size']} {phase}: RSS had not settled after "
                           f"{r[phase]['settle_s']} s")
    out.append("")
    out.append("empty: RSS (VmRSS) of a fresh server before any registration; loaded: after the "
               "registry is loaded, DNS serves its index and RSS is steady; +RSS and B/inst: "
               "loaded minus empty; peak: VmHWM; restart: RSS after a restart on the same data "
               "(loaded from disk), B/inst against the same empty figure; start ms: the "
               "`registry loaded` time it logs; on disk: the data directory.")
    meta["memory"] = sizes
    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    os.makedirs(os.path.dirname(os.path.abspath(a.json_out)), exist_ok=True)
    with open(a.json_out, "w") as f:
        json.dump(meta, f, indent=1)
    out.append(f"raw results: {a.json_out}")
    print("\n".join(out))
    return 0


# --------------------------------------------------------------------------
# report: tables and the JSON file


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, spec, none="-"):
    return none if v is None else format(v, spec)


def summarize(runs: list[dict], names: list[str]) -> dict:
    out = {}
    for name in names:
        rs = [r for r in runs if r["server"] == name]
        sent = sum(r["sent"] or 0 for r in rs)
        lost = sum(r["lost"] or 0 for r in rs)
        s = {
            "runs": len(rs),
            "median_qps": med([r["qps"] for r in rs]),
            "lost_total": lost,
            "sent_total": sent,
            "lost_pct": round(100 * lost / sent, 3) if sent else None,
            "median_avg_latency_s": med([r["avg_latency_s"] for r in rs]),
            "median_max_latency_s": med([r["max_latency_s"] for r in rs]),
            "median_cpu_us_per_query": med([r["cpu_us_per_query"] for r in rs]),
            "median_server_cpu_pct": med([r["server_cpu_pct"] for r in rs]),
            "median_client_cpu_pct": med([r["client_cpu_pct"] for r in rs]),
            "median_response_bytes": med([r["response_bytes"] for r in rs]),
            "server_udp_drops_total": (sum(r["server_udp_drops"] or 0 for r in rs)
                                       if rs and rs[0]["server_udp_drops"] is not None
                                       else None),
        }
        shares, busiest = [], {}
        for r in rs:
            t = r.get("server_thread_cpu_s") or {}
            total = r.get("server_cpu_s") or 0
            if t and total > 0:
                top, v = next(iter(t.items()))
                shares.append(100 * v / total)
                comm = top.rsplit("/", 1)[0]
                busiest[comm] = busiest.get(comm, 0) + 1
        s["median_busiest_thread_pct"] = med(shares)
        s["busiest_thread_names"] = busiest
        for p in ("p50", "p99"):
            vals = [r.get("latency_percentiles_s", {}).get(p) for r in rs]
            if any(v is not None for v in vals):
                s[f"median_{p}_latency_s"] = med(vals)
        out[name] = s
    return out


def ratios(runs: list[dict], rounds: int, ref: str, other: str) -> dict:
    out = {}
    for metric, key in (("qps", "qps"), ("cpu_per_query", "cpu_us_per_query")):
        per_round = []
        for rnd in range(1, rounds + 1):
            a = next((r[key] for r in runs if r["round"] == rnd and r["server"] == ref), None)
            b = next((r[key] for r in runs if r["round"] == rnd and r["server"] == other), None)
            per_round.append(round(a / b, 3) if a and b else None)
        out[metric] = {"per_round": per_round, "median": med(per_round)}
    return out


def summarize_writers(runs: list[dict], writer_runs: list[dict], rounds: int) -> dict:
    """signpost read-only against signpost with writers, round by round."""
    ro = {r["round"]: r for r in runs if r["server"] == "signpost"}
    wr = {r["round"]: r for r in writer_runs}
    per_round = []
    for rnd in range(1, rounds + 1):
        a, b = ro.get(rnd, {}).get("qps"), wr.get(rnd, {}).get("qps")
        per_round.append(round(b / a, 3) if a and b else None)
    ws = [r["writers"] for r in writer_runs]
    cks = [r["check"] for r in writer_runs]
    elapsed = sum(w["elapsed_s"] for w in ws)
    return {
        "read_only": summarize(list(ro.values()), ["signpost"])["signpost"],
        "with_writers": summarize(writer_runs, ["signpost"])["signpost"],
        "qps_ratio_with_over_without": {"per_round": per_round, "median": med(per_round)},
        "cpu_us_per_query_read_only": med([r["cpu_us_per_query"] for r in ro.values()]),
        "cpu_us_per_query_with_writers": med([r["cpu_us_per_query"] for r in writer_runs]),
        "writers": ws[0]["writers"] if ws else None,
        "rate_per_writer": ws[0]["rate_per_writer"] if ws else None,
        "target_writes_per_s": ws[0]["target_per_s"] if ws else None,
        "writes_ok_total": sum(w["writes_ok"] for w in ws),
        "writes_per_s": round(sum(w["writes_ok"] for w in ws) / elapsed, 1) if elapsed else None,
        "median_writes_per_s": med([w["writes_per_s"] for w in ws]),
        "write_errors_total": sum(w["write_errors"] for w in ws),
        "write_error_samples": [x for w in ws for x in w["error_samples"]][:5],
        "median_write_p50_s": med([w["latency_s"]["p50"] for w in ws]),
        "median_write_p99_s": med([w["latency_s"]["p99"] for w in ws]),
        "max_write_latency_s": max((w["max_latency_s"] or 0 for w in ws), default=None),
        "index_steps_total": sum(w.get("index_steps") or 0 for w in ws),
        "writer_cpu_pct": med([100 * w["cpu_s"] / w["elapsed_s"] for w in ws if w["elapsed_s"]]),
        "writers_fell_behind": sum(w["fell_behind"] for w in ws),
        "srv_checked": sum(c["asked"] for c in cks),
        "srv_ok": sum(c["ok"] for c in cks),
        "srv_wrong": sum(c["wrong"] for c in cks),
        "srv_unanswered": sum(c["unanswered"] for c in cks),
        "srv_truncated_reasked_tcp": sum(c["truncated_reasked_tcp"] for c in cks),
        "srv_wrong_examples": [x for c in cks for x in c["wrong_examples"]][:5],
    }


def writer_lines(s: dict, pct: bool) -> list[str]:
    rate = s["rate_per_writer"]
    how = (f"{s['writers']} writers x {rate:g} PUT/s (target {s['target_writes_per_s']:g}/s)"
           if rate else f"{s['writers']} writers, back to back (--write-rate 0)")
    out = [f"signpost under writes: {how}, keep-alive PUTs of random instances with a new "
           f"weight; each signpost round run again with them"]
    head = f"{'signpost':<14} {'QPS (med)':>10} {'lost':>14} {'avg lat':>9} "
    if pct:
        head += f"{'p50':>8} {'p99':>8} "
    out.append(head + f"{'CPU us/q':>9} {'srv CPU':>8} {'dnsperf':>8}")
    for label, x in (("read-only", s["read_only"]), ("with writers", s["with_writers"])):
        lost = f"{x['lost_total']} ({fmt(x['lost_pct'], '.2f')}%)"
        line = (f"{label:<14} {fmt(x['median_qps'], '10.0f'):>10} {lost:>14} "
                f"{fmt(x['median_avg_latency_s'] and x['median_avg_latency_s'] * 1000, '.3f') + ' ms':>9} ")
        if pct:
            for k in ("median_p50_latency_s", "median_p99_latency_s"):
                v = x.get(k)
                line += f"{fmt(v and v * 1000, '.3f') + 'ms':>8} "
        line += (f"{fmt(x['median_cpu_us_per_query'], '.2f'):>9} "
                 f"{fmt(x['median_server_cpu_pct'], '.0f') + '%':>8} "
                 f"{fmt(x['median_client_cpu_pct'], '.0f') + '%':>8}")
        out.append(line)
    r = s["qps_ratio_with_over_without"]
    out.append(f"{'QPS with/without writers':<24} "
               + " ".join(f"{fmt(v, '.2f'):>6}" for v in r["per_round"])
               + f" {fmt(r['median'], '.2f'):>7} (per round, median)")
    p50, p99 = s["median_write_p50_s"], s["median_write_p99_s"]
    target = s["target_writes_per_s"]
    out.append(f"writes: {fmt(s['writes_per_s'], '.1f')}/s achieved"
               f"{f' of {target:g}/s' if target else ''} ({s['writes_ok_total']} acknowledged, "
               f"index steps {s['index_steps_total']}), {s['write_errors_total']} errors; "
               f"PUT latency p50 {fmt(p50 and p50 * 1000, '.2f')} ms, "
               f"p99 {fmt(p99 and p99 * 1000, '.2f')} ms (median over rounds), max "
               f"{fmt(s['max_write_latency_s'] and s['max_write_latency_s'] * 1000, '.1f')} ms; "
               f"writer CPU {fmt(s['writer_cpu_pct'], '.0f')}%")
    out.append(f"SRV answers checked during the writes: {s['srv_checked']} "
               f"({s['srv_truncated_reasked_tcp']} truncated, asked again over TCP): "
               f"{s['srv_wrong']} wrong, {s['srv_unanswered']} unanswered")
    if s["srv_wrong"]:
        ex = s["srv_wrong_examples"][0]
        out.append(f"WARNING: {s['srv_wrong']} SRV answers did not hold exactly the registered "
                   f"instances; first: {ex['query']}: {ex['why']}")
    if s["write_errors_total"]:
        out.append(f"WARNING: {s['write_errors_total']} writes failed; first: "
                   f"{(s['write_error_samples'] or ['?'])[0][:200]}")
    if target and s["writes_per_s"] is not None and s["writes_per_s"] < 0.9 * target:
        out.append(f"WARNING: the writers reached {s['writes_per_s']:.0f} of {target:g} "
                   f"writes/s (a slow server, or a busy load generator: see --writer-procs)")
    return out


# Log lines that are part of a normal start and stop.
BENIGN_LOG = r"signal received, shutting down"


def cmd_report(a):
    with open(a.meta) as f:
        meta = json.load(f)
    placements = {}
    for path in a.placement:
        with open(path) as f:
            p = json.load(f)
        check_path = os.path.join(os.path.dirname(path), f"check-{p['placement']}.json")
        if os.path.exists(check_path):
            with open(check_path) as f:
                p["check"] = json.load(f)
        placements[p["placement"]] = p
    logs = {}
    for spec in a.log:
        key, path = spec.split("=", 1)
        try:
            with open(path, errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        bad = [l for l in lines if re.search(r"\b(WARN|ERROR|error|warning|panicked)\b", l)
               and not re.search(BENIGN_LOG, l)]
        logs[key] = {"lines": len(lines), "warnings_or_errors": len(bad),
                     "first_warnings_or_errors": bad[:10], "tail": lines[-10:]}
    meta["server_logs"] = logs

    cfg = meta["config"]
    names = cfg["servers"]
    out = []
    # The busy loop's median over every run of this report: the host as it
    # mostly was, against which each run's host speed is read.
    speeds = [r.get("host_speed") for p in placements.values()
              for r in p["runs"] + p.get("writer_runs", [])]
    speeds = [v for v in speeds if v]
    typical = statistics.median(speeds) if speeds else None
    for pname, p in placements.items():
        runs = p["runs"]
        p["summary"] = summarize(runs, names)
        p["ratios"] = {}
        if "signpost" in names:
            for other in names:
                if other != "signpost":
                    p["ratios"][f"signpost/{other}"] = ratios(runs, cfg["rounds"], "signpost", other)
        where = ("server on CPU %s, dnsperf on CPU %s" % (cfg["server_cpus"], cfg["client_cpus"])
                 if pname == "pinned" else "no CPU affinity")
        out.append("")
        out.append(f"== {cfg['mode'].upper()} {pname} ({where}): {cfg['services']} services x "
                   f"{cfg['instances']} instances, {cfg['rounds']} rounds x {cfg['duration']} s, "
                   f"dnsperf -c {cfg['clients']} -T {cfg['threads']}"
                   f"{' -e' if cfg['edns'] else ''} ==")
        pct = any(f"median_p50_latency_s" in s for s in p["summary"].values())
        head = (f"{'server':<9} {'QPS (med)':>10} {'lost':>14} {'avg lat':>9} "
                f"{'max lat':>9} ")
        if pct:
            head += f"{'p50':>8} {'p99':>8} "
        head += (f"{'CPU us/q':>9} {'srv CPU':>8} {'dnsperf':>8} {'resp B':>7}")
        out.append(head)
        for name in names:
            s = p["summary"][name]
            lost = f"{s['lost_total']} ({fmt(s['lost_pct'], '.2f')}%)"
            line = (f"{name:<9} {fmt(s['median_qps'], '10.0f'):>10} {lost:>14} "
                    f"{fmt(s['median_avg_latency_s'] and s['median_avg_latency_s'] * 1000, '.3f')+' ms':>9} "
                    f"{fmt(s['median_max_latency_s'] and s['median_max_latency_s'] * 1000, '.1f')+' ms':>9} ")
            if pct:
                for k in ("median_p50_latency_s", "median_p99_latency_s"):
                    v = s.get(k)
                    line += f"{fmt(v and v * 1000, '.3f') + 'ms':>8} "
            line += (f"{fmt(s['median_cpu_us_per_query'], '.2f'):>9} "
                     f"{fmt(s['median_server_cpu_pct'], '.0f') + '%':>8} "
                     f"{fmt(s['median_client_cpu_pct'], '.0f') + '%':>8} "
                     f"{fmt(s['median_response_bytes'], '.0f'):>7}")
            out.append(line)
        if p["ratios"]:
            rounds_head = " ".join(f"{'r' + str(i + 1):>6}" for i in range(cfg["rounds"]))
            out.append(f"{'ratio':<24} {rounds_head} {'median':>7}")
            for pair, rs in p["ratios"].items():
                for metric, label in (("qps", "QPS"), ("cpu_per_query", "CPU/query")):
                    vals = " ".join(f"{fmt(v, '.2f'):>6}" for v in rs[metric]["per_round"])
                    out.append(f"{label + ' ' + pair:<24} {vals} {fmt(rs[metric]['median'], '.2f'):>7}")
        drops = {n: p["summary"][n]["server_udp_drops_total"] for n in names}
        if any(drops.values()):
            out.append("server UDP receive-buffer drops (/proc/net/udp): " +
                       ", ".join(f"{n} {d}" for n, d in drops.items()))
        check = p.get("check")
        if check:
            parts = []
            for k, by in check.get("differ_by_section", {}).items():
                parts.append(f"{k} same" if not by else
                             f"{k} differs in " + ", ".join(f"{s} on {n}" for s, n in by.items()))
            out.append(f"response check ({check['questions']} questions, records compared as "
                       f"sets with {check.get('reference', 'signpost')}): " + "; ".join(parts))
            if set(check.get("differ_by_section", {}).get("nsd", {})) - {"authority", "additional"} == set() \
                    and check.get("differ_by_section", {}).get("nsd"):
                out.append("  (NSD by default adds the zone's NS and its address to answers; its "
                           "minimal-responses option would also drop the SRV targets' addresses)")
        if typical:
            ordered = sorted(runs + p.get("writer_runs", []), key=lambda r: r["round"])
            mine = [r["host_speed"] for r in ordered if r.get("host_speed")]
            if mine:
                out.append("host speed before each run (millions of busy-loop iterations a second "
                           f"on the slowest CPU; the report's median {typical:.2f}): "
                           + " ".join(f"{v:g}" for v in mine))
                if min(mine) < 0.8 * typical:
                    out.append(f"WARNING: the host ran at {100 * min(mine) / typical:.0f}% of its "
                               "median speed before some runs: other tenants had the CPUs, and "
                               "those runs measure them too; compare ratios from the same "
                               "round, or run again")
        out.append("busiest server thread, share of the server's CPU (median): " + "; ".join(
            f"{n} {fmt(p['summary'][n]['median_busiest_thread_pct'], '.0f')}%"
            f" ({', '.join(p['summary'][n]['busiest_thread_names']) or '-'})" for n in names))
        out.append("processes after the runs: " + "; ".join(
            f"{n} {i['processes']} proc, {i['threads']} threads, {i['rss_kib_after'] / 1024:.1f} MiB RSS"
            + (f", store {i['store']}" if i.get("store") else "")
            for n, i in p["servers"].items()))
        if p.get("writer_runs"):
            p["writers_summary"] = summarize_writers(runs, p["writer_runs"], cfg["rounds"])
            out.extend(writer_lines(p["writers_summary"], pct))
        for n, info in p["servers"].items():
            if not info["alive_after"]:
                out.append(f"WARNING: {n} was no longer running after the runs")
    out.append("")
    out.append("QPS: dnsperf's queries per second; lost: unanswered within the timeout, all rounds; "
               "CPU us/q: server utime+stime (/proc, all threads and processes) per answered query; "
               "srv CPU / dnsperf: CPU used over dnsperf's run time (100% = one core).")
    for key, l in logs.items():
        if l["warnings_or_errors"]:
            out.append(f"{key} log: {l['warnings_or_errors']} warning/error lines of {l['lines']}, "
                       f"first: {l['first_warnings_or_errors'][0][:200]}")
    meta["placements"] = placements
    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    os.makedirs(os.path.dirname(os.path.abspath(a.json_out)), exist_ok=True)
    with open(a.json_out, "w") as f:
        json.dump(meta, f, indent=1)
    out.append(f"raw results: {a.json_out}")
    print("\n".join(out))
    return 0


# --------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    g = sub.add_parser("gen")
    g.add_argument("--services", type=int, required=True)
    g.add_argument("--instances", type=int, required=True)
    g.add_argument("--queries", type=int, default=100_000)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--dir", required=True)

    sub.add_parser("freeport")

    w = sub.add_parser("wait")
    w.add_argument("--port", type=int, required=True)
    w.add_argument("--pid", type=int)
    w.add_argument("--name", default="server")
    w.add_argument("--timeout", type=float, default=20)

    r = sub.add_parser("register")
    r.add_argument("--api", required=True)
    r.add_argument("--registry", required=True)
    r.add_argument("--connections", type=int, default=8)

    c = sub.add_parser("check")
    c.add_argument("--server", action="append", required=True, help="name=port; first is the reference")
    c.add_argument("--queries", required=True)
    c.add_argument("--sample", type=int, default=60)
    c.add_argument("--registry", help="registry.jsonl: names of the first instance")
    c.add_argument("--edns", action="store_true")
    c.add_argument("--out", required=True)

    u = sub.add_parser("run")
    u.add_argument("--placement", required=True)
    u.add_argument("--server", action="append", required=True, help="name:port:pid")
    u.add_argument("--queries", required=True)
    u.add_argument("--rounds", type=int, default=3)
    u.add_argument("--duration", type=float, default=10)
    u.add_argument("--warmup", type=float, default=1)
    u.add_argument("--clients", type=int, default=10)
    u.add_argument("--threads", type=int, default=1)
    u.add_argument("--mode", default="udp", choices=["udp", "tcp"])
    u.add_argument("--edns", action="store_true")
    u.add_argument("--percentiles", action="store_true")
    u.add_argument("--client-cpus", default="")
    u.add_argument("--query-timeout", type=float, default=5)
    u.add_argument("--dnsperf-arg", action="append", default=[])
    u.add_argument("--dnsperf", default="dnsperf", help="the dnsperf binary")
    u.add_argument("--note", action="append", default=[], help="server:key=value, kept with the server")
    u.add_argument("--writers", type=int, default=0,
                   help="run each signpost round again with this many writers")
    u.add_argument("--write-rate", type=float, default=10, help="PUTs/s per writer; 0: no pause")
    u.add_argument("--writer-procs", type=int, default=1, help="processes the writers run in")
    u.add_argument("--writers-bin", default="",
                   help="examples/bench_writers binary (default: this script's Python writers)")
    u.add_argument("--api", help="signpost's admin API, for the writers")
    u.add_argument("--registry", help="registry.jsonl, for the writers and the checker")
    u.add_argument("--out", required=True)

    wr = sub.add_parser("writers")
    wr.add_argument("--api", required=True)
    wr.add_argument("--registry", required=True)
    wr.add_argument("--writers", type=int, required=True)
    wr.add_argument("--rate", type=float, default=10, help="PUTs/s per writer; 0: no pause")
    wr.add_argument("--seed", type=int, default=1)
    wr.add_argument("--procs", type=int, default=1, help="spread the writers over P processes")
    wr.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    wr.add_argument("--total", type=int, default=0, help=argparse.SUPPRESS)
    wr.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    wr.add_argument("--max-seconds", type=float, default=600)
    wr.add_argument("--out", required=True)

    p = sub.add_parser("report")
    p.add_argument("--meta", required=True)
    p.add_argument("--placement", action="append", default=[])
    p.add_argument("--log", action="append", default=[], help="label=path")
    p.add_argument("--json-out", required=True)

    m = sub.add_parser("memory")
    m.add_argument("--phase", choices=["load", "restart"], default="load")
    m.add_argument("--pid", type=int, required=True)
    m.add_argument("--api", required=True)
    m.add_argument("--dns-port", type=int, required=True)
    m.add_argument("--size", type=int, default=0)
    m.add_argument("--per-service", type=int, default=100)
    m.add_argument("--load", choices=["import", "put"], default="import")
    m.add_argument("--connections", type=int, default=16, help="for --load put")
    m.add_argument("--cluster", default="dc1", help="the server's --cluster")
    m.add_argument("--settle", type=float, default=3, help="seconds of RSS samples at least")
    m.add_argument("--dir", default=".", help="where the export document is written")
    m.add_argument("--data-dir", help="signpost's data directory (its size is reported)")
    m.add_argument("--log", default="", help="signpost's stderr")
    m.add_argument("--out", required=True, help="results; read back and extended by restart")

    mr = sub.add_parser("memory-report")
    mr.add_argument("--meta", required=True)
    mr.add_argument("--size", action="append", default=[], help="a memory --out file")
    mr.add_argument("--store-seen", default="")
    mr.add_argument("--json-out", required=True)

    a = ap.parse_args()
    fn = {"gen": cmd_gen, "freeport": cmd_freeport, "wait": cmd_wait,
          "register": cmd_register, "check": cmd_check, "run": cmd_run,
          "writers": cmd_writers, "memory": cmd_memory, "memory-report": cmd_memory_report,
          "report": cmd_report}[a.cmd]
    try:
        return fn(a) or 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
