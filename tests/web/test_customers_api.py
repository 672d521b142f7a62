"""Customer records through the real server: a staff member creates and edits a customer,
its timeline shows it newest first, a delete hides it (and its number from the pop), an
admin restores it from the trash, sees the audit trail, and purges."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from db.demo import DEMO_ACCOUNTS
from tests.web.conftest import Live

pytestmark = pytest.mark.asyncio

STAFF = next(a for a in DEMO_ACCOUNTS if a.role == "staff")
ADMIN = next(a for a in DEMO_ACCOUNTS if a.role == "admin")
NUMBER = "06-6123-4567"  # nobody's number in the demo (Osaka)


async def _login(live: Live, login: str, password: str) -> httpx.AsyncClient:
    client = live.client()
    response = await client.post("/api/session", json={"login": login, "password": password})
    assert response.status_code == 200, response.text
    return client


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


async def test_a_customer_from_creation_to_delete_and_an_admins_restore(live_web: Live) -> None:
    sato = await _login(live_web, STAFF.login, STAFF.password)
    admin = await _login(live_web, ADMIN.login, ADMIN.password)
    me = _ok(await sato.get("/api/me"))

    created = _ok(
        await sato.post(
            "/api/customers",
            json={
                "name": "大阪 一郎",
                "furigana": "おおさか いちろう",
                "honorific": "様",
                "company": "大阪商事",
                "contact_hours": "平日 10-17時",
                "tags": ["新規"],
                "assigned_staff_id": me["id"],
            },
        ),
        201,
    )
    customer_id = created["id"]
    assert created["phones"] == [] and created["timeline"] == []
    assert created["assigned_staff"]["name"] == STAFF.name
    assert created["created_at"].endswith("+09:00")

    phone = _ok(
        await sato.post(
            f"/api/customers/{customer_id}/phones", json={"number": "０６６１２３４５６７"}
        ),
        201,
    )
    assert (phone["number"], phone["national"], phone["shared_with"]) == (
        "+81661234567",
        NUMBER,
        [],
    )
    bad = await sato.post(f"/api/customers/{customer_id}/phones", json={"number": "12-345-6"})
    assert bad.status_code == 422, bad.text
    assert "電話番号として読めません" in bad.json()["detail"]

    transaction = _ok(
        await sato.post(
            f"/api/customers/{customer_id}/transactions",
            json={
                "date": "2026-11-01",
                "title": "給湯器交換",
                "amount": 158000,
                "staff_id": me["id"],
                "detail": "ノーリツ製",
            },
        ),
        201,
    )
    assert transaction["staff"]["name"] == STAFF.name
    assert (transaction["amount"], transaction["detail"]) == (158000, "ノーリツ製")
    note = _ok(
        await sato.post(
            "/api/notes",
            json={
                "idempotency_key": uuid.uuid4().hex,
                "customer_id": customer_id,
                "body": "訪問して現地調査",
                "kind": "visit",
                "follow_up_on": "2026-12-01",
            },
        ),
        201,
    )
    assert note["kind"] == "visit"
    family = _ok(
        await sato.post(
            f"/api/customers/{customer_id}/family",
            json={"name": "大阪 花子", "relation": "妻", "birthday": "1980-04-01"},
        ),
        201,
    )
    patched = _ok(
        await sato.patch(
            f"/api/customers/{customer_id}", json={"company": None, "rank": "A", "memo": "犬あり"}
        )
    )
    assert (patched["company"], patched["rank"], patched["memo"]) == (None, "A", "犬あり")
    assert patched["honorific"] == "様"  # not sent: unchanged
    assert patched["family"] == [{**family, "furigana": None}]
    assert patched["notes"][0]["kind"] == "visit"
    assert patched["notes"][0]["follow_up_on"] == "2026-12-01"
    # Newest first: the note written now, then the transaction of 2026-11-01.
    assert [(i["kind"], i["id"]) for i in patched["timeline"]] == [
        ("note", note["id"]),
        ("transaction", transaction["id"]),
    ]
    assert patched["timeline"][0]["note_kind"] == "visit"
    page = _ok(await sato.get(f"/api/customers/{customer_id}/timeline", params={"limit": 1}))
    assert [i["id"] for i in page["items"]] == [note["id"]] and page["next"]
    rest = _ok(
        await sato.get(f"/api/customers/{customer_id}/timeline", params={"before": page["next"]})
    )
    assert ([i["id"] for i in rest["items"]], rest["next"]) == ([transaction["id"]], None)
    assert (
        await sato.get(f"/api/customers/{customer_id}/timeline", params={"before": "x"})
    ).status_code == 422

    card = _ok(await sato.get("/api/lookup", params={"number": NUMBER}))
    assert [c["name"] for c in card["customers"]] == ["大阪 一郎"]

    # Delete: gone from the record and the pop; staff cannot reach the trash.
    assert (await sato.delete(f"/api/customers/{customer_id}")).status_code == 204
    assert (await sato.get(f"/api/customers/{customer_id}")).status_code == 404
    assert (await sato.delete(f"/api/customers/{customer_id}")).status_code == 404
    card = _ok(await sato.get("/api/lookup", params={"number": NUMBER}))
    assert card["status"] == "unknown"
    for method, path in (
        ("GET", "/api/admin/deleted?entity=customer"),
        ("GET", "/api/admin/audit"),
        ("POST", f"/api/admin/restore/customer/{customer_id}"),
    ):
        assert (await sato.request(method, path)).status_code == 403

    trash = _ok(await admin.get("/api/admin/deleted", params={"entity": "customer"}))
    [item] = [i for i in trash["items"] if i["id"] == customer_id]
    assert (item["label"], item["deleted_by_name"]) == ("大阪 一郎", STAFF.name)
    refused = await admin.post(
        f"/api/admin/purge/customer/{customer_id}", json={"confirm": "not it"}
    )
    assert refused.status_code == 422
    _ok(await admin.post(f"/api/admin/restore/customer/{customer_id}"))
    back = _ok(await sato.get(f"/api/customers/{customer_id}"))
    assert {**back, "updated_at": None} == {**patched, "updated_at": None}
    card = _ok(await sato.get("/api/lookup", params={"number": NUMBER}))
    assert [c["name"] for c in card["customers"]] == ["大阪 一郎"]
    live_purge = await admin.post(
        f"/api/admin/purge/customer/{customer_id}", json={"confirm": str(customer_id)}
    )
    assert live_purge.status_code == 409, live_purge.text

    audit = _ok(await admin.get("/api/admin/audit", params={"customer_id": customer_id}))
    steps = [(e["action"], e["entity"], e["staff_name"]) for e in reversed(audit["entries"])]
    assert steps == [
        ("create", "customer", STAFF.name),
        ("create", "phone", STAFF.name),
        ("create", "transaction", STAFF.name),
        ("create", "note", STAFF.name),
        ("create", "family", STAFF.name),
        ("update", "customer", STAFF.name),
        ("delete", "customer", STAFF.name),
        ("restore", "customer", ADMIN.name),
    ]
    update = audit["entries"][2]
    assert (update["before"]["company"], update["after"]["company"]) == ("大阪商事", None)


async def test_a_deleted_phone_stops_popping_and_a_purge_needs_the_delete_first(
    live_web: Live,
) -> None:
    sato = await _login(live_web, STAFF.login, STAFF.password)
    admin = await _login(live_web, ADMIN.login, ADMIN.password)
    created = _ok(
        await sato.post(
            "/api/customers",
            json={"name": "京都 次郎", "phones": [{"number": "075-123-4567", "label": "自宅"}]},
        ),
        201,
    )
    [phone] = created["phones"]
    assert phone["national"] == "075-123-4567"
    card = _ok(await sato.get("/api/lookup", params={"number": "0751234567"}))
    assert card["status"] == "matched"
    invalid = await sato.patch(f"/api/phones/{phone['id']}", json={"number": "でんわ"})
    assert invalid.status_code == 422 and "電話番号" in invalid.json()["detail"]

    assert (await sato.delete(f"/api/phones/{phone['id']}")).status_code == 204
    card = _ok(await sato.get("/api/lookup", params={"number": "0751234567"}))
    assert card["status"] == "unknown"
    assert _ok(await sato.get(f"/api/customers/{created['id']}"))["phones"] == []

    purged = await admin.post(
        f"/api/admin/purge/phone/{phone['id']}", json={"confirm": str(phone["id"])}
    )
    assert purged.status_code == 204, purged.text
    gone = await admin.post(f"/api/admin/restore/phone/{phone['id']}")
    assert gone.status_code == 404
    audit = _ok(await admin.get("/api/admin/audit", params={"customer_id": created["id"]}))
    assert [e["action"] for e in audit["entries"]][:2] == ["purge", "delete"]
