"""SoftOTP enrolments and remote configuration through the API."""

from __future__ import annotations
from tests.support import assert_problem, enrolled_user, step_start, totp_of



def test_enroll_verify_list_and_delete(admin_api):
    assert admin_api.post("/api/v1/users", {"username": "olga"}).status == 201
    reply = admin_api.post("/api/v1/softotp/olga/enroll")
    assert reply.status == 201
    enrolment = reply.json()
    assert set(enrolment) == {"username", "otpauth_uri", "qr_svg", "activation_code", "expires_at"}
    assert enrolment["otpauth_uri"].startswith("otpauth://totp/") and enrolment["qr_svg"].startswith("data:image/svg")
    totp = totp_of(enrolment)
    seed = totp.secret

    listed = {item["username"]: item for item in admin_api.all_pages("/api/v1/softotp", 500)}
    assert listed["olga"]["verified"] is False and listed["olga"]["config_version"] == 1
    assert listed["olga"]["applied_version"] is None and listed["olga"]["last_sync_at"] is None
    assert listed["olga"]["pin_required"] is False and listed["olga"]["biometric_required"] is False

    now = step_start()
    wrong = admin_api.post("/api/v1/softotp/olga/verify", {"otp": "000000" if totp.at(now) != "000000" else "111111"})
    assert wrong.json() == {"username": "olga", "valid": False, "verified": False}
    assert admin_api.post("/api/v1/softotp/olga/verify", {"otp": "12ab56"}).json()["valid"] is False
    right = admin_api.post("/api/v1/softotp/olga/verify", {"otp": totp.at(now)})
    assert right.json() == {"username": "olga", "valid": True, "verified": True}
    replay = admin_api.post("/api/v1/softotp/olga/verify", {"otp": totp.at(now)})
    assert replay.json() == {"username": "olga", "valid": False, "verified": True}
    assert_problem(admin_api.post("/api/v1/softotp/olga/enroll"), 409, "conflict")

    listing = admin_api.get("/api/v1/softotp", query={"limit": 500})
    assert seed.encode() not in listing.raw and b"otpauth" not in listing.raw
    assert enrolment["activation_code"].encode() not in listing.raw

    assert admin_api.delete("/api/v1/softotp/olga").status == 204
    assert_problem(admin_api.delete("/api/v1/softotp/olga"), 404, "not_found")
    assert_problem(admin_api.post("/api/v1/softotp/olga/verify", {"otp": "123456"}), 404, "not_found")
    assert_problem(admin_api.post("/api/v1/softotp/nobody/enroll"), 404, "not_found")
    assert_problem(admin_api.post("/api/v1/softotp/olga/verify", {"otp": 123456}), 422, "invalid")


def test_remote_config_per_user_bumps_the_version_on_change_only(admin_api):
    enrolled_user(admin_api, "rc-one", password=None)
    reply = admin_api.put("/api/v1/softotp/rc-one/remote-config", {"pin_required": True, "biometric_required": False})
    assert reply.status == 200
    entry = reply.json()
    assert entry["pin_required"] is True and entry["biometric_required"] is False and entry["config_version"] == 2
    same = admin_api.put("/api/v1/softotp/rc-one/remote-config", {"pin_required": True, "biometric_required": False})
    assert same.json()["config_version"] == 2
    both = admin_api.put("/api/v1/softotp/rc-one/remote-config", {"pin_required": False, "biometric_required": True})
    assert both.json()["config_version"] == 3
    assert_problem(admin_api.put("/api/v1/softotp/rc-one/remote-config", {"pin_required": True}), 422, "invalid")
    assert_problem(admin_api.put("/api/v1/softotp/rc-one/remote-config",
                                 {"pin_required": True, "biometric_required": True, "config_version": 9}),
                   422, "unknown_field")
    assert admin_api.post("/api/v1/users", {"username": "rc-none"}).status == 201
    assert_problem(admin_api.put("/api/v1/softotp/rc-none/remote-config",
                                 {"pin_required": True, "biometric_required": True}), 404, "not_found")


def test_bulk_remote_config_is_all_or_nothing(admin_api):
    for name in ("bulk-a", "bulk-b"):
        enrolled_user(admin_api, name, password=None)
    admin_api.put("/api/v1/softotp/bulk-b/remote-config", {"pin_required": True, "biometric_required": False})
    reply = admin_api.post("/api/v1/softotp/remote-config", {"usernames": ["bulk-a", "bulk-b"], "pin_required": True})
    assert reply.status == 200
    items = {item["username"]: item for item in reply.json()["items"]}
    assert items["bulk-a"]["pin_required"] is True and items["bulk-a"]["config_version"] == 2
    assert items["bulk-b"]["config_version"] == 2  # already pin_required: no change, no bump
    assert items["bulk-a"]["biometric_required"] is False  # not named: left alone

    missing = admin_api.post("/api/v1/softotp/remote-config",
                             {"usernames": ["bulk-a", "ghost"], "biometric_required": True})
    assert_problem(missing, 404, "not_found")
    after = {item["username"]: item for item in admin_api.all_pages("/api/v1/softotp", 500)}
    assert after["bulk-a"]["biometric_required"] is False  # nothing changed
    assert_problem(admin_api.post("/api/v1/softotp/remote-config", {"usernames": ["bulk-a"]}), 422, "invalid")
    assert_problem(admin_api.post("/api/v1/softotp/remote-config", {"usernames": []}), 422, "invalid")


def test_softotp_list_paginates(admin_api):
    for index in range(7):
        name = f"sp-{index}"
        assert admin_api.post("/api/v1/users", {"username": name}).status == 201
        assert admin_api.post(f"/api/v1/softotp/{name}/enroll").status == 201
    names = [item["username"] for item in admin_api.all_pages("/api/v1/softotp", 3)]
    assert [name for name in names if name.startswith("sp-")] == [f"sp-{index}" for index in range(7)]
    assert len(names) == len(set(names))
