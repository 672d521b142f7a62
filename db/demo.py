"""Sample data: a believable 工務店 for ``callpop demo``, and bulk rows for the benchmark.

``seed_demo`` writes three staff, two dozen customers (a family sharing a
landline, a company switchboard with several contacts, a birthday today), their
transactions, notes and a few logged calls, dated relative to ``today`` so the
demo always looks current. ``seed_bulk`` writes ``n`` synthetic customers with
Core ``executemany`` inserts, fast enough for a million on SQLite.

Neither commits; the caller does. Japanese here is data, not UI text.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, func, select, text
from sqlalchemy.orm import Session

from db.models import Call, Customer, CustomerPhone, FamilyMember, Note, Staff, Transaction
from db.search import refresh_search
from db.staff import create_staff, hash_password

TOKYO = ZoneInfo("Asia/Tokyo")


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoAccount:
    login: str
    password: str
    name: str
    extension: str | None
    role: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoInfo:
    """What ``callpop demo`` prints: the login to use, and every account."""

    login: str
    password: str
    accounts: tuple[DemoAccount, ...]
    customers: int
    # The number whose pop the README shows (山田 太郎 様, 担当 佐藤 健 内線 203).
    showcase_number: str = "03-1234-5678"


# Demo passwords are fixed so the README and screenshots can name them; the demo
# listens on loopback only.
DEMO_ACCOUNTS = (
    DemoAccount(
        login="sato", password="sato-demo-203", name="佐藤 健", extension="203", role="staff"
    ),
    DemoAccount(
        login="suzuki", password="suzuki-demo-204", name="鈴木 美咲", extension="204", role="staff"
    ),
    DemoAccount(
        login="admin", password="admin-demo-201", name="高橋 誠", extension="201", role="admin"
    ),
)
_FURIGANA = {"sato": "さとう けん", "suzuki": "すずき みさき", "admin": "たかはし まこと"}


def _e164(national: str) -> str:
    """E.164 of a Japanese national number written with its trunk 0 ("03-1234-5678").

    The demo's numbers are all of this form; tests check each against
    ``lookup.numbers.normalise`` so the two cannot drift apart.
    """
    digits = "".join(ch for ch in national if ch.isdigit())
    assert digits.startswith("0"), national
    return "+81" + digits[1:]


@dataclass(frozen=True, slots=True)
class _Phone:
    raw: str
    label: str
    owner: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class _Person:
    key: str
    name: str
    furigana: str
    staff: str | None  # login of the assigned staff
    phones: tuple[_Phone, ...]
    company: str | None = None
    rank: str | None = None
    tags: tuple[str, ...] = ()
    preferences: str | None = None
    memo: str | None = None
    born: tuple[int, int, int] | None = None  # year, month, day
    honorific: str | None = "様"
    contact_hours: str | None = None
    follow_up_in: int | None = None  # the customer's next follow-up, days from today


# fmt: off
_PEOPLE: tuple[_Person, ...] = (
    _Person(key="yamada", name="山田 太郎", furigana="やまだ たろう", staff="sato", rank="A",
            tags=("リピーター", "紹介元"), preferences="お茶は緑茶。午前中は不在がち",
            memo="ご近所の方を何度も紹介してくださっている。駐車は家の前に一台分あり。",
            phones=(_Phone("03-1234-5678", "自宅"), _Phone("090-1234-5678", "携帯")),
            born=(1956, 4, 3), contact_hours="平日 13-18時"),
    _Person(key="tanaka_ichiro", name="田中 一郎", furigana="たなか いちろう", staff="suzuki",
            rank="B", tags=("リピーター",), preferences="耳が少し遠いので、ゆっくり大きめの声で",
            phones=(_Phone("045-123-4567", "自宅"),), born=(1948, 11, 20)),
    _Person(key="tanaka_kazuko", name="田中 和子", furigana="たなか かずこ", staff="suzuki",
            rank="B", preferences="連絡は夕方17時以降が確実",
            phones=(_Phone("045-123-4567", "自宅"), _Phone("080-2345-6789", "携帯"))),
    _Person(key="kimura", name="木村 直樹", furigana="きむら なおき", staff="sato",
            company="株式会社 青葉不動産", rank="A", tags=("法人", "管理物件"),
            preferences="見積は PDF でメール送付希望",
            phones=(_Phone("03-5555-0100", "代表"), _Phone("090-3456-7890", "携帯"))),
    _Person(key="hayashi", name="林 由美", furigana="はやし ゆみ", staff="sato",
            company="株式会社 青葉不動産", rank="A", tags=("法人", "経理窓口"),
            preferences="請求書は月末締め・翌月20日払い",
            phones=(_Phone("03-5555-0100", "代表"),)),
    _Person(key="mori", name="森 拓也", furigana="もり たくや", staff="suzuki",
            company="株式会社 青葉不動産", rank="B", tags=("法人",),
            phones=(_Phone("03-5555-0100", "代表"), _Phone("070-1234-5678", "携帯"))),
    _Person(key="kobayashi", name="小林 さくら", furigana="こばやし さくら", staff="suzuki",
            rank="B", tags=("リフォーム検討中",), preferences="犬がいるのでインターホンは短めに",
            phones=(_Phone("090-2222-3333", "携帯"),), born=(1972, 0, 0)),  # born today
    _Person(key="ito", name="伊藤 修", furigana="いとう おさむ", staff="sato", rank="C",
            preferences="午前中は不在", phones=(_Phone("048-234-5678", "自宅"),)),
    _Person(key="watanabe", name="渡辺 恵子", furigana="わたなべ けいこ", staff="suzuki",
            rank="A", tags=("リピーター", "OB施主"), preferences="お茶よりコーヒー派",
            phones=(_Phone("03-3201-1234", "自宅"), _Phone("080-3333-4444", "携帯"))),
    _Person(key="nakamura", name="中村 大輔", furigana="なかむら だいすけ", staff="sato",
            company="中村歯科医院", rank="B", tags=("法人", "店舗"),
            preferences="診療時間中(9-18時)は受付経由で",
            phones=(_Phone("0467-12-3456", "医院"), _Phone("090-4444-5555", "携帯"))),
    _Person(key="kato", name="加藤 美和", furigana="かとう みわ", staff="suzuki", rank="C",
            tags=("新規",), phones=(_Phone("080-5555-6666", "携帯"),)),
    _Person(key="yoshida", name="吉田 茂", furigana="よしだ しげる", staff="sato", rank="B",
            tags=("町内会長",), preferences="話が長くなりがち。要件は先に確認",
            phones=(_Phone("03-3456-7890", "自宅"),), born=(1944, 8, 15)),
    _Person(key="yamaguchi", name="山口 奈々", furigana="やまぐち なな", staff="suzuki",
            rank="C", phones=(_Phone("070-2345-6789", "携帯"),)),
    _Person(key="matsumoto", name="松本 和也", furigana="まつもと かずや", staff="sato",
            company="有限会社 松本商店", rank="B", tags=("法人", "店舗"),
            phones=(_Phone("03-3987-6543", "店舗"),)),
    _Person(key="inoue", name="井上 真理子", furigana="いのうえ まりこ", staff="suzuki",
            rank="A", tags=("OB施主",), preferences="お茶は緑茶(ぬるめ)",
            phones=(_Phone("044-333-2211", "自宅"), _Phone("090-6666-7777", "携帯"))),
    _Person(key="kimura_h", name="木村 浩", furigana="きむら ひろし", staff="sato", rank="C",
            memo="木村 直樹様(青葉不動産)とは別人",
            phones=(_Phone("042-321-4567", "自宅"),)),
    _Person(key="shimizu", name="清水 健太", furigana="しみず けんた", staff=None, rank="C",
            tags=("問い合わせのみ",), phones=(_Phone("080-7777-8888", "携帯"),)),
    _Person(key="yamazaki", name="山崎 陽子", furigana="やまざき ようこ", staff="suzuki",
            rank="B", preferences="メールよりお電話希望",
            phones=(_Phone("03-3777-1234", "自宅"),)),
    _Person(key="ikeda", name="池田 剛", furigana="いけだ つよし", staff="sato",
            company="池田建築設計事務所", rank="A", tags=("法人", "協力会社"),
            phones=(_Phone("03-6222-3344", "事務所"), _Phone("090-8888-9999", "携帯"))),
    _Person(key="hashimoto", name="橋本 明美", furigana="はしもと あけみ", staff="suzuki",
            rank="B", phones=(_Phone("047-345-6789", "自宅"),), born=(1965, 2, 14)),
    _Person(key="ishikawa", name="石川 誠一", furigana="いしかわ せいいち", staff="sato",
            rank="C", preferences="補聴器使用。FAX 併用可",
            phones=(_Phone("0466-22-1133", "自宅"),)),
    _Person(key="ogawa", name="小川 智子", furigana="おがわ ともこ", staff="suzuki", rank="B",
            tags=("リフォーム検討中",), phones=(_Phone("080-1111-2222", "携帯"),),
            follow_up_in=0),  # 今日のフォロー: the customer's own date
    _Person(key="fujita", name="藤田 勇", furigana="ふじた いさむ", staff="sato", rank="B",
            tags=("リピーター",), phones=(_Phone("03-3300-5566", "自宅"),)),
    _Person(key="okada", name="岡田 里美", furigana="おかだ さとみ", staff="suzuki", rank="C",
            phones=(_Phone("090-5151-6262", "携帯"),)),
)

# (customer, days before today, title, amount in yen, staff)
_TRANSACTIONS: tuple[tuple[str, int, str, int, str], ...] = (
    ("yamada", 152, "雨漏り修繕", 58_000, "sato"),
    ("yamada", 1_130, "外壁塗装", 1_280_000, "sato"),
    ("yamada", 1_480, "給湯器交換", 264_000, "sato"),
    ("yamada", 2_210, "浴室リフォーム", 1_050_000, "sato"),
    ("tanaka_ichiro", 60, "手すり取付(介護保険)", 42_000, "suzuki"),
    ("tanaka_kazuko", 400, "給湯器交換", 231_000, "suzuki"),
    ("kimura", 20, "管理物件 原状回復(203号室)", 186_000, "sato"),
    ("kimura", 95, "管理物件 水栓交換", 24_000, "sato"),
    ("hayashi", 45, "管理物件 外壁塗装", 2_450_000, "sato"),
    ("kobayashi", 30, "キッチンリフォーム見積", 0, "suzuki"),
    ("watanabe", 210, "外壁塗装", 1_120_000, "suzuki"),
    ("watanabe", 800, "屋根葺き替え", 1_890_000, "suzuki"),
    ("nakamura", 75, "待合室 床張り替え", 380_000, "sato"),
    ("yoshida", 330, "雨樋修理", 36_000, "sato"),
    ("matsumoto", 120, "店舗 シャッター修理", 88_000, "sato"),
    ("inoue", 15, "給湯器交換", 248_000, "suzuki"),
    ("inoue", 900, "システムキッチン交換", 980_000, "suzuki"),
    ("ikeda", 10, "木工事 協力(世田谷 K 邸)", 650_000, "sato"),
    ("hashimoto", 500, "内窓設置", 142_000, "suzuki"),
    ("fujita", 240, "外壁塗装", 990_000, "sato"),
    ("fujita", 1_300, "雨漏り修繕", 72_000, "sato"),
)

# (customer, days before today, hour (JST), staff, body)
_NOTES: tuple[tuple[str, int, int, str, str], ...] = (
    ("yamada", 151, 15, "sato", "雨漏り修繕完了。2階北側の天井シミは乾燥後に再確認の約束。"),
    ("yamada", 120, 10, "sato", "天井シミ再確認。問題なし。次は外壁の再塗装時期(5年後)にご案内。"),
    ("yamada", 40, 14, "suzuki",
     "奥様より電話。玄関ドアの建て付けが悪いとのこと。佐藤さんに引き継ぎ。"),
    ("tanaka_ichiro", 61, 11, "suzuki", "手すり位置を現地で確認。トイレと廊下の2か所。"),
    ("tanaka_kazuko", 14, 17, "suzuki", "浴室の暖房乾燥機について相談。見積もり送付予定。"),
    ("kimura", 19, 9, "sato", "203号室の原状回復、来週月曜着工で合意。鍵は管理事務所で受け取り。"),
    ("hayashi", 44, 16, "sato", "外壁塗装の請求書を送付。支払いは翌月20日。"),
    ("mori", 7, 13, "suzuki", "新規管理物件(練馬)の点検依頼。日程調整中。"),
    ("kobayashi", 29, 10, "suzuki", "キッチン見積提出。食洗機ありプランを検討中とのこと。"),
    ("kobayashi", 3, 15, "suzuki", "ショールーム見学を希望。土曜午前で調整。"),
    ("watanabe", 209, 14, "suzuki", "外壁塗装完了。色はベージュ系で大変満足とのこと。"),
    ("nakamura", 74, 19, "sato", "床張り替えは休診日(木曜)に施工。"),
    ("yoshida", 200, 10, "sato", "町内会の集会所の修繕について相談あり。見積は不要、概算のみ。"),
    ("inoue", 14, 11, "suzuki", "給湯器交換完了。旧機器は引き取り済み。"),
    ("ikeda", 9, 18, "sato", "K 邸の造作家具、図面の修正版を受領。"),
    ("ishikawa", 365, 10, "sato", "玄関スロープの相談。補助金の案内をFAXで送付。"),
    ("ogawa", 50, 12, "suzuki", "外壁のひび割れ写真をメールで受領。点検の日程を提案中。"),
)

# Follow-ups on notes: (customer, the note's days before today) -> due, days from today
# (negative: overdue). 今日のフォロー shows them; 山田 様's pop opens with his.
_NOTE_FOLLOW_UPS: dict[tuple[str, int], int] = {
    ("yamada", 40): 0,
    ("tanaka_kazuko", 14): -2,
    ("kobayashi", 3): 5,
}

# Family members: (customer, name, furigana, relation, birth year, birthday in days from
# today). 山田 様's wife has her birthday this week: an opener on the showcase pop.
_FAMILY: tuple[tuple[str, str, str, str, int, int], ...] = (
    ("yamada", "山田 花子", "やまだ はなこ", "妻", 1958, 3),
    ("yamada", "山田 一郎", "やまだ いちろう", "長男", 1985, 200),
    ("tanaka_ichiro", "田中 和子", "たなか かずこ", "妻", 1950, 120),
)
# fmt: on

# Calls already in the log: (raw number as the PBX sent it, days before today, hour JST,
# outcome, answered_by). 090-9999-0000 is the README's "unknown number" example.
_CALLS: tuple[tuple[str, int, int, str, str | None], ...] = (
    ("0312345678", 40, 14, "answered_elsewhere", "204"),
    ("0312345678", 152, 9, "answered_elsewhere", "203"),
    ("09099990000", 12, 11, "abandoned", None),
    ("09099990000", 2, 16, "abandoned", None),
    ("0355550100", 7, 13, "answered_elsewhere", "204"),
)


def _at(today: dt.date, days_before: int, hour: int) -> dt.datetime:
    day = today - dt.timedelta(days=days_before)
    return dt.datetime(day.year, day.month, day.day, hour, 0, tzinfo=TOKYO)


def _birthday(born: tuple[int, int, int], today: dt.date) -> dt.date:
    year, month, day = born
    if (month, day) == (0, 0):  # "born today": same month and day as the demo's today
        if (today.month, today.day) == (2, 29):
            return dt.date(1972, 2, 29)  # a leap year, so the date exists
        return dt.date(year, today.month, today.day)
    return dt.date(year, month, day)


def _birthday_in(year: int, days: int, today: dt.date) -> dt.date:
    day = today + dt.timedelta(days=days)
    if (day.month, day.day) == (2, 29):
        year += (4 - year % 4) % 4  # a leap year, so the date exists
    return dt.date(year, day.month, day.day)


def seed_demo(session: Session, *, today: dt.date) -> DemoInfo:
    """Write the demo data set dated relative to ``today`` (JST); flushed, not committed."""
    staff: dict[str, Staff] = {}
    for account in DEMO_ACCOUNTS:
        staff[account.login] = create_staff(
            session,
            login=account.login,
            name=account.name,
            password=account.password,
            extension=account.extension,
            role="admin" if account.role == "admin" else "staff",
            furigana=_FURIGANA[account.login],
        )
    customers: dict[str, Customer] = {}
    for person in _PEOPLE:
        customer = Customer(
            name=person.name,
            furigana=person.furigana,
            company=person.company,
            rank=person.rank,
            tags=list(person.tags),
            preferences=person.preferences,
            memo=person.memo,
            birthday=_birthday(person.born, today) if person.born else None,
            honorific=person.honorific,
            contact_hours=person.contact_hours,
            next_follow_up_on=(
                today + dt.timedelta(days=person.follow_up_in)
                if person.follow_up_in is not None
                else None
            ),
            assigned_staff_id=staff[person.staff].id if person.staff else None,
        )
        session.add(customer)
        customers[person.key] = customer
    session.flush()
    for person in _PEOPLE:
        for phone in person.phones:
            session.add(
                CustomerPhone(
                    customer_id=customers[person.key].id,
                    e164=_e164(phone.raw),
                    label=phone.label,
                    owner_name=phone.owner,
                    raw=phone.raw,
                )
            )
    for key, days, title, amount, login in _TRANSACTIONS:
        session.add(
            Transaction(
                customer_id=customers[key].id,
                date=today - dt.timedelta(days=days),
                title=title,
                amount_yen=amount,
                staff_id=staff[login].id,
            )
        )
    for key, days, hour, login, body in _NOTES:
        at = _at(today, days, hour)
        due = _NOTE_FOLLOW_UPS.get((key, days))
        session.add(
            Note(
                customer_id=customers[key].id,
                staff_id=staff[login].id,
                body=body,
                follow_up_on=today + dt.timedelta(days=due) if due is not None else None,
                created_at=at,
                updated_at=at,
            )
        )
    for key, name, furigana, relation, year, days in _FAMILY:
        session.add(
            FamilyMember(
                customer_id=customers[key].id,
                name=name,
                furigana=furigana,
                relation=relation,
                birthday=_birthday_in(year, days, today),
            )
        )
    by_number = {_e164(p.raw): customers[person.key] for person in _PEOPLE for p in person.phones}
    for raw, days, hour, outcome, answered_by in _CALLS:
        started = _at(today, days, hour)
        e164 = _e164(raw)
        owner = by_number.get(e164)
        shared = sum(1 for person in _PEOPLE for p in person.phones if _e164(p.raw) == e164)
        session.add(
            Call(
                id=uuid.uuid4().hex,
                sip_call_id=f"{uuid.uuid4().hex}@demo.invalid",
                caller_e164=e164,
                caller_raw=raw,
                started_at=started,
                ended_at=started + dt.timedelta(seconds=25),
                state="ended",
                outcome=outcome,
                answered_by=answered_by,
                customer_id=owner.id if owner is not None and shared == 1 else None,
            )
        )
    session.flush()
    shown = DEMO_ACCOUNTS[0]
    return DemoInfo(
        login=shown.login,
        password=shown.password,
        accounts=DEMO_ACCOUNTS,
        customers=len(customers),
    )


# --- bulk rows for the benchmark ----------------------------------------------------

_SURNAMES = (
    "佐藤 鈴木 高橋 田中 伊藤 渡辺 山本 中村 小林 加藤 吉田 山田 佐々木 山口 松本 井上".split()
)
_GIVEN = "健 美咲 誠 陽子 大輔 恵子 翔太 さくら 修 真理子 拓也 由美 直樹 和子 浩 奈々".split()
# Their readings, in the same order: search-as-you-type finds people by these.
_SURNAME_KANA = (
    "さとう すずき たかはし たなか いとう わたなべ やまもと なかむら こばやし かとう よしだ"
    " やまだ ささき やまぐち まつもと いのうえ"
).split()
_GIVEN_KANA = (
    "けん みさき まこと ようこ だいすけ けいこ しょうた さくら おさむ まりこ たくや ゆみ"
    " なおき かずこ ひろし なな"
).split()
# One customer in seven is a company's contact.
_COMPANIES = ("株式会社 青葉不動産", "有限会社 松本商店", "中村歯科医院", "池田建築設計事務所")
_TITLES = ("雨漏り修繕", "外壁塗装", "給湯器交換", "内窓設置", "浴室リフォーム", "水栓交換")
_NOTE_BODIES = (
    "見積送付済み。",
    "点検日程を調整中。",
    "工事完了。次回点検は一年後。",
    "電話で近況確認。",
)
_CHUNK = 20_000
# Multipliers coprime to 10^8 turn the row index into a scattered but unique
# 8-digit subscriber number (an index order would make every lookup hit one page).
_MOBILE_STEP = 48_271
_LANDLINE_STEP = 69_621


def seed_bulk(session: Session, n: int, *, seed: int = 1) -> None:
    """Add ``n`` synthetic customers with phones, transactions and notes (not committed).

    Every customer has a furigana and a unique 090 mobile, one in seven a company; every
    third also a Tokyo landline, one in fifty of which is shared with the previous
    customer (a family). Numbers do not collide for ``n`` up to 10^8 within one ``seed``.
    The search columns are filled (``db.search.refresh_search``).

    Rows go straight to the driver's ``executemany``: SQLAlchemy's per-value bind
    processing costs more than SQLite's insert itself, and a million customers
    (about five million rows) should take minutes, not a quarter of an hour.
    """
    rng = random.Random(seed)
    connection = session.connection()
    writer = _BulkWriter(connection)
    now = dt.datetime.now(dt.UTC)
    stamp = writer.moment(now)
    password_hash = hash_password(f"bulk-{seed}-{rng.random()}")  # nobody logs in as these
    first_staff = (session.scalar(select(func.max(Staff.id))) or 0) + 1
    staff_ids = list(range(first_staff, first_staff + 8))
    writer.insert(
        "staff",
        "id login name extension role password_hash active created_at updated_at",
        [
            (
                sid,
                f"bulk{seed}-{sid}",
                f"{_SURNAMES[sid % len(_SURNAMES)]} 担当{sid}",
                str(300 + sid % 100),
                "staff",
                password_hash,
                True,
                stamp,
                stamp,
            )
            for sid in staff_ids
        ],
    )
    first = (session.scalar(select(func.max(Customer.id))) or 0) + 1
    offset = seed * 7_654_321
    today = now.astimezone(TOKYO).date()
    for start in range(0, n, _CHUNK):
        customers: list[tuple[Any, ...]] = []
        phones: list[tuple[Any, ...]] = []
        transactions: list[tuple[Any, ...]] = []
        notes: list[tuple[Any, ...]] = []
        landline = ""
        for i in range(start, min(n, start + _CHUNK)):
            cid = first + i
            surname, given = rng.randrange(len(_SURNAMES)), rng.randrange(len(_GIVEN))
            name = f"{_SURNAMES[surname]} {_GIVEN[given]}"
            furigana = f"{_SURNAME_KANA[surname]} {_GIVEN_KANA[given]}"
            company = _COMPANIES[(i // 7) % len(_COMPANIES)] if i % 7 == 0 else None
            staff_id = staff_ids[i % len(staff_ids)]
            customers.append(
                (cid, name, furigana, company, "ABC"[i % 3], "[]", staff_id, stamp, stamp)
            )
            mobile = f"+8190{(i * _MOBILE_STEP + offset) % 10**8:08d}"
            phones.append((cid, mobile, "携帯", "0" + mobile[3:], stamp, stamp))
            if i % 3 == 0:
                if not (i % 150 == 0 and landline):  # else: the family's landline again
                    landline = f"+813{50_000_000 + (i * _LANDLINE_STEP + offset) % 20_000_000}"
                phones.append((cid, landline, "自宅", "0" + landline[3:], stamp, stamp))
            for _ in range(rng.randrange(4)):
                transactions.append(
                    (
                        cid,
                        writer.day(today - dt.timedelta(days=rng.randrange(3_000))),
                        _TITLES[rng.randrange(len(_TITLES))],
                        rng.randrange(10, 3_000) * 1_000,
                        staff_id,
                        stamp,
                        stamp,
                    )
                )
            for _ in range(rng.randrange(3)):
                at = writer.moment(now - dt.timedelta(minutes=rng.randrange(3_000 * 24 * 60)))
                body = _NOTE_BODIES[rng.randrange(len(_NOTE_BODIES))]
                notes.append((cid, staff_id, body, at, at))
        writer.insert(
            "customers",
            "id name furigana company rank tags assigned_staff_id created_at updated_at",
            customers,
        )
        writer.insert("customer_phones", "customer_id e164 label raw created_at updated_at", phones)
        writer.insert(
            "transactions",
            "customer_id date title amount_yen staff_id created_at updated_at",
            transactions,
        )
        writer.insert("notes", "customer_id staff_id body created_at updated_at", notes)
    # Core inserts pass by the ORM's hooks: fill the search columns here.
    refresh_search(connection)
    if connection.dialect.name == "postgresql":
        # Explicit ids leave PostgreSQL's serial sequences behind; the next ordinary
        # insert (create_staff, a customer typed in) would collide without this.
        for table in ("staff", "customers"):
            connection.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f" (SELECT max(id) FROM {table}))"
                )
            )


class _BulkWriter:
    """Driver-level ``executemany`` with values already in the driver's form.

    On SQLite that form is what :class:`db.models.UTCDateTime` and SQLAlchemy's
    ``Date`` store (naive UTC text, ISO dates); PostgreSQL's driver takes the
    Python objects as they are.
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._sqlite = connection.dialect.name == "sqlite"
        self._marker = "?" if connection.dialect.paramstyle == "qmark" else "%s"

    def moment(self, value: dt.datetime) -> Any:
        if not self._sqlite:
            return value
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")

    def day(self, value: dt.date) -> Any:
        return value.isoformat() if self._sqlite else value

    def insert(self, table: str, columns: str, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        names = columns.split()
        sql = (
            f"INSERT INTO {table} ({', '.join(names)}) "
            f"VALUES ({', '.join([self._marker] * len(names))})"
        )
        self._connection.exec_driver_sql(sql, rows)
