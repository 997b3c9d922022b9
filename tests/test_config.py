"""Configuration: defaults without a file, clear errors naming the key, env overrides."""

import pytest

from leadflow import config as config_module
from leadflow.errors import ConfigError


def test_defaults_without_a_file(tmp_path, monkeypatch):
    """With no file and no environment, leadflow runs on SQLite in the working folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LEADFLOW_CONFIG", raising=False)
    monkeypatch.delenv("LEADFLOW_DATABASE_URL", raising=False)
    cfg = config_module.load()
    assert cfg.database.url == "sqlite:///leadflow.db"
    assert (cfg.smtp.host, cfg.smtp.port, cfg.http.port) == ("127.0.0.1", 8025, 8080)
    assert cfg.intake.default_region == "NL" and cfg.source is None


@pytest.mark.parametrize("toml, key, words", [
    ("[intake]\ndefault_regoin = 'NL'\n", "intake.default_regoin", "unknown key"),
    ("[nonsense]\nx = 1\n", "nonsense", "unknown key"),
    ("[smtp]\nport = 'twenty-five'\n", "smtp.port", "whole number"),
    ("[smtp]\nport = 70000\n", "smtp.port", "0 to 65535"),
    ("[intake]\ndefault_region = 'XX'\n", "intake.default_region", "region code"),
    ("[intake]\ninternal_domains = 'ourco.example'\n", "intake.internal_domains", "list"),
    ("[intake]\ninternal_domains = ['not a domain']\n", "intake.internal_domains", "domain"),
    ("[database]\nurl = 'mysql://x'\n", "database.url", "sqlite:///"),
    ("[notify.relay]\nsecurity = 'ssl'\n", "notify.relay.security", "'starttls'"),
    ("[notify]\ntimezone = 'Mars/Base'\n", "notify.timezone", "IANA"),
    ("[smtp\n", "(file)", "not valid TOML"),
])
def test_bad_values_name_the_key(tmp_path, toml, key, words):
    """A bad file stops with one message naming the key and what is allowed."""
    path = tmp_path / "leadflow.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        config_module.load(str(path), environ={})
    assert info.value.key == key
    assert words in str(info.value) and str(path) in str(info.value)


def test_explicit_missing_file_is_an_error(tmp_path):
    """--config naming a file that does not exist is an error, not a silent default."""
    with pytest.raises(ConfigError, match="does not exist"):
        config_module.load(str(tmp_path / "nope.toml"), environ={})


def test_environment_chooses_file_and_database(tmp_path):
    """LEADFLOW_CONFIG picks the file; LEADFLOW_DATABASE_URL overrides database.url."""
    path = tmp_path / "other.toml"
    path.write_text("[database]\nurl = 'sqlite:///a.db'\n[intake]\ninternal_domains = ['ourco.example']\n")
    cfg = config_module.load(environ={"LEADFLOW_CONFIG": str(path),
                                      "LEADFLOW_DATABASE_URL": "postgresql://u:pw@db/leads"})
    assert cfg.database.url == "postgresql://u:pw@db/leads"
    assert cfg.intake.internal_domains == ["ourco.example"]
    with pytest.raises(ConfigError, match="LEADFLOW_DATABASE_URL"):
        config_module.load(environ={"LEADFLOW_DATABASE_URL": "oracle://x"})


def test_secrets_are_masked():
    """config show never prints a database password or a signing secret."""
    cfg = config_module.parse({"database": {"url": "postgresql://leads:s3cret@db.internal/leads"},
                               "forms": {"contact": {"preset": "plain", "secret": "abc123"}}})
    shown = config_module.as_dict(cfg)
    assert "s3cret" not in str(shown) and "abc123" not in str(shown)
    assert shown["database"]["url"] == "postgresql://leads:********@db.internal/leads"


def test_starter_file_parses_to_the_defaults(tmp_path):
    """The file `leadflow init` writes is valid and equal to the defaults."""
    path = tmp_path / "leadflow.toml"
    path.write_text(config_module.starter_toml())
    loaded = config_module.load(str(path), environ={})
    assert config_module.as_dict(loaded, mask_secrets=False) == \
        config_module.as_dict(config_module.parse({}), mask_secrets=False)
