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
  report    print the tables and write the combined JSON results
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


def service_name(s: int) -> str:
    return f"svc{s:04d}"


def instance_id(s: int, i: int) -> str:
    return f"{service_name(s)}-{i}"


def registry(services: int, instances: int):
    """Yields (service, id, address, port, weight, meta) for every instance."""
    k = 0
    for s in range(1, services + 1):
        for i in range(1, instances + 1):
            k += 1
            n = 0x0A000000 + k  # 10.0.0.1, 10.0.0.2, ...
            address = socket.inet_ntoa(struct.pack(">I", n))
            port = 8000 + i
            weight = 10 + (k * 37) % 91  # 10..100, varied
            meta = {"version": f"v{1 + k % 3}"}
            yield service_name(s), instance_id(s, i), address, port, weight, meta


def cmd_gen(a):
    os.makedirs(a.dir, exist_ok=True)
    rows = list(registry(a.services, a.instances))
    with open(os.path.join(a.dir, "registry.jsonl"), "w") as f:
        for svc, iid, addr, port, weight, meta in rows:
            body = {"address": addr, "port": port, "weight": weight,
                    "priority": PRIORITY, "meta": meta}
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
                # The serial is left out: signpost's is its registry index.
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
    url = urllib.parse.urlsplit(a.api)
    with open(a.registry) as f:
        rows = [json.loads(line) for line in f if line.strip()]
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
    threads = [threading.Thread(target=worker) for _ in range(a.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - t0
    for e in state["errors"]:
        log("register:", e)
    if state["done"] != len(rows):
        log(f"register: only {state['done']} of {len(rows)} registrations succeeded")
        return 1
    log(f"registered {len(rows)} instances in {took:.2f} s "
        f"({len(rows) / took:.0f}/s, {a.connections} keep-alive connections)")
    return 0


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
    # Names the query mix never asks for directly.
    fixed = [
        [f"{DOMAIN}.", "SOA"], [f"{DOMAIN}.", "NS"], [f"ns.{DOMAIN}.", "A"],
        [f"{instance_id(1, 1)}.{service_name(1)}.instance.{DOMAIN}.", "A"],
        [f"{instance_id(1, 1)}.{service_name(1)}.instance.{DOMAIN}.", "TXT"],
        [f"{service_name(1)}.instance.{DOMAIN}.", "A"],
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


def cmd_run(a):
    servers = []
    for spec in a.server:
        name, port, pid = spec.split(":")
        servers.append({"name": name, "port": int(port), "pid": int(pid)})
    workdir = os.path.dirname(os.path.abspath(a.out))
    runs = []

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
            r = run_dnsperf(a, s, a.duration, a.percentiles, workdir, label)
            r["round"] = rnd
            r["placement"] = a.placement
            runs.append(r)
            cpq = r["cpu_us_per_query"]
            log(f"{a.placement} round {rnd}/{a.rounds} {s['name']:<8} "
                f"{r['qps'] or 0:>9.0f} qps  lost {r['lost']}  "
                f"avg {1000 * (r['avg_latency_s'] or 0):.3f} ms  "
                f"server cpu {r['server_cpu_s']:.2f} s "
                f"({cpq if cpq is not None else '-'} us/q)  "
                f"dnsperf cpu {r['client_cpu_pct']:.0f}%")
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
        json.dump({"placement": a.placement, "runs": runs, "servers": info}, f, indent=1)
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
        out.append("busiest server thread, share of the server's CPU (median): " + "; ".join(
            f"{n} {fmt(p['summary'][n]['median_busiest_thread_pct'], '.0f')}%"
            f" ({', '.join(p['summary'][n]['busiest_thread_names']) or '-'})" for n in names))
        out.append("processes after the runs: " + "; ".join(
            f"{n} {i['processes']} proc, {i['threads']} threads, {i['rss_kib_after'] / 1024:.1f} MiB RSS"
            + (f", store {i['store']}" if i.get("store") else "")
            for n, i in p["servers"].items()))
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
    u.add_argument("--out", required=True)

    p = sub.add_parser("report")
    p.add_argument("--meta", required=True)
    p.add_argument("--placement", action="append", default=[])
    p.add_argument("--log", action="append", default=[], help="label=path")
    p.add_argument("--json-out", required=True)

    a = ap.parse_args()
    fn = {"gen": cmd_gen, "freeport": cmd_freeport, "wait": cmd_wait,
          "register": cmd_register, "check": cmd_check, "run": cmd_run,
          "report": cmd_report}[a.cmd]
    try:
        return fn(a) or 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
