"""How many leases a second one endpoint's bank actor grants: its own throughput, the ceiling of a cluster.

The bank (:class:`tgrs_agents.cluster.actors.BankActor`) is asked once per lease, not per call; a
lease is ``LeaseBank.LEASE_S`` of the endpoint's rate. This measures, on local Ray:

* the bare ``LeaseBank.grant`` in one process (the actor's work per lease);
* one client's round trip (``await grant.remote()``, one at a time);
* the actor's throughput with ``--clients`` callers keeping ``--depth`` grants each in flight.

The run's claim actor (:class:`tgrs_agents.cluster.actors.ClaimActor`, exactly-once verdicts across
workers) is asked once per *paid call* on a ledger miss (a claim, then a fire-and-forget release), so it
is measured the same way: its claims/s bound the cluster's paid calls a second, whatever the endpoints.

Then the arithmetic: one actor keeps up
whatever the endpoint's rate (5 leases/s cover it), and each busy worker costs it about two calls
a second (a grant and a give-back per ``VALID_S``): about ``leases/s / 2`` workers on one endpoint
before the actor is the bottleneck::

    python benchmarks/bench_ray_leases.py            # 2 CPUs, 4 clients x depth 16, 5 s
"""

from __future__ import annotations

import argparse
import asyncio
import time

import ray

from tgrs_agents.cluster.actors import bank_handle, claims_handle
from tgrs_agents.cluster.leases import LeaseBank
from tgrs_agents.paid.limits import EndpointLimits

LIMITS = EndpointLimits(rpm=1e12)  # the bank never makes anyone wait: its bookkeeping alone is timed


@ray.remote(num_cpus=0)
def client(run: str, seconds: float, depth: int) -> int:
    h = bank_handle(run, "bench#0", LIMITS)

    async def main() -> int:
        n, end = 0, time.monotonic() + seconds

        async def lane() -> None:
            nonlocal n
            while time.monotonic() < end:
                await h.grant.remote(1 << 30, 0.0)
                n += 1

        await asyncio.gather(*(lane() for _ in range(depth)))
        return n

    return asyncio.run(main())


@ray.remote(num_cpus=0)
def claimer(run: str, seconds: float, depth: int, who: int) -> int:
    h = claims_handle(run)

    async def main() -> int:
        n, end = 0, time.monotonic() + seconds

        async def lane(j: int) -> None:
            nonlocal n
            while time.monotonic() < end:
                key = f"{who}-{j}-{n}"
                await h.claim.remote(key, f"w{who}")
                h.release.remote(key, f"w{who}")
                n += 1

        await asyncio.gather(*(lane(j) for j in range(depth)))
        return n

    return asyncio.run(main())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()

    bank = LeaseBank(LIMITS)
    t0, k = time.perf_counter(), 200_000
    for _ in range(k):
        bank.grant(1 << 30, 0.0)
    print(f"LeaseBank.grant in-process: {(time.perf_counter() - t0) / k * 1e6:.2f} us a lease")

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    h = bank_handle("bench", "bench#0", LIMITS)
    ray.get(h.grant.remote(1, 0.0))  # started
    lat = []
    for _ in range(300):
        t = time.perf_counter()
        ray.get(h.grant.remote(1 << 30, 0.0))
        lat.append(time.perf_counter() - t)
    lat.sort()
    print(f"one client, one at a time: round trip median {lat[len(lat) // 2] * 1e3:.2f} ms, "
          f"p95 {lat[int(len(lat) * 0.95)] * 1e3:.2f} ms")
    t = time.perf_counter()
    n = sum(ray.get([client.remote("bench", args.seconds, args.depth) for _ in range(args.clients)]))
    wall = time.perf_counter() - t
    rate = n / args.seconds
    print(f"{args.clients} clients x {args.depth} in flight: {n} leases in {args.seconds:.0f} s "
          f"(wall {wall:.1f} s) = {rate:,.0f} leases/s")
    per_worker = 2 / LeaseBank.VALID_S  # a busy worker: a grant and a give-back per lease, one lease a second
    print(f"an endpoint needs 1/{LeaseBank.LEASE_S} = {1 / LeaseBank.LEASE_S:g} leases/s whatever its rate; a worker "
          f"renews at least every {LeaseBank.VALID_S:g} s (a grant and a give-back): one bank actor keeps up with "
          f"~{rate / per_worker:,.0f} busy workers on one endpoint")
    ray.get(claims_handle("bench").report.remote())  # started
    t = time.perf_counter()
    n = sum(ray.get([claimer.remote("bench", args.seconds, args.depth, i) for i in range(args.clients)]))
    wall = time.perf_counter() - t
    crate = n / args.seconds
    print(f"claims: {args.clients} clients x {args.depth} in flight: {n} claims (+ releases) in {args.seconds:.0f} s "
          f"(wall {wall:.1f} s) = {crate:,.0f} paid calls/s ({crate * 60:,.0f}/min) through one claim actor")
    ray.shutdown()


if __name__ == "__main__":
    main()
