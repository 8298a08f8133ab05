"""deploy/systemd/strangler.service runs the real `strangler serve` with the signals, timings and directories it
needs, hardened, and passes `systemd-analyze verify` where systemd is installed."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.config.model import Config, Limits
from shadow.runner import ShadowLimits
from shadow.store.writer import CLOSE_RETRY
from tests.deploy.recipes import UNIT, seconds, serve_flags, unit, unit_exec_start

INSTALLED_AT = "/opt/strangler/bin/strangler"


def test_the_unit_runs_strangler_serve_with_its_config_and_state_directories() -> None:
    """ExecStart is `strangler serve` with options serve accepts; the config is read from ConfigurationDirectory and
    the store written to StateDirectory, the only writable place under ProtectSystem=strict."""
    service = unit()["Service"]
    command = unit_exec_start()
    assert command[:3] == [INSTALLED_AT, "serve", "--config"]
    assert {arg for arg in command if arg.startswith("--")} <= serve_flags()
    assert service["ConfigurationDirectory"] == "strangler"
    assert command[command.index("--config") + 1] == "${CONFIGURATION_DIRECTORY}/routes.yaml"
    assert service["StateDirectory"] == "strangler"
    assert command[command.index("--db") + 1].startswith("${STATE_DIRECTORY}/")
    assert service["ProtectSystem"] == "strict"


def test_the_units_signals_are_the_ones_serve_handles() -> None:
    """Stop is SIGTERM (serve drains and exits 0 on it) to the main process only, reload is SIGHUP (serve reloads
    routes.yaml on it), and a failed process is restarted; the signals are the ones the serve test sends."""
    service = unit()["Service"]
    assert signal.Signals[service["KillSignal"]] is signal.SIGTERM
    assert service["KillMode"] == "mixed"
    kill, flag, pid = service["ExecReload"].split()
    assert Path(kill).name == "kill"
    assert signal.Signals["SIG" + flag.removeprefix("-")] is signal.SIGHUP
    assert pid == "$MAINPID"
    assert service["Restart"] == "on-failure"


def test_the_stop_timeout_covers_the_drain_and_the_shadow_sides_close(config: Config) -> None:
    """TimeoutStopSec exceeds limits.drain_timeout (the default, and the ConfigMap's as the real loader reads it)
    plus the time shadow copies in flight get at close and the store writer's last retries, so systemd's SIGKILL
    never cuts a drain short."""
    drain = max(Limits().drain_timeout, config.limits.drain_timeout)
    close = ShadowLimits().close_deadline + CLOSE_RETRY
    assert seconds(unit()["Service"]["TimeoutStopSec"]) > drain + close


def test_the_unit_is_hardened() -> None:
    """A dynamic user with no privileges, capabilities or writable system; sockets limited to IP and the AF_UNIX
    socketpair to the shadow worker; system calls limited to @system-service."""
    service = unit()["Service"]
    expected = {
        "DynamicUser": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "CapabilityBoundingSet": "",
        "SystemCallFilter": "@system-service",
    }
    assert {key: service.get(key) for key in expected} == expected
    assert set(service["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}


def unit_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this environment's real `strangler` script (verify checks it exists)."""
    script = Path(sys.executable).parent / "strangler"
    if not script.exists():
        pytest.skip(f"no installed strangler script next to {sys.executable} for ExecStart")
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text(encoding="utf-8").replace(INSTALLED_AT, str(script)), encoding="utf-8")
    return copy


@pytest.mark.slow
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    """`systemd-analyze verify` finds no unknown key, bad value or missing command in the unit, and `systemd-analyze
    security` rates its exposure 2.0 or lower (OK)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (no systemd here): the unit is only parsed")
    copy = unit_copy(tmp_path)
    done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr  # unknown keys and bad values are only warnings, with exit 0
    done = subprocess.run(
        [analyze, "security", "--offline=yes", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0 and "offline" in done.stderr:
        pytest.skip(f"this systemd-analyze cannot rate a unit file offline: {done.stderr.strip()}")
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout)
    assert found is not None, done.stdout[-2000:] + done.stderr
    assert float(found.group(1)) <= 2.0
