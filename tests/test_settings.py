"""Configuration enters once, from the environment, and bad values stop start-up."""

from __future__ import annotations

import pytest

from app.settings import Settings, SettingsError


def test_defaults_are_the_spec_limits_and_safe_for_development():
    s = Settings.from_env({})
    assert (s.env, s.max_sessions, s.session_timeout, s.max_history, s.max_context_bytes) == (
        "development",
        10,
        1800,
        1000,
        1024 * 1024,
    )
    assert s.auth_header == "Authorization"
    assert s.service_tokens == ()


def test_production_refuses_to_start_without_a_token_or_a_database():
    with pytest.raises(SettingsError, match="SERVICE_TOKEN"):
        Settings.from_env({"APP_ENV": "production", "MONGODB_URI": "mongodb://db"})
    with pytest.raises(SettingsError, match="MONGODB_URI"):
        Settings.from_env({"APP_ENV": "production", "SERVICE_TOKEN": "x" * 32})
    s = Settings.from_env({"APP_ENV": "production", "SERVICE_TOKEN": "x" * 32, "MONGODB_URI": "mongodb://db"})
    assert s.env == "production"


def test_production_refuses_short_tokens():
    with pytest.raises(SettingsError, match="16 characters"):
        Settings.from_env({"APP_ENV": "production", "SERVICE_TOKEN": "short", "MONGODB_URI": "mongodb://db"})


def test_a_bad_value_is_refused_with_the_variable_named():
    with pytest.raises(SettingsError, match="MAX_SESSIONS"):
        Settings.from_env({"MAX_SESSIONS": "ten"})
    with pytest.raises(SettingsError, match="SESSION_TIMEOUT"):
        Settings.from_env({"SESSION_TIMEOUT": "0"})
    with pytest.raises(SettingsError, match="APP_ENV"):
        Settings.from_env({"APP_ENV": "staging"})
    with pytest.raises(SettingsError, match="MAX_HISTORY"):
        Settings.from_env({"MAX_HISTORY": "5000"})


def test_service_tokens_are_comma_separated_for_rotation():
    assert Settings.from_env({"SERVICE_TOKEN": " a , b,,"}).service_tokens == ("a", "b")


def test_operating_settings_are_checked_at_start_up(tmp_path):
    with pytest.raises(SettingsError, match="LOG_FORMAT"):
        Settings.from_env({"LOG_FORMAT": "xml"})
    with pytest.raises(SettingsError, match="PROMETHEUS_MULTIPROC_DIR"):
        Settings.from_env({"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "missing")})
    production = {"APP_ENV": "production", "SERVICE_TOKEN": "x" * 32, "MONGODB_URI": "mongodb://db"}
    with pytest.raises(SettingsError, match="METRICS_TOKEN"):
        Settings.from_env({**production, "METRICS_TOKEN": "short"})
    with pytest.raises(SettingsError, match="LOG_HASH_KEY"):
        Settings.from_env({**production, "LOG_HASH_KEY": "short"})
    s = Settings.from_env({"LOG_FORMAT": "JSON", "METRICS_TOKEN": " m ", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    assert (s.log_format, s.metrics_token, s.metrics_dir) == ("json", "m", str(tmp_path))


def test_body_read_timeout_defaults_to_ten_seconds_and_must_be_positive():
    assert Settings.from_env({}).body_read_timeout == 10
    assert Settings.from_env({"BODY_READ_TIMEOUT": "3"}).body_read_timeout == 3
    with pytest.raises(SettingsError, match="BODY_READ_TIMEOUT"):
        Settings.from_env({"BODY_READ_TIMEOUT": "0"})
