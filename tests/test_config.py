"""Config: YAML, environment overrides, secret files, and errors that name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.config import load_config
from gateway.core.errors import ConfigError
from gateway.park.alerts import TelegramTarget
from tests.conftest import ROOT

EXAMPLE = ROOT / "config" / "example.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL = """
data_dir: ./data
gateway: {id: gw-1, site: taman-a}
subscriptions:
  - {topic: "garden/+/+/telemetry", format: native}
"""


def test_example_config_is_valid_and_complete() -> None:
    cfg = load_config(EXAMPLE, env={}).config
    assert cfg.gateway.id == "gw-taman-bukit-pelangi"
    assert {s.format for s in cfg.subscriptions} == {
        "native", "collectd", "tasmota", "esphome", "influx", "json"}
    for i in range(len(cfg.subscriptions)):
        assert cfg.decoder_options(i) is not None
    assert cfg.mqtt.session_expiry_s > 0
    assert cfg.mqtt.tls is None
    assert cfg.influx.batch_size == 5000


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL), env={}).config
    with pytest.raises(ValueError, match="frozen"):
        cfg.mqtt.port = 1  # type: ignore[misc]
    assert cfg.data_dir == tmp_path / "data"


def test_every_bad_key_is_named_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, """
data_dir: /tmp/x
gateway: {id: "gw 1", site: taman-a}
mqtt: {port: 70000, prot: 5}
influx: {api: v3, batch_size: 0}
subscriptions:
  - {topic: "a/#", format: smoke-signals}
  - {topic: "b/#", format: json, options: {feilds: {a: b}}}
""")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    problems = "\n".join(err.value.problems)
    assert "gateway.id: String should match pattern" in problems
    assert "mqtt.port: Input should be less than or equal to 65535 (got 70000)" in problems
    assert "mqtt.prot: unknown key (did you mean 'port'?)" in problems
    assert "influx.api: Input should be 'v1' or 'v2'" in problems
    assert "influx.batch_size: Input should be greater than or equal to 1 (got 0)" in problems
    assert "subscriptions.0.format: unknown format 'smoke-signals'" in problems
    assert "subscriptions.1.options.feilds: unknown key" in problems
    assert len(err.value.problems) == 7


def test_environment_overrides_any_key(tmp_path: Path) -> None:
    env = {
        "GARDEN_GATEWAY_MQTT__PORT": "1884",
        "GARDEN_GATEWAY_INFLUX__URL": "http://10.1.2.3:8086",
        "GARDEN_GATEWAY_DATA_DIR": "/srv/gg",
        "GARDEN_GATEWAY_INGEST__ALLOW_DISCOVERY": "false",
        "GARDEN_GATEWAY_SUBSCRIPTIONS__0__TOPIC": "park/#",
        "GARDEN_GATEWAY_MQTT__PASSWORD": "from-env",
        "OTHER": "ignored",
    }
    cfg = load_config(write(tmp_path, MINIMAL), env=env).config
    assert cfg.mqtt.port == 1884
    assert cfg.influx.url == "http://10.1.2.3:8086"
    assert cfg.data_dir == Path("/srv/gg")
    assert cfg.ingest.allow_discovery is False
    assert cfg.subscriptions[0].topic == "park/#"
    assert cfg.mqtt.password is not None
    assert cfg.mqtt.password.get_secret_value() == "from-env"


def test_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, MINIMAL), env={"GARDEN_GATEWAY_MQTT__PORT": "abc",
                                                   "GARDEN_GATEWAY_MQTT__HOTS": "x"})
    problems = "\n".join(err.value.problems)
    assert "mqtt.port: Input should be a valid integer" in problems
    assert "[from environment variable GARDEN_GATEWAY_MQTT__PORT]" in problems
    assert "mqtt.hots: unknown key (did you mean 'host'?) " \
        "[from environment variable GARDEN_GATEWAY_MQTT__HOTS]" in problems


def test_secrets_from_files_and_warning_for_inline(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("tok-abc\n")
    raw = yaml.safe_load(MINIMAL)
    raw["influx"] = {"api": "v2", "org": "o", "bucket": "b", "token_file": "token"}
    raw["mqtt"] = {"username": "u", "password": "inline"}
    loaded = load_config(write(tmp_path, yaml.safe_dump(raw)), env={})
    assert loaded.config.influx.token is not None
    assert loaded.config.influx.token.get_secret_value() == "tok-abc"
    assert any("mqtt.password is written in the YAML" in w for w in loaded.warnings)
    # Secrets never appear in the repr (logs, tracebacks).
    assert "tok-abc" not in repr(loaded.config)
    assert "inline" not in repr(loaded.config)


def test_missing_secret_file_is_reported(tmp_path: Path) -> None:
    raw = yaml.safe_load(MINIMAL)
    raw["mqtt"] = {"username": "u", "password_file": "nope"}
    with pytest.raises(ConfigError, match=r"mqtt.password_file: cannot read .*nope"):
        load_config(write(tmp_path, yaml.safe_dump(raw)), env={})


def test_v2_requires_org_and_bucket(tmp_path: Path) -> None:
    raw = yaml.safe_load(MINIMAL)
    raw["influx"] = {"api": "v2"}
    with pytest.raises(ConfigError, match=r"influx: api v2 needs influx\.org and influx\.bucket"):
        load_config(write(tmp_path, yaml.safe_dump(raw)), env={})


def test_not_yaml_and_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "a: [1, 2"), env={})
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"), env={})


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


def test_check_config_cli_ok_and_exit_2(tmp_path: Path) -> None:
    ok = run_cli("check-config", "--config", str(EXAMPLE))
    assert ok.returncode == 0, ok.stderr
    assert "ok — gateway gw-taman-bukit-pelangi" in ok.stdout
    bad = write(tmp_path, "data_dir: /x\ngateway: {id: g, site: s}\nmqtt: {port: -1}\n")
    res = run_cli("check-config", "--config", str(bad))
    assert res.returncode == 2
    assert "mqtt.port: Input should be greater than or equal to 1 (got -1)" in res.stderr
    # Without --config: the installed path, and it says so when it is not there.
    if not Path("/etc/garden-gateway/config.yaml").exists():  # not on an installed gateway
        usage = run_cli("check-config")
        assert usage.returncode == 2
        assert "/etc/garden-gateway/config.yaml: cannot read" in usage.stderr


def test_telegram_bot_token_from_a_file_from_the_environment_or_warned_in_yaml(
    tmp_path: Path,
) -> None:
    (tmp_path / "token").write_text("123:ABC\n")
    base = yaml.safe_load(MINIMAL)
    target = {"kind": "telegram", "name": "tim", "chat_id": "-100123"}
    raw = {**base, "alerts": {"targets": [{**target, "bot_token_file": "token"}]}}
    loaded = load_config(write(tmp_path, yaml.safe_dump(raw)), env={})
    [tg] = loaded.config.alerts.targets
    assert isinstance(tg, TelegramTarget)
    assert tg.bot_token.get_secret_value() == "123:ABC"
    assert loaded.warnings == []

    raw = {**base, "alerts": {"targets": [{**target, "bot_token": "x"}]}}
    env = {"GARDEN_GATEWAY_ALERTS__TARGETS__0__BOT_TOKEN": "456:DEF"}
    loaded = load_config(write(tmp_path, yaml.safe_dump(raw)), env=env)
    [tg] = loaded.config.alerts.targets
    assert isinstance(tg, TelegramTarget)
    assert tg.bot_token.get_secret_value() == "456:DEF"
    assert any("alerts.targets.0.bot_token is written in the YAML" in w
               for w in loaded.warnings)

    raw = {**base, "alerts": {"targets": [{**target, "bot_token": "x",
                                           "bot_token_file": "token"}]}}
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, yaml.safe_dump(raw)), env={})
    assert any("bot_token: set both" in p for p in caught.value.problems)
    assert "123:ABC" not in str(caught.value.problems)


def test_operator_token_from_a_file_or_the_environment_and_never_too_short(
    tmp_path: Path,
) -> None:
    (tmp_path / "operator-token").write_text("0123456789abcdef0123\n")
    base = yaml.safe_load(MINIMAL)
    raw = {**base, "api": {"operator_token_file": "operator-token"}}
    loaded = load_config(write(tmp_path, yaml.safe_dump(raw)), env={})
    token = loaded.config.api.operator_token
    assert token is not None
    assert token.get_secret_value() == "0123456789abcdef0123"
    assert loaded.warnings == []

    env = {"GARDEN_GATEWAY_API__OPERATOR_TOKEN": "from-the-environment-0001"}
    loaded = load_config(write(tmp_path, yaml.safe_dump(base)), env=env)
    token = loaded.config.api.operator_token
    assert token is not None
    assert token.get_secret_value() == "from-the-environment-0001"

    raw = {**base, "api": {"operator_token": "short-secret"}}
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, yaml.safe_dump(raw)), env={})
    [problem] = caught.value.problems
    assert problem.startswith("api.operator_token:")
    assert "at least 16 characters" in problem
    assert "short-secret" not in problem


def test_pages_thresholds_must_rise_and_history_tiers_go_coarser(tmp_path: Path) -> None:
    base = yaml.safe_load(MINIMAL)
    raw = {**base,
           "pages": {"polder": {"device": "polder-1",
                                "thresholds": {"waspada": 2.0, "siaga": 1.5, "awas": 3}}},
           "history": {"tiers": [{"step_s": 900, "keep_s": 86400},
                                 {"step_s": 60, "keep_s": 3600}]}}
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, yaml.safe_dump(raw)), env={})
    problems = caught.value.problems
    # The old key (read as polder.0) is named as the technician wrote it.
    assert any(p.startswith("pages.polder.thresholds:") and "waspada < siaga < awas" in p
               for p in problems), problems
    assert any(p.startswith("history.tiers:") or p.startswith("history:") for p in problems), \
        problems


def test_the_old_pages_polder_still_loads_as_the_one_polder_with_a_warning(
        tmp_path: Path) -> None:
    raw = {**yaml.safe_load(MINIMAL),
           "pages": {"name": "Taman", "polder": {
               "device": "polder-1", "field": "level_m", "unit": "m",
               "thresholds": {"waspada": 0.9, "siaga": 1.1, "awas": 1.3}}}}
    loaded = load_config(write(tmp_path, yaml.safe_dump(raw)), env={})
    (polder,) = loaded.config.polder
    assert (polder.device, polder.field, polder.thresholds.siaga) == ("polder-1", "level_m", 1.1)
    assert polder.amount("hysteresis") == pytest.approx(0.03)  # 3 cm, in metres
    assert [w for w in loaded.warnings if w.startswith("pages.polder is deprecated")]
    both = {**raw, "polder": [{"device": "polder-2", "thresholds": {
        "waspada": 100, "siaga": 150, "awas": 200}}]}
    loaded = load_config(write(tmp_path, yaml.safe_dump(both)), env={})
    assert [p.device for p in loaded.config.polder] == ["polder-2"]
    assert any("ignored" in w for w in loaded.warnings)


def test_a_polder_in_an_unknown_unit_must_give_its_amounts(tmp_path: Path) -> None:
    raw = {**yaml.safe_load(MINIMAL), "polder": [
        {"device": "polder-1", "field": "level_ft", "unit": "ft",
         "thresholds": {"waspada": 3, "siaga": 4, "awas": 5}}]}
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, yaml.safe_dump(raw)), env={})
    (problem,) = caught.value.problems
    assert problem.startswith("polder.0:")
    assert "hysteresis" in problem
    assert "noise" in problem
    raw["polder"][0].update(hysteresis=0.1, noise=0.1, max_rate_per_h=3, rise_alert_per_h=0.6)
    assert load_config(write(tmp_path, yaml.safe_dump(raw)), env={}).config.polder
