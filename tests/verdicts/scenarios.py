"""The labelled verdict corpus: one row per scenario, a pair of loopback back ends and the report it must give.

Each `Scenario` names what legacy and new answer, the route's config over the corpus defaults, the requests sent
through the proxy, and the TRUE verdict and fields (per issue 8). What the current code gets wrong is listed once,
in `KNOWN_WRONG`, and the tests mark it xfail (strict): when a fix lands the test XPASSes and fails, and the line
here is deleted. See README.md in this folder.
"""

from __future__ import annotations

import gzip
import itertools
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from aiohttp import web

from tests.shadow.shadow_fixtures import Handler

Kind = Literal["added", "removed", "changed", "type_changed", "order", "mixed"]
Aspect = Literal["verdict", "reason", "fields", "kinds"]

# Every call of a volatile value gets the next tick, so two calls never collide (no flaky matches).
_TICKS = itertools.count(1)
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Send:
    """`count` requests of one kind sent through the proxy, one after another."""

    method: str = "GET"
    path: str = "/corpus/item/1"
    count: int = 12
    too_large: bool = False  # mirrored, but its answers are too large to compare: never counted compared

    @property
    def mirrored(self) -> bool:
        """Mirrored under the default shadow methods (GET, HEAD, OPTIONS)."""
        return self.method in ("GET", "HEAD", "OPTIONS")


@dataclass(frozen=True, slots=True)
class Scenario:
    """One labelled pair of back ends and the report the corpus expects for its route.

    `route`: keys merged over the corpus route block (id, match /corpus/**, mode shadow, readiness.min_compared 10).
    `real` / `noise`: every differing field group the report must list, with its kind; each is expected to differ
    in every compared pair (count == compared). `replay`: run `strangler replay` before the report. `reason`: a phrase
    the verdict's reason holds ("": the verdict has no reason).
    """

    name: str
    legacy: Handler
    new: Handler
    verdict: str
    real: Mapping[str, Kind] = field(default_factory=dict)
    noise: Mapping[str, Kind] = field(default_factory=dict)
    route: Mapping[str, Any] = field(default_factory=dict)
    sends: tuple[Send, ...] = (Send(),)
    replay: bool = False
    reason: str = ""

    @property
    def compared(self) -> int:
        return sum(s.count for s in self.sends if s.mirrored and not s.too_large)


OVER_CAP = bytes(4 * 1024 * 1024 + 1)  # one byte over what is compared of an answer (shadow.fetch.RESPONSE_CAP)


# --- response builders ------------------------------------------------------------------------------------------


def _build(body: object, request: web.Request) -> object:
    return body(request) if callable(body) else body


def json_reply(body: object, *, content_type: str = "application/json; charset=utf-8", status: int = 200) -> Handler:
    """JSON of `body` (or of `body(request)`), with this exact Content-Type header."""

    async def handler(request: web.Request) -> web.StreamResponse:
        data = json.dumps(_build(body, request)).encode()
        return web.Response(body=data, status=status, headers={"Content-Type": content_type})

    return handler


def text_reply(
    body: object, *, content_type: str = "text/plain; charset=utf-8", status: int = 200, encoding: str = "utf-8"
) -> Handler:
    """The text `body` (or `body(request)`), encoded as `encoding` (UTF-8 unless said)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        text = str(_build(body, request))
        return web.Response(body=text.encode(encoding), status=status, headers={"Content-Type": content_type})

    return handler


def bytes_reply(data: bytes, *, content_type: str = "application/octet-stream", gzipped: bool = False) -> Handler:
    """Fixed bytes; `gzipped` sends them gzip-compressed with Content-Encoding: gzip."""
    headers = {"Content-Type": content_type}
    if gzipped:
        headers["Content-Encoding"] = "gzip"

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=gzip.compress(data) if gzipped else data, headers=headers)

    return handler


def sized_reply() -> Handler:
    """A small JSON document, but one byte over what is compared of an answer for paths under /corpus/big/."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/corpus/big/"):
            return web.Response(body=OVER_CAP, content_type="application/octet-stream")
        return web.json_response(CUSTOMER)

    return handler


def redirect_to_own_host(path: str) -> Handler:
    """A 302 to an absolute URL built from the request's Host, as frameworks do (each side names itself)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": f"http://{request.host}{path}"}, text="")

    return handler


def request_id() -> str:
    return str(uuid.uuid4())


def timestamp() -> str:
    return (_EPOCH + timedelta(milliseconds=next(_TICKS))).isoformat()


def query_ms() -> str:
    return f"{0.5 + next(_TICKS) / 100:.2f}"


# --- bodies shared by several scenarios -------------------------------------------------------------------------

CUSTOMER = {"id": 7, "name": "Ada Lovelace", "email": "ada@example.com", "phone": "+44 20 7946 0000"}
ITEMS = [{"sku": "A-1", "qty": 1}, {"sku": "B-2", "qty": 2}, {"sku": "C-3", "qty": 3}]
ROWS = ("Blue widget", "Green gadget", "Red sprocket")


def without(doc: Mapping[str, object], *keys: str) -> dict[str, object]:
    return {k: v for k, v in doc.items() if k not in keys}


def renamed(doc: Mapping[str, object], old: str, new: str) -> dict[str, object]:
    return {(new if k == old else k): v for k, v in doc.items()}


def html_page(rows: tuple[str, ...]) -> Handler:
    """An HTML page (one element per line, as templates render it): a table and a volatile timing footer."""

    def render(_: web.Request) -> str:
        cells = "".join(f"<tr><td>{name}</td><td>{n}</td></tr>\n" for n, name in enumerate(rows, 1))
        footer = f"<footer>Queries took {query_ms()}ms</footer>\n"
        return f"<!doctype html>\n<html>\n<body>\n<table>\n{cells}</table>\n{footer}</body>\n</html>\n"

    return text_reply(render, content_type="text/html; charset=utf-8")


def line_group(line: str) -> str:
    """The grouped path of a text or HTML line, per issue 8: `text: "<line, numbers masked as #>"`.

    A rewritten line is grouped by the NEW line's signature. One home for the spelling: if the text comparison
    spells signatures otherwise, change it here only.
    """
    masked = re.sub(r"\d+(?:[.,:]\d+)*", "#", line)
    return f'text: "{masked}"'


def rows_doc(shift: int, *, table: bool) -> dict[str, object]:
    """150 rows; another `shift` changes three fields of every row (450 concrete differences in all)."""
    rows = [{"id": i, "value": i + shift, "price": i * 10 + shift, "label": f"row {i + shift}"} for i in range(150)]
    doc: dict[str, object] = {"rows": rows}
    if table:
        doc["table"] = "orders"
    return doc


NOISE = {"noise": {"sample": 1.0}}  # every safe request also sent twice to legacy

# --- the corpus -------------------------------------------------------------------------------------------------

SCENARIOS: tuple[Scenario, ...] = (
    Scenario("json-identical", json_reply(CUSTOMER), json_reply(CUSTOMER), "ready"),
    Scenario(
        "json-rename",
        json_reply(CUSTOMER),
        json_reply(renamed(CUSTOMER, "phone", "phone_number")),
        "diverging",
        real={"$.phone": "removed", "$.phone_number": "added"},
    ),
    Scenario(
        "json-removal",
        json_reply(CUSTOMER),
        json_reply(without(CUSTOMER, "email")),
        "diverging",
        real={"$.email": "removed"},
    ),
    Scenario(
        "json-type-change",
        json_reply({"id": 7, "total": "12.50"}),
        json_reply({"id": 7, "total": 12.5}),
        "diverging",
        real={"$.total": "type_changed"},
    ),
    Scenario(
        "json-reorder",
        json_reply({"items": ITEMS}),
        json_reply({"items": ITEMS[::-1]}),
        "diverging",
        real={"$.items": "order"},
    ),
    Scenario(
        "json-reorder-ignored",
        json_reply({"items": ITEMS}),
        json_reply({"items": ITEMS[::-1]}),
        "ready",
        route={"compare": {"ignore_order": ["$.items"]}},
    ),
    Scenario(
        "json-order-blind-list-gained-a-value",  # judged without deepdiff: one addition at new's index
        json_reply({"flags": ["gift", "express"]}),
        json_reply({"flags": ["express", "gift", "fragile"]}),
        "diverging",
        real={"$.flags[*]": "added"},
        route={"compare": {"ignore_order": ["$.flags"]}},
    ),
    Scenario(
        "json-order-blind-list-lost-a-repeat",  # judged without deepdiff: a count change is one change
        json_reply({"flags": ["gift", "gift", "express"]}),
        json_reply({"flags": ["express", "gift"]}),
        "diverging",
        real={"$.flags[*]": "changed"},
        route={"compare": {"ignore_order": ["$.flags"]}},
    ),
    Scenario(
        "json-order-blind-floats-within-tolerance",  # every element moved within the tolerance, in another order
        json_reply({"weights": [1.25, 2.5, 3.75]}),
        json_reply({"weights": [2.5004, 3.7496, 1.2503]}),
        "ready",
        route={"compare": {"ignore_order": ["$.weights"], "float_tolerance": 0.001}},
    ),
    Scenario(
        "json-order-blind-integers-as-floats",  # 1 and 1.0 are equal in an order-blind list too
        json_reply({"ids": [3, 1, 2]}),
        json_reply({"ids": [1.0, 2.0, 3.0]}),
        "ready",
        route={"compare": {"ignore_order": ["$.ids"]}},
    ),
    Scenario(
        "json-order-blind-items-prices-as-floats",  # every item's price now a float, items in another order
        json_reply({"items": [{"sku": "a", "price": 10}, {"sku": "b", "price": 20}, {"sku": "c", "price": 30}]}),
        json_reply({"items": [{"sku": "c", "price": 30.0}, {"sku": "a", "price": 10.0}, {"sku": "b", "price": 20.0}]}),
        "ready",
        route={"compare": {"ignore_order": ["$.items"]}},
    ),
    Scenario(
        "json-order-blind-items-one-price-changed",  # beside items that only changed form: one real change
        json_reply({"items": [{"sku": "a", "price": 10}, {"sku": "b", "price": 20}, {"sku": "c", "price": 30}]}),
        json_reply({"items": [{"sku": "c", "price": 30.0}, {"sku": "a", "price": 12.0}, {"sku": "b", "price": 20.0}]}),
        "diverging",
        real={"$.items[*].price": "changed"},
        route={"compare": {"ignore_order": ["$.items"]}},
    ),
    Scenario(
        "json-order-blind-list-value-replaced",  # deepdiff pairs the removed value with the added one
        json_reply({"flags": ["gift", "express", "fragile"]}),
        json_reply({"flags": ["express", "heavy", "gift"]}),
        "diverging",
        real={"$.flags[*]": "mixed"},
        route={"compare": {"ignore_order": ["$.flags"]}},
    ),
    Scenario(
        "json-array-values-changed",  # same length, two values replaced: two changes at their indexes
        json_reply({"tags": ["red", "blue", "green", "large"]}),
        json_reply({"tags": ["red", "navy", "green", "xl"]}),
        "diverging",
        real={"$.tags[*]": "changed"},
    ),
    Scenario(
        "json-array-values-shifted",  # same length, first value dropped and one added last: a removal and an addition
        json_reply({"tags": ["red", "blue", "green"]}),
        json_reply({"tags": ["blue", "green", "large"]}),
        "diverging",
        real={"$.tags[*]": "mixed"},
    ),
    Scenario(
        "json-array-run-replaced-and-grown",  # a run of two replaced by three: a change and an addition inside it
        json_reply({"l": [2.5, 2.5, None]}),
        json_reply({"l": [None, 2.5, 2, 2, None]}),
        "diverging",
        real={"$.l[*]": "mixed"},
    ),
    Scenario(
        "json-array-value-deleted-and-one-replaced",  # 5 dropped first; 4 deleted and 3 inserted at index 3: a change
        json_reply({"l": [5, None, 2, 4, 3]}),
        json_reply({"l": [None, 2, 3, 3]}),
        "diverging",
        real={"$.l[*]": "mixed"},
    ),
    Scenario(
        "float-jitter-within-tolerance",
        json_reply({"price": 9.99, "rate": 0.1}),
        json_reply({"price": 9.990000001, "rate": 0.10000000000000002}),
        "ready",
        route={"compare": {"float_tolerance": 0.000001}},
    ),
    Scenario(
        "float-beyond-tolerance",
        json_reply({"price": 9.99}),
        json_reply({"price": 9.98}),
        "diverging",
        real={"$.price": "changed"},
        route={"compare": {"float_tolerance": 0.000001}},
    ),
    Scenario(
        "volatile-ids-and-timestamps",
        json_reply(lambda r: {"id": 7, "request_id": request_id(), "generated_at": timestamp()}),
        json_reply(lambda r: {"id": 7, "request_id": request_id(), "generated_at": timestamp()}),
        "ready",
        noise={"$.request_id": "changed", "$.generated_at": "changed"},
        route=NOISE,
    ),
    Scenario(
        "volatile-ids-without-noise-sampling",
        json_reply(lambda r: {"id": 7, "request_id": request_id(), "generated_at": timestamp()}),
        json_reply(lambda r: {"id": 7, "request_id": request_id(), "generated_at": timestamp()}),
        "diverging",
        real={"$.request_id": "changed", "$.generated_at": "changed"},
    ),
    Scenario(
        "volatile-field-removed",
        json_reply(lambda r: {"id": 7, "generated_at": timestamp()}),
        json_reply({"id": 7}),
        "diverging",
        real={"$.generated_at": "removed"},
        route=NOISE,
    ),
    Scenario(
        "html-volatile-footer",
        html_page(ROWS),
        html_page(ROWS),
        "ready",
        noise={line_group("<footer>Queries took 0.53ms</footer>"): "changed"},
        route=NOISE,
    ),
    Scenario(
        "html-changed-row-and-volatile-footer",
        html_page(ROWS),
        html_page(("Blue widget", "Green gizmo", "Red sprocket")),
        "diverging",
        real={line_group("<tr><td>Green gizmo</td><td>2</td></tr>"): "changed"},
        noise={line_group("<footer>Queries took 0.53ms</footer>"): "changed"},
        route=NOISE,
    ),
    Scenario(
        "html-tags-spelled-otherwise",  # attribute order, case, quoting, self-closing slash: the same DOM
        text_reply('<div class="card" id="c1">\n<IMG SRC="/a.png" alt=\'A\'/>\n</div>\n', content_type="text/html"),
        text_reply("<div id=c1 class=card>\n<img alt=\"A\" src='/a.png'>\n</div>\n", content_type="text/html"),
        "ready",
    ),
    Scenario(
        "html-same-page-in-latin-1",  # the text is the same; only the declared charset (a header) differs
        text_reply("<p>Café crème brûlée</p>\n", content_type="text/html; charset=utf-8"),
        text_reply("<p>Café crème brûlée</p>\n", content_type="text/html; charset=iso-8859-1", encoding="latin-1"),
        "diverging",
        real={"header.content-type": "changed"},
    ),
    Scenario(
        "text-changed-line",
        text_reply("service: billing\nstatus: ok\nregion: eu-west\n"),
        text_reply("service: billing\nstatus: degraded\nregion: eu-west\n"),
        "diverging",
        real={line_group("status: degraded"): "changed"},
    ),
    Scenario(
        "text-line-endings-and-trailing-space",
        text_reply("service: billing  \r\nstatus: ok\r\n"),
        text_reply("service: billing\nstatus: ok\n"),
        "ready",
    ),
    Scenario(
        "binary-changed",
        bytes_reply(bytes(range(256)) * 4, content_type="image/png"),
        bytes_reply(bytes(range(255, -1, -1)) * 4, content_type="image/png"),
        "diverging",
        real={"body": "changed"},
    ),
    Scenario(
        "gzip-vs-identity",
        bytes_reply(json.dumps(CUSTOMER).encode(), content_type="application/json", gzipped=True),
        bytes_reply(json.dumps(CUSTOMER).encode(), content_type="application/json"),
        "ready",
    ),
    Scenario(
        "404-different-wording",
        text_reply("Page not found\n", status=404),
        text_reply("No such page\n", status=404),
        "diverging",
        real={line_group("No such page"): "changed"},
    ),
    Scenario(
        "302-location-own-host",
        redirect_to_own_host("/login?next=/corpus/item/1"),
        redirect_to_own_host("/login?next=/corpus/item/1"),
        "ready",
        route={"compare": {"headers": ["location"]}},
    ),
    Scenario(
        "json-absolute-url-own-host",
        json_reply(lambda r: {"id": 7, "next_url": f"http://{r.host}/corpus/item/2"}),
        json_reply(lambda r: {"id": 7, "next_url": f"http://{r.host}/corpus/item/2"}),
        "ready",
    ),
    Scenario(
        "150-items-and-a-removed-key",
        json_reply(rows_doc(0, table=True)),
        json_reply(rows_doc(1, table=False)),
        "diverging",
        real={
            "$.rows[*].value": "changed",
            "$.rows[*].price": "changed",
            "$.rows[*].label": "changed",
            "$.table": "removed",
        },
    ),
    Scenario(
        "post-only-route",
        json_reply({"ok": True}),
        json_reply({"ok": True}),
        "not mirrored",
        route={"match": {"methods": ["POST"]}},
        sends=(Send("POST", "/corpus/orders", 12),),
        reason="the mirror policy skipped all 12 requests",
    ),
    Scenario(
        "json-charset-parameter",
        json_reply(CUSTOMER, content_type="application/json; charset=utf-8"),
        json_reply(CUSTOMER, content_type="application/json"),
        "ready",
    ),
    Scenario(
        "replays-not-counted",
        json_reply(CUSTOMER),
        json_reply(CUSTOMER),
        "needs samples",
        route={"readiness": {"min_compared": 20}},
        replay=True,
    ),
    Scenario(
        # Every answer over the 4 MiB compared per side: no pair can ever be compared, so the route needs samples
        # that waiting will not bring, and its reason says so (it had read as a route still gathering samples).
        "every-answer-too-large",
        bytes_reply(OVER_CAP),
        bytes_reply(OVER_CAP),
        "needs samples",
        sends=(Send(count=3, too_large=True),),
        reason="all 3 requests so far were skipped (3 with an answer too large to compare)",
    ),
    Scenario(
        # Twelve small answers match, but 3 of the 15 mirrored requests (20%, over the default 1% of
        # readiness.max_uncompared_rate) had answers too large to compare: the largest answers were never verified,
        # so the route is not ready (it had read `ready`).
        "some-answers-too-large",
        sized_reply(),
        sized_reply(),
        "needs samples",
        sends=(Send(), Send(path="/corpus/big/1", count=3, too_large=True)),
        reason="3 of the 15 requests mirrored (20%) were left out of the comparison for their size",
    ),
)

BY_NAME = {s.name: s for s in SCENARIOS}

# What the current code gets wrong: (scenario, aspect) → why. The tests mark these xfail(strict=True); delete a
# line when its fix lands (the test then XPASSes, which fails the run until the line goes).
# Empty: every scenario passes. Add (scenario, aspect): "issue N item M: what is wrong" for a known-wrong case.
KNOWN_WRONG: dict[tuple[str, Aspect], str] = {}
