"""SqliteStore: the default Store, a kine-like log in one SQLite file (WAL).

Tables:
  log(id = revision, resource, namespace, name, type, value, prev)  the history, compacted
  kv(resource, namespace, name, rev, value)                          the newest object per key
  meta(k, v)                                                         revision, compacted

Why this shape: kine keeps one log table and serves "latest" by a max(id) query; we keep the
newest object per key in `kv` as well, load it into memory at start, and serve get/list from
memory, so a list of 10,000 pods is a dict walk plus a join of pre-encoded JSON, never a replay.

Writes: the event loop checks preconditions against memory, assigns the next revision, updates
memory, and hands the row to one writer thread that commits batches (group commit). The caller's
future resolves only after COMMIT, and watch events are published in revision order after
COMMIT, so a client never sees an acknowledged write that a kill -9 could lose: in WAL mode with
synchronous=NORMAL a committed transaction is in the WAL file (the kernel's page cache), which
survives the death of the process. (`sync="full"` also survives power loss, at a cost.)
"""

from __future__ import annotations

import asyncio
import builtins
import fcntl
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO

from nodeagent.api.memory_store import MemoryStore
from nodeagent.api.store import Entry, Event

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS log(
  id INTEGER PRIMARY KEY, resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
  type TEXT NOT NULL, value BLOB NOT NULL, prev BLOB);
CREATE TABLE IF NOT EXISTS kv(
  resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL, rev INTEGER NOT NULL,
  value BLOB NOT NULL, PRIMARY KEY(resource, namespace, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v INTEGER NOT NULL);
"""



class _Write:
    __slots__ = ("ev", "prev_raw", "fut")

    def __init__(self, ev: Event, prev_raw: bytes | None, fut: asyncio.Future[None]) -> None:
        self.ev = ev
        self.prev_raw = prev_raw
        self.fut = fut


class _Compact:
    __slots__ = ("rev", "fut")

    def __init__(self, rev: int, fut: asyncio.Future[None]) -> None:
        self.rev = rev
        self.fut = fut


class SqliteStore(MemoryStore):
    """MemoryStore made durable: reads come from memory, every write is committed to SQLite
    before it is acknowledged and published."""

    def __init__(self, path: Path, *, compaction_window: int = 10000, compact_interval: float = 60.0,
                 sync: str = "normal", max_watch_backlog: int = 100000,
                 observe: Callable[[str, float], None] | None = None) -> None:
        super().__init__(max_watch_backlog=max_watch_backlog)
        self.path = path
        self.compaction_window = compaction_window
        self.compact_interval = compact_interval
        self.sync = sync
        self._observe = observe or (lambda op, seconds: None)
        self._q: queue.SimpleQueue[_Write | _Compact | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: sqlite3.Connection | None = None
        self._compactor: asyncio.Task[None] | None = None
        self._ckpt_thread: threading.Thread | None = None
        self._ckpt_stop = threading.Event()
        self.checkpoint_interval = 1.0
        self.wal_truncate_frames = 16384  # about 64 MiB of 4 KiB pages
        self._lock: IO[str] | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._open_and_load)
        self._thread = threading.Thread(target=self._writer, name="sqlite-writer", daemon=True)
        self._thread.start()
        self._ckpt_stop = threading.Event()
        self._ckpt_thread = threading.Thread(target=self._checkpointer, name="sqlite-checkpoint", daemon=True)
        self._ckpt_thread.start()
        if self.compact_interval > 0:
            self._compactor = asyncio.create_task(self._compact_loop())

    def _open_and_load(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One server per data dir: the in-memory state is the source of truth for concurrency
        # checks, so a second writer would silently break optimistic concurrency.
        lock_path = self.path.with_name(self.path.name + ".lock")
        lock = os.fdopen(os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600), "a+")  # held for life
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise OSError(f"{self.path} is in use by another apiserver (flock on {lock.name}); stop it first "
                          "or use another --data-dir") from None
        self._lock = lock
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if self.sync == 'full' else 'NORMAL'}")
        # Checkpoints fsync the database file and took seconds on a busy disk; done inside COMMIT
        # they stall every writer and every watch. A separate thread runs them (PASSIVE, which
        # never blocks the writer), so a commit is only an append to the WAL.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("PRAGMA busy_timeout=30000")  # wait out the checkpointer's rare TRUNCATE
        conn.execute("PRAGMA journal_size_limit=67108864")  # a reset WAL is cut back to 64 MiB
        conn.executescript(_SCHEMA)
        meta = dict(conn.execute("SELECT k, v FROM meta").fetchall())
        max_log = conn.execute("SELECT COALESCE(MAX(id), 0) FROM log").fetchone()[0]
        max_kv = conn.execute("SELECT COALESCE(MAX(rev), 0) FROM kv").fetchone()[0]
        self._rev = max(int(meta.get("revision", 0)), max_log, max_kv)
        self._published = self._rev
        self._compacted = int(meta.get("compacted", 0))
        for resource, ns, name, rev, value in conn.execute(
                "SELECT resource, namespace, name, rev, value FROM kv"):
            raw = bytes(value)
            self._put(Entry(resource, ns, name, rev, json.loads(raw), raw))
        for rev, resource, ns, name, typ, value, prev in conn.execute(
                "SELECT id, resource, namespace, name, type, value, prev FROM log WHERE id > ? ORDER BY id",
                (self._compacted,)):
            raw = bytes(value)
            ev = Event(typ, rev, resource, ns, name, json.loads(raw), raw,
                       json.loads(prev) if prev is not None else None)
            self._history.setdefault(resource, deque()).append(ev)
        self._conn = conn
        log.info("msg=\"store loaded\" path=%s revision=%d compacted=%d objects=%d",
                 self.path, self._rev, self._compacted, sum(self.count(r) for r in self._objs))

    async def close(self) -> None:
        if self._compactor:
            self._compactor.cancel()
            try:
                await self._compactor
            except asyncio.CancelledError:
                pass
        self.close_watches()
        if self._thread:
            self._q.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._ckpt_thread:
            self._ckpt_stop.set()
            await asyncio.to_thread(self._ckpt_thread.join)
            self._ckpt_thread = None
        if self._conn:
            self._conn.close()
            self._conn = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # --- writes: memory at once, published after COMMIT -------------------------------------
    async def _commit(self, ev: Event, prev_raw: bytes | None) -> None:
        assert self._loop is not None
        fut: asyncio.Future[None] = self._loop.create_future()
        self._q.put(_Write(ev, prev_raw, fut))
        await asyncio.shield(fut)

    # --- compaction ------------------------------------------------------------------------
    async def compact(self, revision: int) -> None:
        """Forget history at or below `revision` (memory at once, disk in the writer)."""
        compacted = self._compact_memory(revision)
        if compacted is None:
            return
        revision = compacted
        assert self._loop is not None
        fut: asyncio.Future[None] = self._loop.create_future()
        self._q.put(_Compact(revision, fut))
        await fut
        log.info("msg=\"compacted\" revision=%d", revision)

    async def _compact_loop(self) -> None:
        while True:
            await asyncio.sleep(self.compact_interval)
            target = self._rev - self.compaction_window
            if target > self._compacted:
                try:
                    await self.compact(target)
                except Exception:
                    log.exception("msg=\"compaction failed\" revision=%d", target)

    # --- checkpoint thread -----------------------------------------------------------------
    def _checkpointer(self) -> None:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            while not self._ckpt_stop.wait(self.checkpoint_interval):
                t0 = time.perf_counter()
                try:
                    _busy, log_frames, _done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if log_frames > self.wal_truncate_frames:
                        # A writer that never pauses keeps the WAL from restarting; past the limit,
                        # take the writer lock briefly and truncate it so the file cannot grow forever.
                        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                except sqlite3.Error as e:
                    log.warning("msg=\"wal checkpoint failed\" error=%r", e)
                self._observe("checkpoint", time.perf_counter() - t0)
            # On shutdown, fold the WAL into the database so the next start reads one file.
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error:
                pass
        finally:
            conn.close()

    # --- writer thread ---------------------------------------------------------------------
    def _writer(self) -> None:
        conn = self._conn
        assert conn is not None and self._loop is not None
        stop = False
        while not stop:
            item = self._q.get()
            if item is None:
                break
            batch: builtins.list[_Write | _Compact] = [item]
            while len(batch) < 1000:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            t0 = time.perf_counter()
            err: BaseException | None = None
            try:
                self._apply(conn, batch)
            except BaseException as e:  # a failed commit must fail every waiting writer
                err = e
                log.exception("msg=\"sqlite commit failed\" batch=%d", len(batch))
            self._observe("commit", time.perf_counter() - t0)
            self._loop.call_soon_threadsafe(self._committed, batch, err)

    def _apply(self, conn: sqlite3.Connection, batch: builtins.list[_Write | _Compact]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            max_rev = 0
            for item in batch:
                if isinstance(item, _Compact):
                    conn.execute("DELETE FROM log WHERE id <= ?", (item.rev,))
                    conn.execute("INSERT OR REPLACE INTO meta(k, v) VALUES('compacted', ?)", (item.rev,))
                    continue
                ev = item.ev
                conn.execute("INSERT INTO log(id, resource, namespace, name, type, value, prev) "
                             "VALUES(?,?,?,?,?,?,?)",
                             (ev.rev, ev.resource, ev.namespace, ev.name, ev.type, ev.raw, item.prev_raw))
                if ev.type == "DELETED":
                    conn.execute("DELETE FROM kv WHERE resource=? AND namespace=? AND name=?",
                                 (ev.resource, ev.namespace, ev.name))
                else:
                    conn.execute("INSERT OR REPLACE INTO kv(resource, namespace, name, rev, value) "
                                 "VALUES(?,?,?,?,?)", (ev.resource, ev.namespace, ev.name, ev.rev, ev.raw))
                max_rev = max(max_rev, ev.rev)
            if max_rev:
                conn.execute("INSERT OR REPLACE INTO meta(k, v) VALUES('revision', ?)", (max_rev,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _committed(self, batch: builtins.list[_Write | _Compact], err: BaseException | None) -> None:
        if err is not None:
            self.failed = err
        for item in batch:
            if err is None and isinstance(item, _Write):
                self._publish(item.ev)
            if not item.fut.done():
                if err is None:
                    item.fut.set_result(None)
                else:
                    item.fut.set_exception(RuntimeError(f"storage commit failed: {err}"))
