"""make install hands uv the settings pip itself would use, or leaves the install to pip."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tools.install_venv import pip_settings, uv_arguments


def test_pip_settings_are_read_from_its_config_and_environment_the_later_winning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "pip.conf"
    config.write_text(
        "[global]\nindex-url = https://mirror.example/simple\nfind-links = /wheels\n"
        "[install]\nconstraint = /c.txt\n"
    )
    for name in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_CONSTRAINT", "PIP_EXTRA_INDEX_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    monkeypatch.setenv("PIP_FIND_LINKS", "/other-wheels")
    settings = pip_settings([sys.executable, "-m", "pip"])
    assert settings["index-url"] == "https://mirror.example/simple"
    assert settings["constraint"] == "/c.txt"
    assert settings["find-links"] == "/other-wheels"


def test_each_pip_setting_becomes_its_uv_flag_and_unknown_ones_are_named() -> None:
    flags, env, unmapped = uv_arguments(
        {
            "index-url": "https://a/simple",
            "extra-index-url": "file:///b file:///c",
            "find-links": "/wheels",
            "constraint": "/c.txt",
            "cert": "/ca.pem",
            "default-timeout": "180",
            "disable-pip-version-check": "1",
            "only-binary": ":all:",
        }
    )
    assert flags == [
        "--index-strategy", "unsafe-best-match",  # pip: the best version over all indexes
        "--compile-bytecode",  # pip writes the .pyc files at install
        "--index-url", "https://a/simple",
        "--extra-index-url", "file:///b", "--extra-index-url", "file:///c",
        "--find-links", "/wheels",
        "--constraint", "/c.txt",
    ]  # fmt: skip
    assert env == {"SSL_CERT_FILE": "/ca.pem", "UV_HTTP_TIMEOUT": "180"}
    assert unmapped == ["only-binary=:all:"]  # -> the install falls back to pip
