"""How many requests/s the loopback stand-in serves, driven by the real ``openai.AsyncOpenAI`` client.

The server runs in its own process (one core: a single asyncio loop), the client here. Prints the
end-to-end rate (bounded by whichever side saturates first, usually the SDK) and the server's own
capacity, requests per server CPU-second, to show it is not the bottleneck for a 12,000 requests/min
(200/s) benchmark::

    python benchmarks/standin_throughput.py [--calls 3000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import urllib.request

import openai

PROMPT = "<reference>42</reference>\n<final>Worked it out.\nAnswer: 42</final>" + " filler" * 200


def server_cpu_s(pid: int) -> float:
    try:
        import psutil

        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except ImportError:  # Linux fallback
        import os

        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(port: int, calls: int, concurrency: int) -> tuple[float, int]:
    sem = asyncio.Semaphore(concurrency)
    failures = 0
    async with openai.AsyncOpenAI(api_key="sk-bench", base_url=f"http://127.0.0.1:{port}/v1",
                                  max_retries=0) as client:

        async def one() -> None:
            nonlocal failures
            async with sem:
                try:
                    resp = await client.chat.completions.create(
                        model="bench", messages=[{"role": "user", "content": PROMPT}])
                    json.loads(resp.choices[0].message.content)
                except openai.OpenAIError:
                    failures += 1

        await asyncio.gather(*(one() for _ in range(min(calls, concurrency))))  # warm the pool
        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(calls)))
        return time.perf_counter() - t0, failures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()
    proc = subprocess.Popen([sys.executable, "-m", "tgrs_agents.testing.standin", "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline().split()[1])
        cpu0 = server_cpu_s(proc.pid)
        wall, failures = asyncio.run(drive(port, args.calls, args.concurrency))
        cpu = server_cpu_s(proc.pid) - cpu0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
            stats = json.load(r)
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
    rate = args.calls / wall
    print(f"calls={args.calls} concurrency={args.concurrency} failures={failures} server_stats={stats}")
    print(f"end-to-end: {rate:,.0f} requests/s ({rate * 60:,.0f}/min) in {wall:.2f} s with AsyncOpenAI")
    print(f"server: {cpu:.2f} CPU-s for {args.calls} requests = {args.calls / max(cpu, 1e-9):,.0f} requests"
          f" per CPU-second (one core), {cpu / args.calls * 1e6:.0f} us/request")
    capacity = args.calls / max(cpu, 1e-9)
    print(f"headroom vs 12,000/min (200/s): end-to-end x{rate / 200:.1f}, server x{capacity / 200:.1f}")


if __name__ == "__main__":
    main()
