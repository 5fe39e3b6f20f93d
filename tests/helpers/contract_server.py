"""Another server of the MooVitamix contract, for end-to-end runs that must not rely on the
project's own fake API and its habits.

It serves whatever rows a test gives it (odd totals, hostile strings, timestamps without a
fraction, several histories per user, items that no store can hold), with the contract's
paging (`page` >= 1, `size` 1..100, 422 otherwise, an empty page past the end), and answers
scripted transient errors (429 with `Retry-After`, 503) before the real page. It is a plain
threaded `http.server`, so it shares no code with the pipeline or with `localcloud.fakeapi`.
"""

from __future__ import annotations

import json
import math
import random
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from localcloud.fakeapi import HOSTILE_STRINGS

Answer = tuple[int, dict[str, str], Any]
"""(status, headers, JSON body) of a scripted answer."""

TOO_MANY_REQUESTS: Answer = (429, {"Retry-After": "0"}, {"detail": "Too Many Requests"})
UNAVAILABLE: Answer = (503, {}, {"detail": "Service Unavailable"})
ENTITIES = ("users", "tracks", "listen_history")


@dataclass
class ContractServer:
    """Serves `rows[entity]` page by page; `script[(entity, page)]` answers come first."""

    rows: dict[str, list[Any]]
    script: dict[tuple[str, int], list[Answer]] = field(default_factory=dict)
    requests: list[tuple[str, int, int, int]] = field(
        default_factory=list
    )  # path, page, size, status
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def answer(self, path: str, query: str) -> Answer:
        entity = path.strip("/")
        if entity not in self.rows:
            return 404, {}, {"detail": "Not Found"}
        params = parse_qs(query)
        try:
            page = int(params.get("page", ["1"])[0])
            size = int(params.get("size", ["100"])[0])
        except ValueError:
            return 422, {}, {"detail": [{"type": "int_parsing", "loc": ["query", "page"]}]}
        if page < 1 or not 1 <= size <= 100:
            detail = [{"type": "less_than_equal", "loc": ["query", "size"], "msg": "invalid"}]
            return 422, {}, {"detail": detail}
        with self._lock:
            scripted = self.script.get((entity, page))
            if scripted:
                status, headers, body = scripted.pop(0)
                self.requests.append((entity, page, size, status))
                return status, headers, body
            self.requests.append((entity, page, size, 200))
        rows = self.rows[entity]
        start = (page - 1) * size
        body = {
            "items": rows[start : start + size],
            "total": len(rows),
            "page": page,
            "size": size,
            "pages": math.ceil(len(rows) / size),
        }
        return 200, {}, body

    def start(self) -> ContractServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                status, headers, body = server.answer(parts.path, parts.query)
                # ensure_ascii: a lone surrogate in the data is still valid JSON (\\ud800)
                payload = json.dumps(body, ensure_ascii=True).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> ContractServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def served_statuses(self) -> dict[int, int]:
        counts: dict[int, int] = defaultdict(int)
        for *_, status in self.requests:
            counts[status] += 1
        return dict(counts)


# --- data sets ------------------------------------------------------------------------------

EXTRA_HOSTILE = (
    "",
    " ",
    "x" * 30_000,  # long, and still far below DynamoDB's item limit
    "\u2028line\u2029separators\u0085",
    "quote \" and \\ backslash and ' apostrophe",
    "<html>&amp;&lt;</html>",
    "SELECT * FROM users WHERE name = '' OR 1=1; --",
    "\u202eright-to-left override",
    "zero\u200bwidth",
    "\U0001f3b5" * 50,
)
HOSTILE = (*HOSTILE_STRINGS, *EXTRA_HOSTILE)


def _stamp(rng: random.Random, whole: bool) -> str:
    moment = datetime(2020, 1, 1) + timedelta(
        seconds=rng.randrange(5 * 365 * 86_400), microseconds=rng.randrange(1, 1_000_000)
    )
    return (moment.replace(microsecond=0) if whole else moment).isoformat()


def odd_rows(seed: int = 1) -> dict[str, list[Any]]:
    """1001 users, 1001 tracks and 1003 histories that exercise every quirk of the contract.

    Timestamps: one in three without a fraction; updated_at drawn independently of created_at
    (often earlier). One text field in seven is hostile. Users and tracks share some ids.
    Histories: 1 to 3 rows per user, keyed by (user_id, created_at), with some created_at
    values that differ only by the fraction. Tracks carry an unknown field, to be ignored.
    """
    rng = random.Random(seed)
    user_ids = rng.sample(range(1, 100_001), 1001)
    shared = user_ids[:25]
    track_ids = shared + rng.sample(sorted(set(range(1, 100_001)) - set(shared)), 976)
    hostile = iter(HOSTILE * 1000)

    def text(default: str, index: int, field_index: int) -> str:
        return next(hostile) if (index + field_index) % 7 == 0 else default

    users: list[dict[str, Any]] = []
    for index, user_id in enumerate(user_ids):
        fields = ("first_name", "last_name", "email", "gender", "favorite_genres")
        users.append(
            {
                "id": user_id,
                **{f: text(f"{f}-{index}", index, k) for k, f in enumerate(fields)},
                "created_at": _stamp(rng, index % 3 == 0),
                "updated_at": _stamp(rng, index % 3 == 1),
            }
        )
    tracks: list[dict[str, Any]] = []
    for index, track_id in enumerate(track_ids):
        fields = ("name", "artist", "songwriters", "genres", "album")
        tracks.append(
            {
                "id": track_id,
                **{f: text(f"{f}-{index}", index, k) for k, f in enumerate(fields)},
                "duration": f"{rng.randrange(100):02d}:{rng.randrange(60):02d}",
                "created_at": _stamp(rng, index % 3 == 0),
                "updated_at": _stamp(rng, index % 3 == 2),
                "popularity": rng.random(),  # not in the contract: ignored, never stored
            }
        )
    histories: list[dict[str, Any]] = []
    owners = iter(rng.sample(user_ids, 1001))
    while len(histories) < 1003:
        user_id = next(owners)
        base = datetime(2024, 1, 1) + timedelta(seconds=rng.randrange(365 * 86_400))
        # same second: one without a fraction, others differing only by the fraction
        offsets = [timedelta(0), timedelta(microseconds=1), timedelta(microseconds=500_000)]
        for offset in offsets[: min(rng.randint(1, 3), 1003 - len(histories))]:
            created = (base + offset).isoformat()
            histories.append(
                {
                    "user_id": user_id,
                    "items": rng.sample(track_ids, rng.randint(0, 8)),
                    "created_at": created,
                    "updated_at": _stamp(rng, rng.random() < 0.3),
                }
            )
    rng.shuffle(histories)
    return {"users": users, "tracks": tracks, "listen_history": histories}
