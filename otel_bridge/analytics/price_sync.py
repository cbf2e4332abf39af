"""Keeps ``model_prices`` (schema version 2) equal to the price table for every (provider, model) seen in spans.

The analytics resolve prices in Python at query time (``analytics.cost``); Grafana and any other direct ClickHouse
client cannot, so the same resolved rows are written to ClickHouse, one row per pair as the parallel arrays
``PRICES_SQL`` builds, and joined there with the same ``SPAN_COST``. Writing is cheap: a pair is written only when
it is new or its resolved rows differ from what the table holds. Unpriced pairs get a row with empty arrays, so a
model that loses its price (an override removed) is overwritten too.

Who writes: ``serve`` (the store's owner) at start with its price table, then every ``INTERVAL_S`` for new pairs;
the CLI when it opens the store itself with the configured table; ``otel-bridge prices sync`` on demand.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from otel_bridge.analytics.cost import _ROW_ATTRS, span_pairs
from otel_bridge.analytics.schema import PRICE_COLUMNS
from otel_bridge.analytics.store import Store
from otel_bridge.pricing import PriceTable

logger = logging.getLogger(__name__)

INTERVAL_S = 10.0  # how often ``serve`` looks for pairs it has not written yet
_ARRAYS = PRICE_COLUMNS[4:13]  # p_from … p_req, in the order of _ROW_ATTRS
Pair = tuple[str, str]
Record = tuple[Any, ...]  # (source, priced_as, *arrays): what a pair's row holds, for comparison


def resolve(prices: PriceTable, provider: str, model: str) -> Record:
    """A pair's row as ``price_parameters`` would ship it: the rows sorted by (date, time of day, tier)."""
    priced = prices.resolve(model, provider)
    if priced is None:
        return ("unpriced", "", *([] for _ in _ARRAYS))
    rows = sorted(priced.rows, key=lambda r: r.sort_key)
    arrays = ([getattr(row, attr) for row in rows] for attr in _ROW_ATTRS)
    return (priced.source, f"{priced.provider}/{priced.model}", *arrays)


@dataclass
class PriceSync:
    """One price table's view of ``model_prices``: what is stored, and what to write so it matches."""

    store: Store
    prices: PriceTable
    stored: dict[Pair, Record] | None = field(default=None, repr=False)

    def read(self) -> dict[Pair, Record]:
        """The table's current rows (``FINAL``: the newest version of each pair)."""
        sql = f"SELECT {', '.join(PRICE_COLUMNS[:13])} FROM {self.store.table('model_prices')} FINAL"
        rows = self.store.client.query(sql).result_rows
        self.stored = {(r[0], r[1]): (r[2], r[3], *(list(a) for a in r[4:13])) for r in rows}
        return self.stored

    def sync(self, full: bool = True) -> list[dict[str, Any]]:
        """Write the pairs seen whose row is missing or (``full``: re-resolving every pair) differs; returns
        what was written. ``full=False`` only looks at pairs not written yet: the price table is the same."""
        stored = self.read() if full or self.stored is None else self.stored
        pairs = span_pairs(self.store)
        todo = pairs if full else [p for p in pairs if p not in stored]
        return self.write((pair, resolve(self.prices, *pair)) for pair in todo)

    def write(self, records: Iterable[tuple[Pair, Record]]) -> list[dict[str, Any]]:
        stored = self.read() if self.stored is None else self.stored
        changed = [(pair, rec) for pair, rec in records if stored.get(pair) != rec]
        if not changed:
            return []
        version = time.time_ns()
        rows = [[*pair, *rec, version] for pair, rec in changed]
        self.store.insert("model_prices", rows, PRICE_COLUMNS[:14])
        stored.update(changed)
        for (provider, model), rec in changed:
            logger.info("model_prices: %s/%s → %s %s", provider, model, rec[0], rec[1])
        return [{"provider": p, "model": m, "source": r[0], "priced_as": r[1], "rows": len(r[2])}
                for (p, m), r in changed]  # fmt: skip


def sync_prices(store: Store, prices: PriceTable) -> list[dict[str, Any]]:
    """One full sync (the CLI's, and ``prices sync``'s)."""
    return PriceSync(store, prices).sync(full=True)


class SyncLoop:
    """``serve``'s writer: a full sync at start (retried until it succeeds), then new pairs every ``interval``."""

    def __init__(self, store: Store, prices: PriceTable, interval: float = INTERVAL_S) -> None:
        self.sync, self.interval = PriceSync(store, prices), interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="otel-bridge-prices", daemon=True)

    def start(self) -> SyncLoop:
        self._thread.start()
        return self

    def _run(self) -> None:
        full = True
        while not self._stop.is_set():
            try:
                self.sync.sync(full=full)
                full = False
            except Exception:
                logger.exception("model_prices sync failed; retrying in %.0f s", self.interval)
            self._stop.wait(self.interval)

    def stop(self, timeout: float = 5.0) -> None:
        """Before the store closes: let a sync in progress finish."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
