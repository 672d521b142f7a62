"""Settings: the TOML file, environment overrides, and config.example.toml kept complete."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from callpop.settings import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.toml"


def _keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= _keys(annotation, f"{prefix}{name}.")
        else:
            keys.add(prefix + name)
    return keys


def _example_keys(text: str) -> set[str]:
    """Keys in the example, counting commented-out `[[section.list]]` examples too."""
    data = tomllib.loads(text)
    keys = {f"{section}.{key}" for section, table in data.items() for key in table}
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# [[") and stripped.endswith("]]"):
            keys.add(stripped[4:-2])
    return keys


def test_example_config_documents_every_key() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert _keys(Settings) <= _example_keys(text)
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if "=" in line and not line.startswith(("#", "[")):
            assert lines[number - 1].startswith("#"), f"key without a comment: {line!r}"


def test_example_config_loads() -> None:
    settings = load_settings(EXAMPLE)
    assert settings.sip.mode == "register"
    assert settings.numbering.region == "JP"


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "callpop.toml"
    config.write_text('[sip]\nmode = "trunk"\nbind_port = 5070\n', encoding="utf-8")
    monkeypatch.setenv("CALLPOP_SIP__BIND_PORT", "5099")
    settings = load_settings(config)
    assert settings.sip.mode == "trunk"
    assert settings.sip.bind_port == 5099


def test_bad_value_names_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[sip]\nmode = "pbx"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.toml: sip\.mode"):
        load_settings(config)


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "typo.toml"
    config.write_text('[sip]\nregistar_host = "10.0.0.1"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="sip.registar_host"):
        load_settings(config)


def test_broken_toml_and_missing_file(tmp_path: Path) -> None:
    config = tmp_path / "broken.toml"
    config.write_text("[sip\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="broken.toml"):
        load_settings(config)
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.toml")


def test_routed_lines_load_and_a_bad_deadline_names_its_key(tmp_path: Path) -> None:
    config = tmp_path / "routing.toml"
    config.write_text(
        '[routing]\ndecision_deadline = 0.3\n[[routing.lines]]\nline = "03-3555-0100"\n'
        'ring_group = "600"\n',
        encoding="utf-8",
    )
    settings = load_settings(config)
    assert settings.routing.decision_deadline == 0.3
    [line] = settings.routing.lines
    assert (line.line, line.ring_group) == ("03-3555-0100", "600")
    assert load_settings(EXAMPLE).routing.lines == []  # opt-in: off unless configured
    config.write_text("[routing]\ndecision_deadline = 0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="routing.decision_deadline"):
        load_settings(config)


def test_backup_section_defaults_and_a_bad_time_names_its_key(tmp_path: Path) -> None:
    example = load_settings(EXAMPLE).backup
    assert (example.dir, example.daily_at, example.keep) == ("", "03:00", 7)  # off by default
    config = tmp_path / "backup.toml"
    config.write_text('[backup]\ndir = "b"\ndaily_at = "23:30"\nkeep = 30\n', encoding="utf-8")
    assert load_settings(config).backup.keep == 30
    config.write_text('[backup]\ndaily_at = "3:00"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="backup.daily_at"):
        load_settings(config)
    config.write_text("[backup]\nkeep = 0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="backup.keep"):
        load_settings(config)
