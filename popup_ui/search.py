"""Search-as-you-type for customers: ``GET /api/customers?q=…&limit=…``.

Translates the query string into ``db.search.search_customers`` run in a worker thread,
and its hits into the typed response below (the search API's ``Hit``). What matches
what (kana folding, numbers in any spelling) is ``db.search``'s; phones are shown in
the office's numbering plan. Knows nothing of SIP.
"""

from __future__ import annotations

from typing import Any

from fastapi import Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from db.search import LIMIT_MAX, MatchedField, search_customers
from lookup.card import StaffRef
from lookup.numbers import Numbering
from popup_ui.auth import access_router
from popup_ui.context import get_web, in_session

# Longer than any name, number or address anyone types into a search box; a longer
# query is refused (422) rather than scanned for.
QUERY_MAX = 100
DEFAULT_LIMIT = 20

router = access_router(
    "staff",
    prefix="/api",
    tags=["search"],
    responses={401: {"description": "no valid session"}},
)


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class HitPhone(_Out):
    number: str = Field(description="E.164, e.g. +81312345678")
    national: str = Field(description="as people read it, e.g. 03-1234-5678")
    label: str | None = Field(description="自宅 / 携帯 / 会社 / 代表 …")


class Hit(_Out):
    id: int
    code: str | None
    name: str
    furigana: str | None
    honorific: str | None
    company: str | None
    department: str | None
    rank: str | None
    tags: list[str]
    assigned_staff: StaffRef | None
    phones: list[HitPhone] = Field(description="live phones, in the order they were added")
    matched: MatchedField | None = Field(
        description="the field the query was found in (the most telling one); "
        "null when the query was empty"
    )


class SearchResults(_Out):
    query: str
    results: list[Hit]
    truncated: bool = Field(description="more customers match than were returned")


@router.get("/customers", responses={422: {"description": "query too long, or a bad limit"}})
async def search(
    request: Request,
    q: str = Query(
        default="",
        max_length=QUERY_MAX,
        description="words to find, all of them (name, furigana in any kana, company, code, "
        "email), or part of a phone number in any spelling; empty: the most recently updated",
    ),
    limit: int = Query(default=DEFAULT_LIMIT, ge=1, le=LIMIT_MAX),
) -> SearchResults:
    """Live customers matching every word of ``q``, best first: the code exactly, then
    names starting with it, then by furigana."""
    web = get_web(request)
    # The office's plan (its region: what a trunk 0 means; how a number reads). The web
    # side sees the lookup's plan through a protocol; the composition hands the real one.
    plan = web.services.lookup.numbering
    numbering = plan if isinstance(plan, Numbering) else Numbering()

    def work(session: Session) -> tuple[list[dict[str, Any]], bool]:
        return search_customers(session, q, limit=limit, numbering=numbering)

    hits, truncated = await in_session(request, work)
    return SearchResults(
        query=q,
        results=[Hit.model_validate(hit) for hit in hits],
        truncated=truncated,
    )
