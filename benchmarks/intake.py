"""Intake throughput: the SMTP listener and the webhook against do-nothing servers, and the worker.

    python benchmarks/intake.py [--messages 3000] [--sessions 50] [--posts 2000]

Each server runs in its own process, the load client (asyncio, one process)
in this one:

1. SMTP: ``--sessions`` concurrent sessions send 2 KiB messages (each session
   several in a row, like an MTA reusing its connection), first to a
   do-nothing aiosmtpd handler (answers 250 at once), then to
   ``leadflow serve --no-worker`` on a fresh SQLite file, where every 250
   comes after the message is committed (``synchronous=FULL``, commit
   batching across sessions). Target: at least 0.6 of the baseline.
2. Webhook: concurrent JSON posts to a do-nothing aiohttp handler (reads the
   body, answers 202), then to ``POST /forms/NAME`` of ``leadflow serve``.
   Target: at least 0.3 of the baseline.
3. SMTP again, with the worker of the same ``serve`` process processing what
   arrives (sharing the CPU and SQLite's write lock): the realistic case.
4. Worker, end to end on SQLite: inquiries stored first, then claimed and run
   through the whole pipeline (parse, classify, resolve, score with the
   starter rules, assign) by the worker code ``serve`` uses: once parsing in
   the worker's own thread (``worker.parse_processes = 0``), once with the
   default parse process. Target: at least 300 inquiries/s.

Prints accepted messages/s, the ratio to the baseline, p50/p99 latency
(from MAIL / request start to the final reply) and the peak resident memory
of each server process.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASELINE_SMTP = r"""
import asyncio
from aiosmtpd.smtp import SMTP

class Handler:
    async def handle_RCPT(self, server, session, envelope, address, options):
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        return "250 OK"

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(Handler(), hostname="bench", enable_SMTPUTF8=True,
                     data_size_limit=10 * 1024 * 1024, loop=loop), "127.0.0.1", 0)
    print("smtp listening on 127.0.0.1:%d" % server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""

BASELINE_HTTP = r"""
import asyncio
from aiohttp import web

async def post(request):
    await request.read()
    return web.json_response({"id": 1, "status": "received"}, status=202)

async def main():
    app = web.Application()
    app.router.add_post("/forms/{form}", post)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print("http listening on 127.0.0.1:%d" % runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def message(n, size=2048):
    head = (f"From: Person {n} <person{n}@company{n % 500}.example>\r\nTo: leads@leadflow.localhost\r\n"
            f"Subject: Inquiry {n}\r\nMessage-ID: <bench-{n}-{time.time_ns()}@bench.example>\r\n"
            f"Date: Fri, 27 Nov 2026 09:42:05 +0100\r\n\r\n")
    line = "We are looking at project management software for our team, budget EUR 20,000.\r\n"
    body = (line * (size // len(line) + 1))[: size - len(head)]
    return (head + body).encode()


def peak_rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Child:
    """A server process that prints 'smtp/http listening on HOST:PORT'."""

    def __init__(self, argv, env=None, cwd=None):
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        env={**os.environ, **(env or {})}, cwd=cwd)
        self.ports = {}
        wanted = {"smtp", "http"} if "serve" in argv else {argv[-1]}
        while not wanted <= set(self.ports):
            line = self.process.stdout.readline().decode()
            if not line:
                raise RuntimeError(f"{argv} did not start")
            if " listening on " in line:
                kind, _, address = line.strip().partition(" listening on ")
                self.ports[kind] = int(address.rsplit(":", 1)[1])

    def stop(self):
        peak = peak_rss_kib(self.process.pid)
        self.process.terminate()
        self.process.wait(30)
        self.process.stdout.close()
        return peak


async def _reply(reader):
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            return int(line[:3])


async def smtp_session(port, numbers, latencies):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    accepted = 0
    try:
        await _reply(reader)
        writer.write(b"EHLO bench.example\r\n")
        await _reply(reader)
        for n in numbers:
            started = time.perf_counter()
            writer.write(b"MAIL FROM:<person%d@bench.example>\r\n" % n)
            if await _reply(reader) != 250:
                continue
            writer.write(b"RCPT TO:<leads@leadflow.localhost>\r\n")
            if await _reply(reader) != 250:
                continue
            writer.write(b"DATA\r\n")
            if await _reply(reader) != 354:
                continue
            writer.write(message(n) + b"\r\n.\r\n")
            if await _reply(reader) == 250:
                accepted += 1
                latencies.append(time.perf_counter() - started)
        writer.write(b"QUIT\r\n")
        await _reply(reader)
    finally:
        writer.close()
    return accepted


async def smtp_load(port, total, sessions):
    latencies = []
    per = [list(range(i, total, sessions)) for i in range(sessions)]
    started = time.perf_counter()
    counts = await asyncio.gather(*(smtp_session(port, numbers, latencies) for numbers in per))
    return sum(counts), time.perf_counter() - started, latencies


async def http_load(port, total, concurrency, headers):
    import aiohttp

    latencies = []
    queue = list(range(total))
    accepted = 0

    async def client(session):
        nonlocal accepted
        while queue:
            n = queue.pop()
            body = json.dumps({"name": f"Person {n}", "email": f"person{n}@company{n % 500}.example",
                               "company": f"Company {n % 500}", "message": "x" * 1800}).encode()
            started = time.perf_counter()
            async with session.post(f"http://127.0.0.1:{port}/forms/bench", data=body,
                                    headers={**headers, "Content-Type": "application/json"}) as response:
                await response.read()
                if response.status == 202:
                    accepted += 1
                    latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        return accepted, time.perf_counter() - started, latencies


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] * 1000 if values else float("nan")


def report(name, accepted, seconds, latencies, peak, baseline=None):
    rate = accepted / seconds
    ratio = f"  ratio {rate / baseline:.2f}" if baseline else ""
    peak_text = f"{peak / 1024:.0f} MiB" if peak else "?"
    print(f"{name:34} {accepted:6d} ok  {rate:8.0f} msgs/s{ratio:13}  p50 {pct(latencies, .5):6.1f} ms"
          f"  p99 {pct(latencies, .99):7.1f} ms  peak RSS {peak_text}", flush=True)
    return rate


def worker_phase(folder, count, parse_processes):
    """Store ``count`` inquiries, then time the worker draining them (in this process).

    The database is prepared as ``leadflow serve`` prepares a new one (schema and
    the starter scoring rules, so every lead is really scored); a first backlog of
    100 inquiries, not timed, lets the worker start its parse process as a
    running ``serve`` would have.
    """
    from leadflow import config as config_module
    from leadflow.intake.server import prepare_database
    from leadflow.intake.worker import Worker
    from leadflow.store.database import close_database, open_database
    from leadflow.store.inbound import Inquiry, store_many

    database = open_database(f"sqlite:///{folder}/worker-{parse_processes}.db")
    prepare_database(database)
    config = config_module.parse({"worker": {"parse_processes": parse_processes}})
    worker = Worker(config)
    warm = 100
    store_many([Inquiry("email", message(n)) for n in range(10**6, 10**6 + warm)])
    while worker.process_batch() is not None:
        pass
    for start in range(0, count, 200):
        store_many([Inquiry("email", message(n)) for n in range(start, min(count, start + 200))])
    started, cpu = time.perf_counter(), time.process_time()
    while worker.process_batch() is not None:
        pass
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    processed = worker.processed - warm
    worker.close()
    close_database()
    return processed, seconds, cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--posts", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--worker-inquiries", type=int, default=600)
    parser.add_argument("--only", choices=("listeners", "worker"),
                        help="run only the SMTP/webhook phases (1-3) or only the worker (4)")
    args = parser.parse_args()
    print(f"cpus {os.cpu_count()}  load average {os.getloadavg()[0]:.1f} (other work on this machine)")
    folder = tempfile.mkdtemp(prefix="leadflow-bench-")
    (Path(folder) / "leadflow.toml").write_text(
        '[smtp]\nmax_connections_per_client = 1000\n\n[http]\nrate_limit_per_minute = 10000000\n\n'
        '[forms.bench]\npublic_key = "pk_bench"\n')
    env = {"LEADFLOW_DATABASE_URL": f"sqlite:///{folder}/serve.db",
           "LEADFLOW_CONFIG": f"{folder}/leadflow.toml"}
    serve_argv = [sys.executable, "-c", "from leadflow.cli import run; run()", "serve", "--no-worker",
                  "--smtp-port", "0", "--http-port", "0", "--log-level", "error"]

    if args.only != "worker":
        listeners(args, folder, env, serve_argv)
    if args.only != "listeners":
        for processes in (0, 1):
            processed, seconds, cpu = worker_phase(folder, args.worker_inquiries, processes)
            label = f"worker end to end, {processes} parse proc."
            print(f"{label:34} {processed:6d} ok  {processed / seconds:8.0f} inquiries/s"
                  f"  ({seconds * 1000 / processed:.1f} ms each, {cpu * 1000 / processed:.1f} ms CPU "
                  f"in the worker's process){'; target 300/s' if processes else ''}", flush=True)


def listeners(args, folder, env, serve_argv):
    base = Child([sys.executable, "-c", BASELINE_SMTP, "smtp"])
    accepted, seconds, lat = asyncio.run(smtp_load(base.ports["smtp"], args.messages, args.sessions))
    smtp_base = report("smtp do-nothing aiosmtpd", accepted, seconds, lat, base.stop())

    serve = Child(serve_argv, env=env, cwd=folder)
    accepted, seconds, lat = asyncio.run(smtp_load(serve.ports["smtp"], args.messages, args.sessions))
    report("smtp leadflow (committed, FULL)", accepted, seconds, lat,
           peak_rss_kib(serve.process.pid), smtp_base)

    base = Child([sys.executable, "-c", BASELINE_HTTP, "http"])
    accepted, seconds, lat = asyncio.run(http_load(base.ports["http"], args.posts, args.concurrency, {}))
    http_base = report("webhook do-nothing aiohttp", accepted, seconds, lat, base.stop())

    accepted, seconds, lat = asyncio.run(http_load(serve.ports["http"], args.posts, args.concurrency,
                                                   {"X-Leadflow-Form-Key": "pk_bench"}))
    report("webhook leadflow (committed)", accepted, seconds, lat, serve.stop(), http_base)
    print("  (peak RSS of leadflow: the serve process so far, after its SMTP, then its webhook run)")

    # The realistic case: the worker parses and scores while mail arrives (same process, same
    # SQLite file); the listener shares the CPU and the write lock with it.
    env["LEADFLOW_DATABASE_URL"] = f"sqlite:///{folder}/serve-worker.db"
    serve = Child([a for a in serve_argv if a != "--no-worker"], env=env, cwd=folder)
    accepted, seconds, lat = asyncio.run(smtp_load(serve.ports["smtp"], args.messages, args.sessions))
    report("smtp leadflow, worker running", accepted, seconds, lat, serve.stop(), smtp_base)


if __name__ == "__main__":
    main()
