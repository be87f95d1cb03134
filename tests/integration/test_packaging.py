"""The package as pip builds it: what the wheel holds and what it depends on (issue 14)."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

from tests.support import BIN

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_ships_the_example_config_the_json_openapi_and_the_license_and_needs_no_psycopg_or_yaml(tmp_path):
    built = subprocess.run([str(BIN / "pip"), "wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp_path),
                            str(ROOT)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("radiusd-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(name for name in names if name.endswith(".dist-info/METADATA"))).decode()
        license_text = archive.read(next(name for name in names if name.endswith("/LICENSE"))).decode()
    assert {"radiusd/examples/radiusd.toml", "radiusd/admin_api/openapi.json"} <= names
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "License: Apache-2.0" in metadata
    base = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert not [line for line in base if "psycopg" in line.lower() or "yaml" in line.lower()], base
    assert 'Requires-Dist: psycopg[binary]>=3.1; extra == "postgresql"' in metadata
    assert 'Requires-Dist: psycopg[binary]>=3.1; extra == "test"' in metadata  # the tests still reach PostgreSQL


def test_license_file_is_the_apache_license_setup_cfg_names():
    assert "license = Apache-2.0" in (ROOT / "setup.cfg").read_text()
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n                           Version 2.0, January 2004")
    assert "END OF TERMS AND CONDITIONS" in text


def test_make_run_installs_the_package_without_the_test_extras():
    planned = subprocess.run(["make", "-n", "-B", "run"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    installs = [line for line in planned.stdout.splitlines() if " install " in line and "-e" in line]
    assert installs == [".venv/bin/pip install --quiet -e ."], planned.stdout
