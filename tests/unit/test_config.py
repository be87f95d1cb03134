"""radiusd.config: defaults, strict keys, value checks, environment overrides, secret references."""

from __future__ import annotations

import os
import sys

import pytest

from radiusd.config import Config, ConfigError, SecretRef, config_path, load_config
from radiusd.plugins.ldap_users import LdapSection
from radiusd.plugins.push import PushSection
from radiusd.plugins.sms_otp import SmsSection

LDAP = '[ldap]\nurls = ["ldap://127.0.0.1"]\nbase_dn = "dc=example,dc=org"\n'
# Each plugin-owned section with a misspelt key, and the plugin that owns it.
MISSPELT = [
    ("sms", "sms_otp", '[sms]\ngatewy = "http"\n', "sms.gatewy"),
    ("push", "push", '[push]\nwebhook_ulr = "https://relay.example/"\n', "push.webhook_ulr"),
    ("ldap", "ldap_users", LDAP + 'bind_pasword = "x"\n', "ldap.bind_pasword"),
]


@pytest.fixture
def write(tmp_path):
    def write(text: str):
        path = tmp_path / "radiusd.toml"
        path.write_text(text)
        return str(path)
    return write


def refused(path: str, environ: dict | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ or {})
    message = str(caught.value)
    assert "\n" not in message, "a configuration error is one line for the operator"
    return message


def test_empty_file_loads_the_documented_defaults(write):
    path = write("")
    home = os.path.dirname(os.path.abspath(path))
    config = load_config(path, environ={})
    assert config.server.listen == ["0.0.0.0"]
    assert config.server.auth_port == 1812
    assert config.server.acct_port == 1813
    assert config.server.workers == 1
    assert config.server.dedupe_seconds == 10
    assert config.server.reject_delay_seconds == 1.0
    assert config.server.on_backend_error == "drop"
    assert config.server.max_pending_requests == 1000
    assert config.security.require_message_authenticator is True
    assert config.security.seed_key.file == f"{home}/var/seed.key"  # relative to the file's directory
    assert config.security.password_hash == "argon2id"
    assert config.database.url == f"sqlite:///{home}/var/radiusd.db"
    assert (config.api.listen, config.api.port, config.api.token_ttl_seconds) == ("127.0.0.1", 8080, 3600)
    assert (config.ops.listen, config.ops.port) == ("127.0.0.1", 9812)
    assert (config.lockout.max_failures, config.lockout.window_seconds, config.lockout.block_seconds,
            config.lockout.permanent) == (5, 600, 1800, False)
    assert config.mfa.required is True and config.mfa.mode == "challenge" and config.mfa.totp_window == 1
    assert config.sms.gateway == "file" and config.sms.max_per_window == 3
    assert config.nas == []
    assert "local_users" in config.plugins.order and config.plugins.disabled == []


def test_values_from_the_file_are_used(write):
    config = load_config(write('[server]\nauth_port = 11812\nlisten = ["127.0.0.1", "::1"]\n'
                               '[database]\nurl = "sqlite:////tmp/x.db"\n'), environ={})
    assert config.server.auth_port == 11812
    assert config.server.listen == ["127.0.0.1", "::1"]
    assert config.database.url == "sqlite:////tmp/x.db"


def test_unknown_key_in_a_section_is_refused_naming_the_key(write):
    message = refused(write("[server]\nauth_portt = 1812\n"))
    assert "unknown configuration key" in message
    assert "server.auth_portt" in message


def test_unknown_section_is_refused_naming_it(write):
    message = refused(write("[severs]\nauth_port = 1812\n"))
    assert "unknown configuration key" in message
    assert "severs" in message


def test_unknown_key_inside_a_nas_entry_is_refused(write):
    message = refused(write('[[nas]]\nname = "a"\naddress = "10.0.0.1"\nsecret = "s"\nsecrett = "x"\n'))
    assert "nas.0.secrett" in message


def test_non_numeric_port_is_refused(write):
    message = refused(write('[server]\nauth_port = "x"\n'))
    assert "invalid configuration value server.auth_port" in message


def test_out_of_range_port_is_refused(write):
    assert "server.auth_port" in refused(write("[server]\nauth_port = 70000\n"))


def test_on_backend_error_outside_drop_or_reject_is_refused(write):
    message = refused(write('[server]\non_backend_error = "maybe"\n'))
    assert "server.on_backend_error" in message
    assert "drop" in message and "reject" in message


def test_listen_address_that_is_not_an_ip_is_refused(write):
    assert "server.listen" in refused(write('[server]\nlisten = ["localhost"]\n'))


def test_missing_file_is_a_config_error(tmp_path):
    message = refused(str(tmp_path / "nope.toml"))
    assert "not found" in message


def test_invalid_toml_is_a_config_error(write):
    assert "not valid TOML" in refused(write("[server\nauth_port = 1\n"))


def test_environment_overrides_win_over_the_file(write):
    path = write('[server]\nauth_port = 1812\n[database]\nurl = "sqlite:///file.db"\n')
    config = load_config(path, environ={
        "RADIUSD_SERVER__AUTH_PORT": "1999",
        "RADIUSD_DATABASE__URL": "postgresql+psycopg://radiusd@127.0.0.1:5432/radiusd",
    })
    assert config.server.auth_port == 1999
    assert config.database.url == "postgresql+psycopg://radiusd@127.0.0.1:5432/radiusd"


def test_environment_override_of_a_key_absent_from_the_file(write):
    config = load_config(write(""), environ={"RADIUSD_SERVER__LISTEN": '["127.0.0.1"]',
                                             "RADIUSD_MFA__REQUIRED": "false"})
    assert config.server.listen == ["127.0.0.1"]
    assert config.mfa.required is False


def test_environment_can_reference_a_secret(write):
    config = load_config(write(""), environ={"RADIUSD_SECURITY__SEED_KEY": '{ file = "/run/secrets/seed" }'})
    assert config.security.seed_key.file == "/run/secrets/seed"


def test_unrelated_environment_variables_are_ignored(write):
    config = load_config(write(""), environ={"RADIUSD_CONFIG": "/elsewhere.toml", "HOME": "/root",
                                             "RADIUSD_TEST_STRICT": "1", "PATH": "/usr/bin"})
    assert config.server.auth_port == 1812


def test_environment_variable_naming_an_unknown_key_is_refused(write):
    message = refused(write(""), environ={"RADIUSD_SERVER__AUTH_PROT": "1999"})
    assert "unknown configuration key server.auth_prot" in message


def test_environment_variable_naming_an_unknown_section_is_refused(write):
    assert "nosuch" in refused(write(""), environ={"RADIUSD_NOSUCH__KEY": "1"})


def test_environment_variable_with_a_bad_value_is_refused(write):
    assert "server.auth_port" in refused(write(""), environ={"RADIUSD_SERVER__AUTH_PORT": "x"})


def test_environment_variable_without_a_key_is_refused(write):
    assert "RADIUSD_SERVER__" in refused(write(""), environ={"RADIUSD_SERVER__": "1"})


def test_environment_cannot_override_nas_entries(write):
    path = write('[[nas]]\nname = "a"\naddress = "10.0.0.1"\nsecret = "s"\n')
    refused(path, environ={"RADIUSD_NAS__NAME": "b"})


def test_config_path_prefers_explicit_then_environment_then_default(monkeypatch):
    monkeypatch.setenv("RADIUSD_CONFIG", "/from/env.toml")
    assert config_path("/explicit.toml") == "/explicit.toml"
    assert config_path(None) == "/from/env.toml"
    monkeypatch.delenv("RADIUSD_CONFIG")
    assert config_path(None) == "/etc/radiusd/radiusd.toml"


def test_inline_secret_reveals_its_value(write):
    config = load_config(write('[[nas]]\nname = "a"\naddress = "10.0.0.1"\nsecret = "inline-secret-123"\n'),
                         environ={})
    assert config.nas[0].secret.reveal() == "inline-secret-123"


def test_file_secret_is_read_on_reveal_without_trailing_newline(write, tmp_path):
    secret_file = tmp_path / "nas.secret"
    path = write(f'[[nas]]\nname = "a"\naddress = "10.0.0.1"\nsecret = {{ file = "{secret_file}" }}\n')
    config = load_config(path, environ={})  # the file need not exist until the secret is used
    secret_file.write_text("from-a-file-0123\n")
    assert config.nas[0].secret.reveal() == "from-a-file-0123"


def test_env_secret_is_read_on_reveal(write, monkeypatch):
    config = load_config(write('[[nas]]\nname = "a"\naddress = "10.0.0.1"\nsecret = { env = "NAS_A_SECRET" }\n'),
                         environ={})
    monkeypatch.setenv("NAS_A_SECRET", "from-the-environment")
    assert config.nas[0].secret.reveal() == "from-the-environment"


def test_missing_secret_file_is_a_config_error_on_reveal(tmp_path):
    with pytest.raises(ConfigError, match="cannot read secret file"):
        SecretRef(file=str(tmp_path / "absent")).reveal()


def test_missing_secret_environment_variable_is_a_config_error_on_reveal(monkeypatch):
    monkeypatch.delenv("RADIUSD_TEST_ABSENT_SECRET", raising=False)
    with pytest.raises(ConfigError, match="RADIUSD_TEST_ABSENT_SECRET is not set"):
        SecretRef(env="RADIUSD_TEST_ABSENT_SECRET").reveal()


def test_empty_secret_reference_is_a_config_error():
    with pytest.raises(ConfigError):
        SecretRef().reveal()


def test_secret_reference_with_an_unknown_key_is_refused(write):
    assert "security.seed_key.path" in refused(write('[security]\nseed_key = { path = "x" }\n'))


def test_inline_secret_never_shows_in_repr_or_str():
    reference = SecretRef(value="hunter2-inline-secret")
    for text in (repr(reference), str(reference), f"{reference}"):
        assert "hunter2" not in text
    config = Config.model_validate({"nas": [{"name": "a", "address": "10.0.0.1", "secret": "hunter2-nas"}],
                                    "security": {"seed_key": "hunter2-seed"}})
    for text in (repr(config), str(config), repr(config.nas[0]), str(config.security)):
        assert "hunter2" not in text


def test_invalid_nas_address_is_refused(write):
    message = refused(write('[[nas]]\nname = "a"\naddress = "10.0.0.300"\nsecret = "s"\n'))
    assert "nas.0.address" in message
    message = refused(write('[[nas]]\nname = "a"\naddress = "vpn.example.com"\nsecret = "s"\n'))
    assert "nas.0.address" in message


def test_nas_entry_accepts_ipv4_ipv6_and_cidr(write):
    config = load_config(write('[[nas]]\nname = "a"\naddress = "10.0.0.0/8"\nsecret = "s"\n'
                               '[[nas]]\nname = "b"\naddress = "2001:db8::/32"\nsecret = "s"\n'
                               '[[nas]]\nname = "c"\naddress = "192.0.2.7"\nsecret = "s"\n'), environ={})
    assert [nas.address for nas in config.nas] == ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]
    assert config.nas[0].coa_port == 3799


def test_nas_entry_without_a_secret_is_refused(write):
    assert "nas.0.secret" in refused(write('[[nas]]\nname = "a"\naddress = "10.0.0.1"\n'))


# -- the sections the built-in plugins declare --------------------------------------------------

def test_plugin_sections_are_the_classes_their_plugins_declare(write):
    config = load_config(write(LDAP), environ={})
    assert type(config.sms) is SmsSection and type(config.push) is PushSection
    assert type(config.ldap) is LdapSection
    assert config.push.webhook_url == "" and config.ldap.base_dn == "dc=example,dc=org"
    assert load_config(write(""), environ={}).ldap is None


@pytest.mark.parametrize(("section", "plugin", "text", "key"), MISSPELT, ids=[case[0] for case in MISSPELT])
def test_misspelt_key_in_a_plugin_section_is_refused_even_with_the_plugin_disabled(write, section, plugin,
                                                                                      text, key):
    assert f"unknown configuration key {key}" in refused(write(text))
    disabled = f'[plugins]\ndisabled = ["{plugin}"]\n'
    assert f"unknown configuration key {key}" in refused(write(disabled + text))


def test_bad_value_in_a_plugin_section_names_the_key(write):
    assert "invalid configuration value sms.max_per_window" in refused(write("[sms]\nmax_per_window = 0\n"))
    assert "invalid configuration value ldap.urls: " in refused(
        write('[ldap]\nurls = ["http://dir"]\nbase_dn = "dc=x"\n'))


def test_environment_overrides_keys_of_plugin_sections(write, tmp_path):
    config = load_config(write(LDAP), environ={
        "RADIUSD_SMS__MAX_PER_WINDOW": "7",
        "RADIUSD_PUSH__WEBHOOK_URL": "https://relay.example/wake",
        "RADIUSD_LDAP__BASE_DN": "dc=override,dc=org",
        "RADIUSD_LDAP__BIND_DN": "cn=radiusd,dc=override,dc=org",
        "RADIUSD_LDAP__BIND_PASSWORD": '{ env = "LDAP_BIND_PASSWORD" }',
    })
    assert config.sms.max_per_window == 7 and config.sms.gateway == "file"
    assert config.push.webhook_url == "https://relay.example/wake"
    assert config.ldap.base_dn == "dc=override,dc=org" and config.ldap.urls == ["ldap://127.0.0.1"]
    assert config.ldap.bind_password.env == "LDAP_BIND_PASSWORD"


def test_environment_variable_misspelling_a_plugin_section_key_is_refused(write):
    message = refused(write(""), environ={"RADIUSD_PUSH__WEBHOOK_ULR": "https://relay.example/"})
    assert "unknown configuration key push.webhook_ulr" in message


def test_plugin_section_secrets_are_references_read_on_use(write, tmp_path, monkeypatch):
    token = tmp_path / "gateway.token"
    config = load_config(write('[sms.headers]\nAuthorization = { file = "%s" }\nX-Inline = "hunter2-sms"\n'
                               '[push.webhook_headers]\nAuthorization = { env = "PUSH_RELAY_TOKEN" }\n' % token),
                         environ={})
    token.write_text("Bearer from-a-file\n")
    monkeypatch.setenv("PUSH_RELAY_TOKEN", "Bearer from-the-environment")
    assert config.sms.headers["Authorization"].reveal() == "Bearer from-a-file"
    assert config.push.webhook_headers["Authorization"].reveal() == "Bearer from-the-environment"
    assert config.sms.headers["X-Inline"].reveal() == "hunter2-sms"
    assert "hunter2" not in repr(config) and "hunter2" not in str(config.sms)


def test_a_postgresql_url_without_psycopg_installed_says_to_install_the_extra(monkeypatch, write):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what an install without radiusd[postgresql] has
    message = refused(write('[database]\nurl = "postgresql+psycopg://radiusd@127.0.0.1/radiusd"\n'))
    assert message.endswith("invalid configuration value database.url: PostgreSQL needs psycopg, "
                                       "which is not installed: pip install 'radiusd[postgresql]'")


def test_a_secret_file_that_is_not_text_is_one_line_not_a_decode_error(tmp_path):
    path = tmp_path / "secret"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match=f"secret file {path} is not UTF-8 text"):
        SecretRef(file=str(path)).reveal()


def test_relative_paths_are_relative_to_the_configuration_files_directory(tmp_path, monkeypatch):
    home = tmp_path / "etc" / "radiusd"
    home.mkdir(parents=True)
    (home / "radiusd.toml").write_text(
        '[database]\nurl = "sqlite:///var/radiusd.db?timeout=5"\n'
        '[sms]\nspool_path = "spool/sms"\n'
        '[[nas]]\nname = "a"\naddress = "10.0.0.1"\nsecret = { file = "../secrets/nas-a" }\n')
    monkeypatch.chdir(tmp_path)
    config = load_config(str(home / "radiusd.toml"), environ={})
    assert config.database.url == f"sqlite:///{home}/var/radiusd.db?timeout=5"
    assert config.security.seed_key.file == f"{home}/var/seed.key"  # the default too
    assert config.sms.spool_path == f"{home}/spool/sms"
    assert config.nas[0].secret.file == f"{tmp_path}/etc/secrets/nas-a"

    absolute = load_config(str(home / "radiusd.toml"), environ={"RADIUSD_DATABASE__URL": "sqlite:////srv/r.db"})
    assert absolute.database.url == "sqlite:////srv/r.db"
    assert Config().database.url == "sqlite:///var/radiusd.db"  # no file: as given
