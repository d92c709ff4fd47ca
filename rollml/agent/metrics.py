"""An agent's `/metrics` (Prometheus text format, `prometheus-client`) and `/healthz`, on `--http HOST:PORT`.

Counters come from the agent's events (`Agent.emit`: requests seen, served, skipped; results posted,
finalized, discarded; games won and lost; RPC errors; VM and native seconds); they restart at zero with the
process, as Prometheus counters do. Gauges come from the agent's store (jobs by state, results by verdict,
unverifiable results, games by state) and its balances, taken at the end of every tick, so they survive
restarts. The HTTP thread reads only that snapshot: it never touches the store nor the chain.

`/healthz` answers 200 with a JSON summary while ticks end on time and reach the chain, 503 otherwise.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rollml.core.http import HttpServer, Request, Response

if TYPE_CHECKING:
    from rollml.agent.base import Agent, TickStats

BALANCE_EVERY = 30.0  # seconds between balance reads (two calls)

# event name -> counter (name without the `rollml_` prefix and `_total` suffix, help)
EVENT_COUNTERS: dict[str, tuple[str, str]] = {
    "request_seen": ("requests_seen", "Inference requests seen."),
    "job_queued": ("requests_queued", "Requests queued to run (served)."),
    "request_skipped": ("requests_skipped", "Requests skipped (model not served)."),
    "posted": ("results_posted", "Results we posted."),
    "finalized": ("results_finalized", "Our results finalized."),
    "result_lost": ("results_discarded", "Our results discarded by a lost game."),
    "challenged": ("challenges", "Challenges (sent by a challenger, received by a node)."),
    "unverifiable": ("results_unverifiable", "Results we could not verify when they came."),
    "verified": ("results_verified", "Results verified."),
    "job_failed": ("jobs_failed", "Runs that failed."),
    "chain_reset": ("chain_resets", "Chain resets and reorgs rewound."),
    "model_fetched": ("models_fetched", "Models fetched from their registered uri."),
    "withdrawn": ("withdrawals", "Withdrawals of the market balance."),
}


class AgentMetrics(Collector):
    """Counts an agent's events and snapshots its store; a Prometheus collector of both."""

    def __init__(self, agent: Agent, interval: float = 2.0) -> None:
        self.agent = agent
        self.stale_after = max(60.0, 10 * interval)  # a tick that old makes /healthz answer 503
        self.counts: dict[str, float] = {name: 0.0 for name, _ in EVENT_COUNTERS.values()}
        self.counts.update(
            games_won=0, games_lost=0, rpc_errors=0, errors=0, vm_seconds=0.0, native_seconds=0.0, ticks=0
        )
        self.snapshot: dict[str, Any] = {}
        self._balances_at = 0.0
        self._lock = threading.Lock()
        agent.listeners.append(self.observe)
        agent.tick_listeners.append(self.take_snapshot)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    # -- the tick side ---------------------------------------------------------------------------------------
    def observe(self, event: str, fields: dict[str, object]) -> None:
        with self._lock:
            if event in EVENT_COUNTERS:
                self.counts[EVENT_COUNTERS[event][0]] += 1
            if event == "game_over":
                outcome = str(fields.get("outcome"))
                if outcome in ("won", "lost"):
                    self.counts[f"games_{outcome}"] += 1
            elif event == "error":
                self.counts["errors"] += 1
                if str(fields.get("error", "")).startswith("ChainError"):
                    self.counts["rpc_errors"] += 1
            elif event in ("job_executed", "verified"):
                for key in ("vm_seconds", "native_seconds"):
                    self.counts[key] += float(str(fields.get(key, 0.0)))

    def take_snapshot(self, stats: TickStats) -> None:
        """The store's gauges (and, every BALANCE_EVERY seconds, the balances), after a tick."""
        store = self.agent.store
        snap: dict[str, Any] = {
            "jobs": store.counts("jobs", "state"),
            "results": store.counts("results", "verdict"),
            "games": store.counts("games", "state"),
            "last_tick": self.agent.last_tick,
            "last_tick_ok": self.agent.last_tick_ok,
            "tick_seconds": stats.seconds,
            "cursor": store.cursor(self.agent.deployment.block - 1),
        }
        if time.monotonic() - self._balances_at >= BALANCE_EVERY and self.agent.last_tick_ok:
            try:
                chain, market = self.agent.chain, self.agent.contracts.market
                snap["balance_wei"] = chain.balance(self.agent.address)
                snap["market_balance_wei"] = int(chain.call(market.functions.balanceOf(self.agent.address)))
                self._balances_at = time.monotonic()
            except Exception:  # the next tick tries again; the old figures stay
                pass
        with self._lock:
            self.counts["ticks"] += 1
            for key in ("balance_wei", "market_balance_wei"):
                if key not in snap and key in self.snapshot:
                    snap[key] = self.snapshot[key]
            self.snapshot = snap

    # -- the HTTP side ---------------------------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts, snap = dict(self.counts), dict(self.snapshot)
        labels = {"kind": self.agent.KIND, "address": self.agent.address}
        names, values = list(labels), list(labels.values())
        helps = {name: text for name, text in EVENT_COUNTERS.values()}
        helps.update(
            games_won="Games won (watching: the truthful side won).",
            games_lost="Games lost.",
            rpc_errors="Chain errors (RPC failures after retries, reverts) in a tick.",
            errors="Errors of any kind in a tick (retried on the next).",
            vm_seconds="Seconds of VM runs (a node's jobs, a challenger's verifications).",
            native_seconds="Seconds of native runs of a node's jobs.",
            ticks="Ticks done.",
        )
        for name, value in counts.items():
            c = CounterMetricFamily(f"rollml_{name}", helps[name], labels=names)
            c.add_metric(values, value)
            yield c
        for table, column, text in (
            ("jobs", "state", "Node jobs by state."),
            ("results", "verdict", "Results seen by verdict."),
            ("games", "state", "Games played or watched by state."),
        ):
            g = GaugeMetricFamily(f"rollml_{table}", text, labels=[*names, column])
            for key, n in sorted(snap.get(table, {}).items()):
                g.add_metric([*values, key], n)
            yield g
        unverifiable = snap.get("results", {}).get("unverifiable", 0)
        yield _gauge(
            "rollml_unverifiable_results", "Results not verifiable for now (retried).", labels, unverifiable
        )
        games = snap.get("games", {})
        yield _gauge("rollml_games_open", "Games active now.", labels, games.get("active", 0))
        for key, text in (
            ("balance_wei", "The account's balance (what bonds are paid from), wei."),
            ("market_balance_wei", "The account's balance in the market (to withdraw), wei."),
            ("last_tick", "Unix time the last tick ended."),
            ("tick_seconds", "Seconds the last tick took."),
            ("cursor", "The last block whose events were handled."),
        ):
            if snap.get(key) is not None:
                yield _gauge(f"rollml_{key}", text, labels, float(snap[key]))

    def health(self) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            snap = dict(self.snapshot)
        last = snap.get("last_tick")
        age = None if last is None else round(time.time() - last, 1)
        ok = age is not None and age <= self.stale_after and bool(snap.get("last_tick_ok"))
        why = None
        if age is None:
            why = "no tick yet"
        elif age > self.stale_after:
            why = f"the last tick ended {age} s ago (> {self.stale_after:g} s)"
        elif not snap.get("last_tick_ok"):
            why = "the last tick could not reach the chain"
        report = {
            "ok": ok,
            "kind": self.agent.KIND,
            "address": self.agent.address,
            "market": self.agent.deployment.market,
            "last_tick_age_s": age,
            "cursor": snap.get("cursor"),
            "unverifiable_results": snap.get("results", {}).get("unverifiable", 0),
            "games_open": snap.get("games", {}).get("active", 0),
        }
        if why:
            report["reason"] = why
        return ok, report

    def mount(self, server: HttpServer) -> HttpServer:
        """Serve `/metrics` and `/healthz` on `server`."""
        server.route("/metrics", self.metrics_page)
        server.route("/healthz", self.health_page)
        return server

    def metrics_page(self, request: Request) -> Response:
        return Response(200, generate_latest(self.registry), "text/plain; version=0.0.4; charset=utf-8")

    def health_page(self, request: Request) -> Response:
        ok, report = self.health()
        return Response.json(report, 200 if ok else 503)


def _gauge(name: str, text: str, labels: dict[str, str], value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, text, labels=list(labels))
    g.add_metric(list(labels.values()), value)
    return g


def serve(agent: Agent, host: str, port: int, interval: float = 2.0) -> tuple[HttpServer, AgentMetrics]:
    """Start an HTTP server on host:port with the agent's `/metrics` and `/healthz` (OSError if taken)."""
    metrics = AgentMetrics(agent, interval)
    server = metrics.mount(HttpServer(host, port)).start()
    return server, metrics
