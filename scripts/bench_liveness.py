#!/usr/bin/env python3
"""Helper of scripts/bench-liveness.sh (standard library only).

Subcommands (the shell script calls them; see `bench_liveness.py SUB --help`):
  liveness    start one small TCP listener process per instance, register
              the instances with TCP checks, SIGKILL some listeners and time
              how long each address stays in `<svc>.service.internal A`
  throughput  register S x N instances in two servers (one with a TCP check
              per instance, one without), measure the checking server's idle
              CPU, then run dnsperf against both, alternating, R rounds
  report      print the summary tables and write the combined JSON

Every process this helper starts (listeners, dnsperf) is stopped when it
exits, on error or on SIGTERM/SIGINT; listeners also exit by themselves
within half a second when the helper is gone.
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

# Shared with the DNS benchmark beside this file.
from bench_dns import fmt, med, udp_drops  # noqa: E402

DOMAIN = "internal"
CLK_TCK = os.sysconf("SC_CLK_TCK")
QTYPE = {"A": 1, "SRV": 33}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def log(*args):
    print("bench-liveness:", *args, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Processes: listeners, and everything to stop on the way out

CHILDREN: list[subprocess.Popen] = []


def on_signal(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def stop_process(p: subprocess.Popen, grace: float = 10) -> int | None:
    """SIGTERM, up to `grace` seconds, then SIGKILL; reaps it."""
    if p.poll() is None:
        try:
            p.terminate()
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log(f"process {p.pid} did not stop on SIGTERM within {grace:g} s; killing it")
            p.kill()
            p.wait()
        except OSError:
            pass
    if p in CHILDREN:
        CHILDREN.remove(p)
    return p.returncode


def stop_children():
    for p in CHILDREN:
        if p.poll() is None:
            try:
                p.terminate()
            except OSError:
                pass
    deadline = time.monotonic() + 10
    for p in CHILDREN:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    CHILDREN.clear()


# A TCP listener: accepts and closes connections; counts them in an 8-byte
# memory-mapped file (unless the file is "-") so the helper can read exact
# probe counts; exits when its parent (this helper) is gone.
LISTENER = r"""
import mmap, os, socket, struct, sys, threading, time
addr, count_file = sys.argv[1], sys.argv[2]
parent = os.getppid()
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, 0))
s.listen(4096)
print(s.getsockname()[1], flush=True)
def watch():
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)
threading.Thread(target=watch, daemon=True).start()
counter = None
if count_file != "-":
    fd = os.open(count_file, os.O_RDWR | os.O_CREAT, 0o644)
    os.ftruncate(fd, 8)
    counter = mmap.mmap(fd, 8)
n = 0
pack = struct.pack_into
while True:
    c, _ = s.accept()
    c.close()
    n += 1
    if counter is not None:
        pack("<Q", counter, 0, n)
"""


def start_listeners(addrs: list[str], count_files: list[str] | None = None) -> list[dict]:
    """Starts one listener process per address; returns [{addr, port, proc}]."""
    procs = []
    for k, addr in enumerate(addrs):
        cf = count_files[k] if count_files else "-"
        p = subprocess.Popen([sys.executable, "-c", LISTENER, addr, cf],
                             stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        CHILDREN.append(p)
        procs.append((addr, p, cf))
    out = []
    for addr, p, cf in procs:
        line = p.stdout.readline().strip()
        if not line.isdigit():
            raise RuntimeError(f"listener on {addr} did not start (got {line!r})")
        out.append({"addr": addr, "port": int(line), "proc": p, "count_file": cf})
    return out


def read_count(path: str) -> int:
    try:
        with open(path, "rb") as f:
            data = f.read(8)
        return struct.unpack("<Q", data)[0] if len(data) == 8 else 0
    except OSError:
        return 0


def cpu_seconds(pid: int) -> float:
    """utime+stime of a process (all threads), seconds, from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def status_kib(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


# --------------------------------------------------------------------------
# A tiny DNS client (UDP, EDNS 1232)


def build_query(qid: int, name: str, qtype: str) -> bytes:
    q = b"".join(bytes([len(l)]) + l.encode() for l in name.rstrip(".").split(".")) + b"\0"
    return (struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 1) + q
            + struct.pack(">HH", QTYPE[qtype], 1) + b"\0" + struct.pack(">HHIH", 41, 1232, 0, 0))


def skip_name(msg: bytes, off: int) -> int:
    while True:
        n = msg[off]
        if n & 0xC0 == 0xC0:
            return off + 2
        off += 1 + n
        if n == 0:
            return off


def parse_answer(msg: bytes) -> dict:
    """rcode, TC and the answer section's A addresses."""
    _, flags, qd, an, _, _ = struct.unpack(">HHHHHH", msg[:12])
    off = 12
    for _ in range(qd):
        off = skip_name(msg, off) + 4
    addrs = []
    for _ in range(an):
        off = skip_name(msg, off)
        rtype, _, _, rdlen = struct.unpack(">HHIH", msg[off:off + 10])
        off += 10
        if rtype == 1 and rdlen == 4:
            addrs.append(socket.inet_ntoa(msg[off:off + 4]))
        off += rdlen
    return {"rcode": RCODES.get(flags & 0xF, str(flags & 0xF)), "tc": bool(flags & 0x0200),
            "an": an, "addrs": addrs}


class Dns:
    def __init__(self, port: int):
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(("127.0.0.1", port))
        self.timeouts = 0

    def ask(self, name: str, qtype: str = "A", timeout: float = 0.5) -> dict | None:
        qid = random.randrange(65536)
        self.sock.settimeout(timeout)
        try:
            self.sock.send(build_query(qid, name, qtype))
            deadline = time.monotonic() + timeout
            while True:
                data = self.sock.recv(65535)
                if len(data) >= 12 and struct.unpack(">H", data[:2])[0] == qid:
                    return parse_answer(data)
                self.sock.settimeout(max(0.001, deadline - time.monotonic()))
        except (socket.timeout, ConnectionRefusedError):
            self.timeouts += 1
            return None


# --------------------------------------------------------------------------
# The admin API


class Api:
    def __init__(self, base: str):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port

    def call(self, method: str, path: str, body=None, timeout: float = 30):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, data, {"Content-Type": "application/json"} if data else {})
            r = conn.getresponse()
            text = r.read()
            index = r.getheader("X-Signpost-Index")
            try:
                parsed = json.loads(text) if text else None
            except ValueError:
                parsed = text.decode(errors="replace")
            return r.status, parsed, int(index) if index and index.isdigit() else None
        finally:
            conn.close()

    def put_many(self, rows: list[tuple[str, dict]], connections: int = 16) -> dict:
        """PUTs (path, body) rows over parallel keep-alive connections."""
        lock = threading.Lock()
        state = {"next": 0, "ok": 0, "errors": []}

        def worker():
            conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            while True:
                with lock:
                    if state["next"] >= len(rows) or len(state["errors"]) >= 10:
                        break
                    path, body = rows[state["next"]]
                    state["next"] += 1
                data = json.dumps(body).encode()
                status, text = None, b""
                for attempt in range(3):
                    try:
                        conn.request("PUT", path, data, {"Content-Type": "application/json"})
                        r = conn.getresponse()
                        status, text = r.status, r.read()
                        break
                    except (OSError, http.client.HTTPException) as e:
                        conn.close()
                        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                        text = str(e).encode()
                with lock:
                    if status == 200:
                        state["ok"] += 1
                    else:
                        state["errors"].append(f"PUT {path}: {status} {text[:300]!r}")
            conn.close()

        t0 = time.monotonic()
        threads = [threading.Thread(target=worker) for _ in range(min(connections, len(rows)) or 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.monotonic() - t0
        return {"count": len(rows), "ok": state["ok"], "errors": state["errors"],
                "seconds": round(took, 3), "per_s": round(len(rows) / took, 1) if took else None}

    def served_total(self) -> tuple[int | None, int | None, int | None]:
        """(served, instances, index) over every service, from GET /v1/services."""
        status, body, index = self.call("GET", "/v1/services")
        if status != 200 or not isinstance(body, dict):
            return None, None, index
        services = body.get("services", [])
        served = sum(s.get("served", 0) for s in services)
        instances = sum(s.get("instances", 0) for s in services)
        return served, instances, index if index is not None else body.get("index")


# --------------------------------------------------------------------------
# liveness


class Setting:
    def __init__(self, name: str, label: str, interval: str | None, mode: str, net: int):
        self.name, self.label, self.interval, self.mode, self.net = name, label, interval, mode, net
        self.service = f"live-{name}"
        self.instances: list[dict] = []
        self.kill_order: list[dict] = []
        self.next_kill_at = 0.0
        self.pending: list[dict] = []
        self.results: list[dict] = []
        self.anomalies: list[str] = []
        self.gone_survivors: set[str] = set()
        self.polls = 0
        self.interval_s = 0.0
        self.fall = 3
        self.checks_echo = None


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", text.strip())
    if not m:
        raise ValueError(f"bad duration {text!r}")
    v = float(m.group(1))
    return v / 1000 if m.group(2) == "ms" else v * 60 if m.group(2) == "m" else v


def cmd_liveness(a):
    signal.signal(signal.SIGTERM, on_signal)
    api, dns = Api(a.api), Dns(a.dns_port)
    settings = [Setting("default", "default checks (interval 10s, fall 3)", None, "parallel", 10)]
    if a.fast_interval:
        settings.append(Setting("fast", f"interval {a.fast_interval} (fall 3)", a.fast_interval,
                                "sequential", 11))
    kills = min(a.kills, a.instances)
    try:
        # Listeners: one process per instance, on its own loopback address.
        t0 = time.monotonic()
        for s in settings:
            addrs = [f"127.0.{s.net}.{i + 1}" for i in range(a.instances)]
            for l in start_listeners(addrs):
                s.instances.append({"id": f"i{len(s.instances) + 1:02d}", **l})
        log(f"started {sum(len(s.instances) for s in settings)} listener processes "
            f"in {time.monotonic() - t0:.2f} s")
        # Registration.
        for s in settings:
            rows = []
            for inst in s.instances:
                check = {"tcp": f"{inst['addr']}:{inst['port']}"}
                if s.interval:
                    check["interval"] = s.interval
                rows.append((f"/v1/services/{s.service}/instances/{inst['id']}",
                             {"address": inst["addr"], "port": inst["port"], "checks": [check]}))
            r = api.put_many(rows, 8)
            if r["ok"] != len(rows):
                for e in r["errors"]:
                    log("register:", e)
                raise RuntimeError(f"{s.service}: only {r['ok']} of {len(rows)} registrations succeeded")
            s.registered_at = time.monotonic()
            status, body, _ = api.call("GET", f"/v1/services/{s.service}/instances/{s.instances[0]['id']}")
            if status == 200:
                s.checks_echo = body.get("instance", {}).get("checks")
                c = (s.checks_echo or [{}])[0]
                s.interval_s = parse_duration(str(c.get("interval", "10s")))
                s.fall = int(c.get("fall", 3))
            else:
                s.interval_s = parse_duration(s.interval or "10s")
            log(f"{s.service}: registered {len(rows)} instances; checks as the API shows them: "
                f"{json.dumps(s.checks_echo)}")

        # Wait until every instance is served (each needs its first passing probe).
        wait_limit = max(s.interval_s for s in settings) + a.serve_slack
        deadline = time.monotonic() + wait_limit
        not_served = {s.name: {i["addr"] for i in s.instances} for s in settings}
        served_after = {}
        while any(not_served.values()) and time.monotonic() < deadline:
            for s in settings:
                if not not_served[s.name]:
                    continue
                r = dns.ask(f"{s.service}.service.{DOMAIN}")
                if r is not None:
                    not_served[s.name] -= set(r["addrs"])
                    if not not_served[s.name]:
                        served_after[s.name] = round(time.monotonic() - s.registered_at, 3)
                        log(f"{s.service}: all {len(s.instances)} instances served "
                            f"{served_after[s.name]:.2f} s after registration")
            time.sleep(0.05)
        for s in settings:
            if not_served[s.name]:
                details = []
                for inst in s.instances:
                    if inst["addr"] in not_served[s.name]:
                        st, body, _ = api.call("GET", f"/v1/services/{s.service}/instances/{inst['id']}")
                        details.append(json.dumps(body)[:600])
                raise RuntimeError(
                    f"{s.service}: {len(not_served[s.name])} instances not served within {wait_limit:.0f} s "
                    f"of registration (checks not passing?): " + "; ".join(details[:3]))

        # Kill plan.
        rng = random.Random(a.seed)
        now = time.monotonic()
        for s in settings:
            s.kill_order = rng.sample(s.instances, kills)
            s.next_kill_at = now
            s.timeout_s = s.interval_s * (s.fall + 1) + a.remove_slack
        log(f"killing {kills} listeners per setting: "
            + ", ".join(f"{s.service} {s.mode}" for s in settings)
            + f"; polling {{svc}}.service.{DOMAIN} A every {a.poll_ms} ms")

        tick = a.poll_ms / 1000
        killed_addrs = {s.name: set() for s in settings}
        last_progress = time.monotonic()
        while True:
            now = time.monotonic()
            active = False
            for s in settings:
                # Kills due now.
                while s.kill_order and now >= s.next_kill_at and (s.mode == "parallel" or not s.pending):
                    inst = s.kill_order.pop(0)
                    t_kill = time.monotonic()
                    inst["proc"].send_signal(signal.SIGKILL)
                    s.pending.append({"inst": inst, "t_kill": t_kill, "last_seen": t_kill,
                                      "polls": 0})
                    killed_addrs[s.name].add(inst["addr"])
                    if s.mode == "sequential":
                        break
                if s.kill_order or s.pending:
                    active = True
                if not s.pending:
                    continue
                t_send = time.monotonic()
                r = dns.ask(f"{s.service}.service.{DOMAIN}")
                t_recv = time.monotonic()
                s.polls += 1
                if r is None:
                    continue
                if r["tc"]:
                    s.anomalies.append("a service A answer was truncated (TC)")
                present = set(r["addrs"])
                for p in list(s.pending):
                    p["polls"] += 1
                    addr = p["inst"]["addr"]
                    if addr in present:
                        p["last_seen"] = t_send
                        if t_recv - p["t_kill"] > s.timeout_s:
                            s.pending.remove(p)
                            s.results.append(finish(api, dns, s, p, None))
                            log(f"{s.service}: {p['inst']['id']} ({addr}) still served "
                                f"{s.timeout_s:.0f} s after SIGKILL; giving up on it")
                        continue
                    s.pending.remove(p)
                    res = finish(api, dns, s, p, t_recv)
                    s.results.append(res)
                    log(f"{s.service}: {res['id']} gone after {res['removed_s']:.3f} s "
                        f"({len(s.results)}/{kills})")
                    if s.mode == "sequential":
                        # The next kill at a random point of the check interval.
                        s.next_kill_at = time.monotonic() + rng.uniform(0, s.interval_s)
                # Survivors must stay.
                for inst in s.instances:
                    if inst["addr"] not in killed_addrs[s.name] and inst["addr"] not in present \
                            and inst["addr"] not in s.gone_survivors:
                        s.gone_survivors.add(inst["addr"])
                        s.anomalies.append(f"{inst['id']} ({inst['addr']}), not killed, "
                                           f"left the answers")
                # Killed and removed instances must stay gone.
                for res in s.results:
                    if res["removed_s"] is not None and res["address"] in present and not res.get("came_back"):
                        res["came_back"] = True
                        s.anomalies.append(f"{res['id']} came back into the answers after removal")
            if not active:
                break
            if time.monotonic() - last_progress > 5:
                last_progress = time.monotonic()
                left = ", ".join(f"{s.service}: {len(s.pending)} pending, {len(s.kill_order)} to kill"
                                 for s in settings if s.pending or s.kill_order)
                log(f"waiting ({left})")
            delay = tick - (time.monotonic() - now)
            if delay > 0:
                time.sleep(delay)

        # After the kills: a final look.
        for s in settings:
            r = dns.ask(f"{s.service}.service.{DOMAIN}")
            present = set(r["addrs"]) if r else set()
            back = sorted(killed_addrs[s.name] & present)
            missing = sorted({i["addr"] for i in s.instances} - killed_addrs[s.name] - present)
            if back:
                s.anomalies.append(f"at the end, killed instances still/again served: {back}")
            if missing:
                s.anomalies.append(f"at the end, survivors missing from the answers: {missing}")
            if r is None:
                s.anomalies.append("the final DNS query got no answer")
    finally:
        stop_children()

    out = {"instances": a.instances, "kills": kills, "poll_ms": a.poll_ms,
           "dns_timeouts": dns.timeouts, "served_after_registration_s": served_after,
           "settings": []}
    for s in settings:
        times = [r["removed_s"] for r in s.results if r["removed_s"] is not None]
        out["settings"].append({
            "name": s.name, "label": s.label, "service": s.service, "mode": s.mode,
            "interval_s": s.interval_s, "fall": s.fall, "checks": s.checks_echo,
            "expected_s": [round((s.fall - 1) * s.interval_s, 3), round(s.fall * s.interval_s, 3)],
            "timeout_s": s.timeout_s, "polls": s.polls,
            "kills": len(s.results), "removed": len(times),
            "min_s": min(times) if times else None,
            "median_s": statistics.median(times) if times else None,
            "mean_s": round(statistics.mean(times), 3) if times else None,
            "max_s": max(times) if times else None,
            "anomalies": s.anomalies, "results": s.results,
        })
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    return 0


def finish(api: Api, dns: Dns, s: Setting, p: dict, t_gone: float | None) -> dict:
    inst = p["inst"]
    res = {"id": inst["id"], "address": inst["addr"], "port": inst["port"],
           "removed_s": round(t_gone - p["t_kill"], 4) if t_gone is not None else None,
           "last_seen_s": round(p["last_seen"] - p["t_kill"], 4), "polls": p["polls"]}
    # The instance's own name: it should still exist (NODATA).
    r = dns.ask(f"{inst['id']}.{s.service}.instance.{DOMAIN}")
    res["instance_name_answer"] = None if r is None else {"rcode": r["rcode"], "answers": r["an"]}
    st, body, _ = api.call("GET", f"/v1/services/{s.service}/instances/{inst['id']}")
    if st == 200 and isinstance(body, dict):
        i = body.get("instance", {})
        res["api"] = {"health": i.get("health"), "check_health": i.get("check_health"),
                      "checks_status": body.get("checks_status")}
    else:
        res["api"] = {"status": st}
    return res


# --------------------------------------------------------------------------
# throughput


def gen_queries(path: str, services: int, count: int, seed: int):
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        svc = f"svc{rng.randrange(1, services + 1):04d}"
        x = rng.random()
        if x < 0.5:
            lines.append(f"{svc}.service.{DOMAIN} A")
        elif x < 0.75:
            lines.append(f"_{svc}._tcp.service.{DOMAIN} SRV")
        else:
            lines.append(f"{svc}.service.{DOMAIN} SRV")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def parse_dnsperf(text: str) -> dict:
    def num(pattern, cast=float):
        m = re.search(pattern, text, re.M)
        return cast(m.group(1)) if m else None
    return {
        "sent": num(r"^\s*Queries sent:\s+(\d+)", int),
        "completed": num(r"^\s*Queries completed:\s+(\d+)", int),
        "lost": num(r"^\s*Queries lost:\s+(\d+)", int),
        "qps": num(r"^\s*Queries per second:\s+([\d.]+)"),
        "run_time_s": num(r"^\s*Run time \(s\):\s+([\d.]+)"),
        "avg_latency_s": num(r"^\s*Average Latency \(s\):\s+([\d.]+)"),
        "min_latency_s": num(r"^\s*Average Latency \(s\):.*\(min ([\d.]+)"),
        "max_latency_s": num(r"^\s*Average Latency \(s\):.*max ([\d.]+)\)"),
        "stddev_latency_s": num(r"^\s*Latency StdDev \(s\):\s+([\d.]+)"),
        "response_bytes": num(r"^\s*Average packet size:.*response (\d+)", int),
        "rcodes": dict((k, int(v)) for k, v in re.findall(r"(\w+) (\d+) \(",
                       (re.search(r"^\s*Response codes:\s+(.*)$", text, re.M) or [None, ""])[1])),
    }


def run_dnsperf(a, server: dict, duration: float, listeners: list[dict], workdir: str,
                label: str) -> dict:
    cmd = [a.dnsperf, "-s", "127.0.0.1", "-p", str(server.port), "-d", a.queries_file,
           "-l", f"{duration:g}", "-c", str(a.clients), "-T", str(a.threads), "-m", "udp",
           "-t", f"{a.query_timeout:g}", "-e"]
    out_path = os.path.join(workdir, f"dnsperf-{label}.out")
    pid = server.pid
    drops0 = udp_drops(server.port)
    lcpu0 = sum(cpu_seconds(l["proc"].pid) for l in listeners)
    probes0 = sum(read_count(l["count_file"]) for l in listeners)
    with open(out_path, "w") as out:
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        CHILDREN.append(proc)
        deadline = t0 + duration + a.query_timeout + 30
        status = rusage = None
        while True:
            wpid, st, ru = os.wait4(proc.pid, os.WNOHANG)
            if wpid:
                status, rusage = st, ru
                break
            if time.monotonic() > deadline:
                proc.kill()
                _, status, rusage = os.wait4(proc.pid, 0)
                log(f"{label}: dnsperf overran its time limit; killed")
                break
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
        CHILDREN.remove(proc)
        wall = time.monotonic() - t0
        cpu1 = cpu_seconds(pid)
    lcpu1 = sum(cpu_seconds(l["proc"].pid) for l in listeners)
    probes1 = sum(read_count(l["count_file"]) for l in listeners)
    with open(out_path, errors="replace") as f:
        text = f.read()
    os.unlink(out_path)
    r = parse_dnsperf(text)
    busy = r["run_time_s"] or wall
    r.update({
        "server": server.name, "exit_code": proc.returncode, "wall_s": round(wall, 3),
        "server_cpu_s": round(cpu1 - cpu0, 3),
        "server_cpu_pct": round(100 * (cpu1 - cpu0) / busy, 1) if busy else None,
        "dnsperf_cpu_pct": round(100 * (rusage.ru_utime + rusage.ru_stime) / busy, 1) if busy else None,
        "listener_cpu_pct": round(100 * (lcpu1 - lcpu0) / wall, 1) if listeners else None,
        "probes_per_s": round((probes1 - probes0) / wall, 1) if listeners else None,
        "server_udp_drops": udp_drops(server.port) - drops0,
        "command": cmd,
    })
    r["cpu_us_per_query"] = round((cpu1 - cpu0) * 1e6 / r["completed"], 3) if r.get("completed") else None
    if proc.returncode != 0 or r["qps"] is None:
        r["dnsperf_output"] = text[-3000:]
        log(f"{label}: dnsperf exited with {proc.returncode}: {text.strip()[-500:]}")
    return r


class Server:
    """A signpost this helper starts (fresh data dir) and stops."""

    def __init__(self, a, name: str):
        self.name = name
        os.makedirs(a.log_dir, exist_ok=True)
        self.out_path = os.path.join(a.log_dir, f"{name}.out")
        self.err_path = os.path.join(a.log_dir, f"{name}.err")
        cmd = [a.signpost, "serve", "--dns-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
               "--zones-dir", a.zones_dir, "--data-dir", os.path.join(a.data_root, f"data-{name}")]
        if a.store:
            cmd += ["--store", a.store]
        env = dict(os.environ, RUST_LOG=a.rust_log)
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        CHILDREN.append(self.proc)
        self.pid = self.proc.pid
        api = dns = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            with open(self.out_path) as f:
                text = f.read()
            m1 = re.search(r"^api listening on http://(\S+)", text, re.M)
            m2 = re.search(r"^dns listening on (\S+)", text, re.M)
            if m1 and m2:
                api, dns = m1.group(1), m2.group(1)
                break
            time.sleep(0.05)
        if not api:
            with open(self.err_path, errors="replace") as f:
                raise RuntimeError(f"signpost {name} did not start: {f.read()[-1000:]}")
        self.api = Api(f"http://{api}")
        self.port = int(dns.rsplit(":", 1)[1])
        self.snapshots: list[dict] = []

    def stop(self) -> int | None:
        return stop_process(self.proc)


def cmd_throughput(a):
    signal.signal(signal.SIGTERM, on_signal)
    workdir = os.path.dirname(os.path.abspath(a.out))
    total = a.services * a.per_service
    interval_s = parse_duration(a.check_interval)
    result = {"services": a.services, "per_service": a.per_service, "instances": total,
              "check_interval": a.check_interval, "listeners": a.listeners,
              "rounds": a.rounds, "duration_s": a.duration, "clients": a.clients,
              "threads": a.threads, "warmup_s": a.warmup, "idle_s": a.idle,
              "one_server_at_a_time": True, "anomalies": []}
    anomalies = result["anomalies"]
    runs, idles, registrations = [], [], []
    try:
        count_files = [os.path.join(workdir, f"probes-{k}") for k in range(a.listeners)]
        listeners = start_listeners(["127.0.0.1"] * a.listeners, count_files)
        ports = [l["port"] for l in listeners]
        log(f"{a.listeners} listener processes on 127.0.0.1 ports {ports}")
        gen_queries(a.queries_file, a.services, a.queries, a.seed)

        # The same instances for both kinds; TCP checks only in one.
        rows = {"checks": [], "no-checks": []}
        k = 0
        for s in range(1, a.services + 1):
            for i in range(1, a.per_service + 1):
                k += 1
                addr = f"127.{1 + (k >> 16) & 0xFF}.{(k >> 8) & 0xFF}.{k & 0xFF}"
                port = ports[k % len(ports)]
                path = f"/v1/services/svc{s:04d}/instances/svc{s:04d}-{i}"
                body = {"address": addr, "port": port}
                rows["no-checks"].append((path, body))
                rows["checks"].append((path, dict(body, checks=[
                    {"tcp": f"127.0.0.1:{port}", "interval": a.check_interval}], initial="passing")))

        def snapshot(server, tag):
            served, instances, index = server.api.served_total()
            snap = {"at": tag, "served": served, "instances": instances, "index": index}
            server.snapshots.append(snap)
            if served != total:
                anomalies.append(f"{server.name} at {tag}: {served} of {instances} instances served")
                log(f"{server.name} at {tag}: {served} of {instances} instances served")
            return snap

        def dns_sample(server, tag):
            d = Dns(server.port)
            picks = random.Random(1).sample(range(1, a.services + 1), min(20, a.services))
            bad = 0
            for s in picks:
                r = d.ask(f"svc{s:04d}.service.{DOMAIN}")
                if r is None or len(set(r["addrs"])) != a.per_service:
                    bad += 1
            if bad:
                anomalies.append(f"{server.name} at {tag}: {bad} of {len(picks)} sampled services "
                                 f"did not answer {a.per_service} addresses")

        def measure_idle(server, seconds):
            cpu0 = cpu_seconds(server.pid)
            lcpu0 = sum(cpu_seconds(l["proc"].pid) for l in listeners)
            probes0 = sum(read_count(l["count_file"]) for l in listeners)
            t0 = time.monotonic()
            time.sleep(seconds)
            wall = time.monotonic() - t0
            cpu = cpu_seconds(server.pid) - cpu0
            probes = sum(read_count(l["count_file"]) for l in listeners) - probes0
            return {
                "server": server.name, "seconds": round(wall, 3),
                "server_cpu_pct": round(100 * cpu / wall, 2),
                "listener_cpu_pct": round(100 * (sum(cpu_seconds(l["proc"].pid) for l in listeners)
                                                 - lcpu0) / wall, 2),
                "probes_per_s": round(probes / wall, 1),
                "cpu_us_per_probe": round(cpu * 1e6 / probes, 2) if probes else None,
                "rss_kib": status_kib(server.pid, "VmRSS"),
                "threads": status_kib(server.pid, "Threads"),
            }

        def one_run(kind: str, rnd: int):
            server = Server(a, f"{kind}-r{rnd}")
            try:
                reg = server.api.put_many(rows[kind], a.connections)
                registrations.append({"server": kind, "round": rnd,
                                      **{k: v for k, v in reg.items() if k != "errors"}})
                if reg["ok"] != len(rows[kind]):
                    for e in reg["errors"]:
                        log("register:", e)
                    raise RuntimeError(f"{server.name}: only {reg['ok']} of {len(rows[kind])} "
                                       "registrations succeeded")
                if kind == "checks" and "checks_echo" not in result:
                    st, body, _ = server.api.call("GET", "/v1/services/svc0001/instances/svc0001-1")
                    result["checks_echo"] = body.get("instance", {}).get("checks") if st == 200 else None
                # Every check starts within one interval of its registration.
                time.sleep(interval_s + 1 if kind == "checks" else 0.5)
                start = snapshot(server, f"round {rnd} registered")
                dns_sample(server, f"round {rnd} registered")
                idle = measure_idle(server, a.idle if kind == "checks" else min(a.idle, 2))
                idle["round"] = rnd
                idles.append(idle)
                extra = (f", {idle['probes_per_s']:.0f} probes/s ({idle['cpu_us_per_probe']} us CPU each), "
                         f"listeners {idle['listener_cpu_pct']:.0f}%") if kind == "checks" else ""
                log(f"round {rnd} {kind}: registered {reg['count']} in {reg['seconds']:.1f} s; idle "
                    f"{idle['seconds']:.0f} s: server {idle['server_cpu_pct']:.1f}% CPU{extra}")
                if kind == "checks" and idle["probes_per_s"] < 0.9 * total / interval_s:
                    anomalies.append(f"round {rnd} idle: {idle['probes_per_s']:.0f} probes/s observed, "
                                     f"{total / interval_s:.0f} expected")
                if a.warmup > 0:
                    run_dnsperf(a, server, a.warmup, [], workdir, f"warmup-{server.name}")
                r = run_dnsperf(a, server, a.duration, listeners if kind == "checks" else [],
                                workdir, server.name)
                r["round"], r["server"], r["server_name"] = rnd, kind, server.name
                r["idle_server_cpu_pct"] = idle["server_cpu_pct"]
                if kind == "checks" and r.get("completed") and r.get("run_time_s"):
                    idle_cpu = idle["server_cpu_pct"] / 100 * r["run_time_s"]
                    r["cpu_us_per_query_net_of_idle"] = round(
                        (r["server_cpu_s"] - idle_cpu) * 1e6 / r["completed"], 3)
                time.sleep(0.5)
                end = snapshot(server, f"round {rnd} end")
                dns_sample(server, f"round {rnd} end")
                # Only check-health changes write after registration.
                r["check_health_writes"] = (end["index"] - start["index"]
                                            if None not in (end["index"], start["index"]) else None)
                if r["check_health_writes"]:
                    anomalies.append(f"round {rnd} {kind}: the registry index moved by "
                                     f"{r['check_health_writes']} after registration: check verdicts "
                                     "changed (every check should pass)")
                r["rss_kib_end"] = status_kib(server.pid, "VmRSS")
                runs.append(r)
                extra = (f"  probes {r['probes_per_s']:.0f}/s  listeners {r['listener_cpu_pct']:.0f}%"
                         if kind == "checks" else "")
                log(f"round {rnd}/{a.rounds} {kind:<9} {r['qps'] or 0:>8.0f} qps  lost {r['lost']}  "
                    f"avg {1000 * (r['avg_latency_s'] or 0):.3f} ms  server {r['server_cpu_pct']}% "
                    f"({r['cpu_us_per_query']} us/q)  dnsperf {r['dnsperf_cpu_pct']}%{extra}")
                if r.get("lost"):
                    anomalies.append(f"round {rnd} {kind}: {r['lost']} queries lost")
                if r.get("rcodes") and set(r["rcodes"]) - {"NOERROR"}:
                    anomalies.append(f"round {rnd} {kind}: rcodes {r['rcodes']}")
            finally:
                rc = server.stop()
                if rc not in (0, None):
                    anomalies.append(f"{server.name} exited with {rc} on SIGTERM")

        for rnd in range(1, a.rounds + 1):
            for kind in (["checks", "no-checks"] if rnd % 2 else ["no-checks", "checks"]):
                one_run(kind, rnd)
    finally:
        stop_children()
    result.update(runs=runs, idle=idles, registrations=registrations)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    return 0


# --------------------------------------------------------------------------
# report


def cmd_report(a):
    with open(a.meta) as f:
        out = json.load(f)
    live = thr = None
    if a.liveness and os.path.exists(a.liveness):
        with open(a.liveness) as f:
            live = json.load(f)
    if a.throughput and os.path.exists(a.throughput):
        with open(a.throughput) as f:
            thr = json.load(f)
    out["liveness"], out["throughput"] = live, thr
    warnings = []
    for path in a.log:
        try:
            with open(path, errors="replace") as f:
                warnings += [l.rstrip() for l in f if re.search(r"\b(WARN|ERROR)\b", l)]
        except OSError:
            pass
    out["server_warnings"] = warnings[:200]
    out["server_warning_count"] = len(warnings)

    p = print
    p()
    if live:
        p(f"Liveness: SIGKILL of an instance's listener -> its address gone from "
          f"<svc>.service.{DOMAIN} A")
        p(f"({live['instances']} instances per setting, {live['kills']} kills, UDP poll every "
          f"{live['poll_ms']} ms; default kills run in parallel, 1 s kills one after another)")
        p()
        p(f"{'setting':<40} {'removed':>8} {'min':>8} {'median':>8} {'mean':>8} {'max':>8}  expected")
        for s in live["settings"]:
            p(f"{s['label']:<40} {str(s['removed']) + '/' + str(s['kills']):>8} "
              f"{fmt(s['min_s'], '7.2f'):>7}s {fmt(s['median_s'], '7.2f'):>7}s "
              f"{fmt(s['mean_s'], '7.2f'):>7}s {fmt(s['max_s'], '7.2f'):>7}s  "
              f"{s['expected_s'][0]:g}-{s['expected_s'][1]:g} s + commit")
        for s in live["settings"]:
            p(f"  {s['name']}: " + " ".join(fmt(r["removed_s"], ".2f", "never") for r in
                                            sorted(s["results"], key=lambda r: r["removed_s"] or 1e9)))
        p()
    if thr and thr.get("runs"):
        runs = thr["runs"]
        ratio = lambda x, y: x / y if x is not None and y else None
        p(f"DNS throughput: {thr['services']} services x {thr['per_service']} instances; "
          f"dnsperf -c {thr['clients']} -T {thr['threads']} -l {thr['duration_s']:g}, UDP, EDNS; "
          f"{thr['rounds']} rounds, alternating; medians")
        p("(50% A <svc>.service, 25% SRV _<svc>._tcp.service, 25% SRV <svc>.service; each run a fresh "
          "signpost, the only one running)")
        p()
        p(f"{'server':<26} {'QPS':>8} {'avg lat':>9} {'srv CPU':>8} {'us/query':>9} {'lost':>5}  per-round QPS")
        med_by = {}
        for name, label in (("checks", f"{thr['instances']} TCP checks @{thr['check_interval']}"),
                            ("no-checks", "no checks")):
            rs = sorted((r for r in runs if r["server"] == name), key=lambda r: r["round"])
            m = {"qps": med([r["qps"] for r in rs]),
                 "avg_latency_s": med([r["avg_latency_s"] for r in rs]),
                 "server_cpu_pct": med([r["server_cpu_pct"] for r in rs]),
                 "cpu_us_per_query": med([r["cpu_us_per_query"] for r in rs]),
                 "lost": sum(r["lost"] or 0 for r in rs)}
            med_by[name] = m
            lat = m["avg_latency_s"]
            p(f"{label:<26} {fmt(m['qps'], '8.0f')} {fmt(lat and lat * 1000, '7.3f')}ms "
              f"{fmt(m['server_cpu_pct'], '7.0f')}% {fmt(m['cpu_us_per_query'], '9.2f')} {m['lost']:>5}  "
              + " ".join(fmt(r["qps"], ".0f") for r in rs))
        c, n = med_by["checks"], med_by["no-checks"]
        by_round = {}
        for r in runs:
            by_round.setdefault(r["round"], {})[r["server"]] = r
        paired = [ratio(v["checks"]["qps"], v["no-checks"]["qps"]) for _, v in sorted(by_round.items())
                  if "checks" in v and "no-checks" in v]
        p(f"{'ratio with / without':<26} {fmt(ratio(c['qps'], n['qps']), '8.3f')} "
          f"{fmt(ratio(c['avg_latency_s'], n['avg_latency_s']), '8.3f')}x "
          f"{fmt(ratio(c['server_cpu_pct'], n['server_cpu_pct']), '7.2f')}x "
          f"{fmt(ratio(c['cpu_us_per_query'], n['cpu_us_per_query']), '8.3f')}x        per round: "
          + " ".join(fmt(x, ".3f") for x in paired))
        checks_runs = [r for r in runs if r["server"] == "checks"]
        net = med([r.get("cpu_us_per_query_net_of_idle") for r in checks_runs])
        probes = med([r.get("probes_per_s") for r in checks_runs])
        lcpu = med([r.get("listener_cpu_pct") for r in checks_runs])
        dcpu = {k: med([r.get("dnsperf_cpu_pct") for r in runs if r["server"] == k]) for k in med_by}
        writes = [r.get("check_health_writes") for r in checks_runs]
        p(f"  with checks: {fmt(net, '.2f')} us/query after taking off the idle checking CPU; "
          f"{fmt(probes, '.0f')} probes/s during the runs; listener processes {fmt(lcpu, '.0f')}% CPU; "
          f"check-health writes per run {writes}")
        p(f"  dnsperf CPU: {fmt(dcpu['checks'], '.0f')}% with checks, {fmt(dcpu['no-checks'], '.0f')}% without "
          f"({os.cpu_count()} CPUs, nothing pinned)")
        out["throughput_summary"] = {"checks": c, "no_checks": n, "qps_ratio": ratio(c["qps"], n["qps"]),
                                     "qps_ratio_per_round": paired}
        p()
    if thr and thr.get("idle"):
        ci = [i for i in thr["idle"] if i["server"].startswith("checks")]
        ni = [i for i in thr["idle"] if i["server"].startswith("no-checks")]
        cpu = med([i["server_cpu_pct"] for i in ci])
        per_probe = med([i["cpu_us_per_probe"] for i in ci])
        probes = med([i["probes_per_s"] for i in ci])
        expected = thr["instances"] / parse_duration(thr["check_interval"])
        rss_c = med([i["rss_kib"] for i in ci])
        rss_n = med([i["rss_kib"] for i in ni])
        p(f"Checks cost, idle (no queries; {len(ci)} x {thr['idle_s']:g} s): {thr['instances']} TCP checks "
          f"@{thr['check_interval']}: signpost {fmt(cpu, '.1f')}% of a core "
          f"(per run: {' '.join(fmt(i['server_cpu_pct'], '.1f') for i in ci)}), "
          f"{fmt(per_probe, '.1f')} us CPU per probe, {fmt(probes, '.0f')} probes/s seen by the listeners "
          f"({expected:.0f} expected)")
        p(f"  without checks: signpost {fmt(med([i['server_cpu_pct'] for i in ni]), '.1f')}% idle; "
          f"listener processes {fmt(med([i['listener_cpu_pct'] for i in ci]), '.1f')}% while checked; "
          f"RSS {fmt(rss_c and rss_c / 1024, '.0f')} MiB with checks, {fmt(rss_n and rss_n / 1024, '.0f')} MiB "
          f"without; threads {fmt(med([i['threads'] for i in ci]), '.0f')}")
        regs = thr.get("registrations", [])
        p(f"  registration (PUT, 16 connections): with checks "
          f"{fmt(med([r['per_s'] for r in regs if r['server'] == 'checks']), '.0f')}/s, without "
          f"{fmt(med([r['per_s'] for r in regs if r['server'] == 'no-checks']), '.0f')}/s")
        out["idle_summary"] = {"checks_server_cpu_pct": cpu, "cpu_us_per_probe": per_probe,
                               "probes_per_s": probes, "expected_probes_per_s": expected}
        p()
    anomalies = []
    if live:
        for s in live["settings"]:
            anomalies += [f"liveness {s['name']}: {x}" for x in s["anomalies"]]
            for r in s["results"]:
                if r["removed_s"] is None:
                    anomalies.append(f"liveness {s['name']}: {r['id']} never removed; API says {r.get('api')}")
                elif (r.get("api") or {}).get("check_health") not in (None, "critical"):
                    anomalies.append(f"liveness {s['name']}: {r['id']} removed but API check_health "
                                     f"{r['api'].get('check_health')}")
                ia = r.get("instance_name_answer")
                if ia and (ia["rcode"] != "NOERROR" or ia["answers"]):
                    anomalies.append(f"liveness {s['name']}: {r['id']}'s instance name answered "
                                     f"{ia['rcode']} with {ia['answers']} records after removal "
                                     "(expected NODATA)")
        if live.get("dns_timeouts"):
            anomalies.append(f"liveness: {live['dns_timeouts']} DNS polls timed out")
    if thr:
        anomalies += [f"throughput: {x}" for x in thr.get("anomalies", [])]
    out["anomalies"] = anomalies
    if anomalies:
        p("Anomalies:")
        for x in anomalies:
            p(f"  - {x}")
    else:
        checked = []
        if live:
            checked.append("every killed instance removed and NODATA by name, survivors kept")
        if thr:
            checked.append("every check passing (no check-health writes), every instance served, "
                           "no lost queries")
        p(f"Anomalies: none ({'; '.join(checked)})")
    if warnings:
        p(f"Server warnings/errors: {len(warnings)} (first 10):")
        for l in warnings[:10]:
            p(f"  {l[:300]}")
    os.makedirs(os.path.dirname(os.path.abspath(a.json_out)), exist_ok=True)
    with open(a.json_out, "w") as f:
        json.dump(out, f, indent=1)
    p()
    p(f"raw results: {a.json_out}")
    return 0


# --------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    l = sub.add_parser("liveness")
    l.add_argument("--api", required=True)
    l.add_argument("--dns-port", type=int, required=True)
    l.add_argument("--instances", type=int, default=20)
    l.add_argument("--kills", type=int, default=10)
    l.add_argument("--fast-interval", default="1s", help="'' for none")
    l.add_argument("--poll-ms", type=float, default=10)
    l.add_argument("--serve-slack", type=float, default=15,
                   help="seconds beyond one interval to wait for every instance to be served")
    l.add_argument("--remove-slack", type=float, default=10,
                   help="seconds beyond (fall+1) intervals before a kill counts as never removed")
    l.add_argument("--seed", type=int, default=None)
    l.add_argument("--out", required=True)

    t = sub.add_parser("throughput")
    t.add_argument("--signpost", required=True, help="the signpost binary")
    t.add_argument("--store", default="", help="signpost --store (default: its own)")
    t.add_argument("--data-root", required=True, help="where the fresh data dirs go")
    t.add_argument("--zones-dir", required=True, help="an empty directory")
    t.add_argument("--log-dir", required=True)
    t.add_argument("--rust-log", default="info,hickory_server=warn,hickory_proto=warn")
    t.add_argument("--services", type=int, default=1000)
    t.add_argument("--per-service", type=int, default=10)
    t.add_argument("--listeners", type=int, default=4)
    t.add_argument("--check-interval", default="1s")
    t.add_argument("--connections", type=int, default=16)
    t.add_argument("--rounds", type=int, default=3)
    t.add_argument("--duration", type=float, default=10)
    t.add_argument("--warmup", type=float, default=1)
    t.add_argument("--idle", type=float, default=5,
                   help="seconds of idle CPU measurement per checks run")
    t.add_argument("--clients", type=int, default=10)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--query-timeout", type=float, default=2)
    t.add_argument("--queries", type=int, default=100000)
    t.add_argument("--queries-file", required=True)
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--dnsperf", default="dnsperf")
    t.add_argument("--out", required=True)

    r = sub.add_parser("report")
    r.add_argument("--meta", required=True)
    r.add_argument("--liveness")
    r.add_argument("--throughput")
    r.add_argument("--log", action="append", default=[])
    r.add_argument("--json-out", required=True)

    a = ap.parse_args()
    try:
        return {"liveness": cmd_liveness, "throughput": cmd_throughput, "report": cmd_report}[a.cmd](a)
    except KeyboardInterrupt:
        stop_children()
        log("interrupted")
        return 130
    except RuntimeError as e:
        stop_children()
        log(f"error: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
