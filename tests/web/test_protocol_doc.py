"""docs/protocol.md against the models: every example validates, every field is shown.

Each JSON example in the page follows a ``<!-- model: NAME -->`` marker. Validation is
strict (the models forbid unknown fields and require the ones without a default), so an
example that names a field the code no longer has, or leaves out one it has, fails; and
every field of every wire model must appear in some example.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter

from lookup import card
from popup_ui import messages, schemas

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
EXAMPLE = re.compile(r"<!-- model: (\w+) -->\s*```json\n(.*?)```", re.DOTALL)
ADAPTERS: dict[str, TypeAdapter[Any]] = {
    "BoardMessage": messages.board_message,
    "StaffOut": TypeAdapter(schemas.StaffOut),
    "StaffList": TypeAdapter(schemas.StaffList),
    "Health": TypeAdapter(schemas.Health),
    "CustomerOut": TypeAdapter(schemas.CustomerOut),
    "NoteIn": TypeAdapter(schemas.NoteIn),
    "NoteOut": TypeAdapter(schemas.NoteOut),
    "NoteCorrectionIn": TypeAdapter(schemas.NoteCorrectionIn),
    "NoteRevisionsOut": TypeAdapter(schemas.NoteRevisionsOut),
    "CallPage": TypeAdapter(schemas.CallPage),
    "MissedList": TypeAdapter(schemas.MissedList),
    "MissedResolveIn": TypeAdapter(schemas.MissedResolveIn),
    "MissedResolved": TypeAdapter(schemas.MissedResolved),
    "StaffAccountOut": TypeAdapter(schemas.StaffAccountOut),
    "StaffAccountList": TypeAdapter(schemas.StaffAccountList),
    "StaffCreateIn": TypeAdapter(schemas.StaffCreateIn),
    "StaffUpdateIn": TypeAdapter(schemas.StaffUpdateIn),
    "PasswordChangeIn": TypeAdapter(schemas.PasswordChangeIn),
}


def _without_comments(text: str) -> str:
    # "// ..." to the end of the line, outside strings (no example string holds "//").
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def _examples() -> list[tuple[str, Any]]:
    found = EXAMPLE.findall(DOC.read_text(encoding="utf-8"))
    return [(name, json.loads(_without_comments(body))) for name, body in found]


def _models() -> list[type[BaseModel]]:
    wire = [
        value
        for module in (messages, card, schemas)
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, BaseModel)
        and value.__module__ in (module.__name__,)
        and not value.__name__.startswith("_")
    ]
    return [m for m in wire if m not in {schemas.SessionOut, schemas.UiOut}]


@pytest.mark.parametrize(("name", "example"), _examples(), ids=lambda v: str(v)[:40])
def test_every_example_validates_against_its_model(name: str, example: Any) -> None:
    ADAPTERS[name].validate_python(example, strict=False)


def test_every_message_type_has_an_example() -> None:
    shown = {example["type"] for name, example in _examples() if name == "BoardMessage"}
    assert shown == {
        "board.snapshot",
        "call.ringing",
        "call.updated",
        "call.answered",
        "call.ended",
        "staff.presence",
        "call.which",
    }


def test_every_field_of_the_wire_models_appears_in_the_page() -> None:
    text = DOC.read_text(encoding="utf-8")
    missing = [
        f"{model.__name__}.{field}"
        for model in _models()
        for field in model.model_fields
        if f'"{field}"' not in text
    ]
    assert missing == []
