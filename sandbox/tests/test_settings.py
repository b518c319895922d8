"""settings.env is sourced by a shell as root (`make demo`): values must arrive as data."""

import subprocess

import pytest

from chaoscontour_sandbox.settings import SETTINGS_ENV, write_settings


def test_a_value_with_shell_syntax_is_read_back_literally_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    values = {
        "ENVOY_URL": "http://10.217.0.4:8080/shop cart",
        "ROUTE_HTTPPROXY": f"cart$(touch {marker})`touch {marker}`;touch {marker}",
        "BACKEND_SELECTOR": "app=cart,tier=it's",
    }
    write_settings(tmp_path, values)
    script = f"set -a; . {tmp_path / SETTINGS_ENV}; set +a; " + "; ".join(f'printf "%s\\0" "${key}"' for key in values)
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split("\0")[:-1] == list(values.values())
    assert not marker.exists()


def test_a_key_that_is_no_variable_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a shell variable name"):
        write_settings(tmp_path, {"A=B; rm": "x"})
