"""The viewer token of the live server's HTTP side: who may open /ws and read /stats.

A pure check, no sockets: `refusal(expected, query_token, authorization)`
says why a request is refused, or None when it may go on. The token comes
from the `?token=` query parameter (what a browser's WebSocket can send:
the player page passes along the `token` of its own URL) or from an
`Authorization: Bearer TOKEN` header (scripts, /stats). It is compared in
constant time and never appears in a message.

The viewer token is separate from the ingest token: a viewer's URL ends up
in browser history, bookmarks and shared links, and leaking it must not let
anyone push (or take over) a stream.
"""

from __future__ import annotations

import hmac
from typing import NamedTuple

__all__ = ["Refusal", "refusal", "TOKEN_PARAM"]

TOKEN_PARAM = "token"
_BEARER = "bearer "


class Refusal(NamedTuple):
    """An HTTP status (401: no token, 403: a wrong one) and the error for the JSON body."""

    status: int
    error: str


def _bearer(authorization: str | None) -> str | None:
    if authorization and authorization[:len(_BEARER)].lower() == _BEARER:
        return authorization[len(_BEARER):].strip()
    return None


def refusal(expected: str | None, query_token: str | None,
            authorization: str | None) -> Refusal | None:
    """Why a request with this `?token=` and `Authorization` header is refused (None: allowed).
    With no expected token every request is allowed."""
    if expected is None:
        return None
    given = query_token if query_token is not None else _bearer(authorization)
    if not given:
        return Refusal(401, "a viewer token is required: add ?token=... to the URL "
                            "or send 'Authorization: Bearer ...'")
    # Bytes: compare_digest only takes ASCII str, and a token may be any UTF-8.
    if not hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8")):
        return Refusal(403, "wrong viewer token")
    return None
