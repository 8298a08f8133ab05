"""The Kubernetes manifests and the container file in deploy/ agree with what `strangler serve` really does: ports,
probe paths, signals, timings, volumes and the admin token, each checked against the real config loader, the real
admin app or a real `strangler serve` process."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import signal
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer

from proxy.admin import warn_if_exposed
from proxy.config.loader import load_config
from proxy.config.model import Config
from shadow.redact import KEY_BYTES, KEY_ENV, key_path_for, load_or_create_key
from shadow.runner import ShadowLimits
from shadow.store.writer import CLOSE_RETRY
from tests.deploy.recipes import (
    CONTAINERFILE,
    K8S,
    ROOT,
    container,
    container_port,
    containerfile,
    exec_form,
    healthcheck_command,
    instruction,
    manifests,
    mount_at,
    mount_for_volume,
    pod_spec,
    routes_yaml_text,
    serve_flags,
)
from tests.proxy.app_fixtures import admin_url, backend_app, dead_port, free_ports, running_proxy, wait_until
from tests.serve_process import child_process, strangler

CONFIG_PATH = "/etc/strangler/routes.yaml"


def local_copy(tmp_path: Path, legacy: int, new: int) -> Path:
    """The ConfigMap's routes.yaml on loopback: free ports, back ends on loopback, the store in tmp_path/store."""
    data: dict[str, Any] = yaml.safe_load(routes_yaml_text())
    listen, admin = free_ports(2)
    data["listen"].update(host="127.0.0.1", port=listen)
    data["admin"].update(host="127.0.0.1", port=admin)
    (tmp_path / "store").mkdir(exist_ok=True)
    data["store"]["path"] = str(tmp_path / "store" / PurePosixPath(data["store"]["path"]).name)
    data["upstreams"]["legacy"]["url"] = f"http://127.0.0.1:{legacy}"
    data["upstreams"]["new"]["url"] = f"http://127.0.0.1:{new}"
    path = tmp_path / "routes.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_every_manifest_parses_and_kustomize_lists_it() -> None:
    """Each file under deploy/k8s is YAML naming its kind and name; the kustomization lists every other file."""
    kinds = manifests()
    assert {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "Kustomization"} <= set(kinds)
    for kind, doc in kinds.items():
        assert doc["apiVersion"], kind
        if kind != "Kustomization":
            assert doc["metadata"]["name"], kind
    listed = set(kinds["Kustomization"]["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


def test_the_configmap_holds_a_valid_config_for_a_container(config: Config) -> None:
    """routes.yaml in the ConfigMap loads with the real loader, listens beyond loopback (probes and the Service come
    from outside the container) and keeps its store at an absolute path (the config directory is read-only)."""
    assert config.routes
    assert config.listen.host == "0.0.0.0"
    assert config.admin.host == "0.0.0.0"
    assert PurePosixPath(str(config.store.path)).is_absolute()
    assert str(config.store.path).startswith("/var/lib/strangler/")


def test_ports_everywhere_are_the_configs_ports(config: Config) -> None:
    """The container ports, the Service's target, the probes, the Prometheus annotation, EXPOSE and the
    HEALTHCHECK URL all name routes.yaml's listen.port and admin.port."""
    assert container_port("http") == config.listen.port
    assert container_port("admin") == config.admin.port
    (service_port,) = manifests()["Service"]["spec"]["ports"]
    assert container_port(service_port["targetPort"]) == config.listen.port
    for probe in ("readinessProbe", "livenessProbe"):
        assert container_port(container()[probe]["httpGet"]["port"]) == config.admin.port
    annotations = manifests()["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == config.admin.port
    assert {int(p) for p in instruction("EXPOSE").split()} == {config.listen.port, config.admin.port}
    (health_url,) = (arg for arg in healthcheck_command()[-1].split("'") if arg.startswith("http"))
    assert urlsplit(health_url).port == config.admin.port


async def test_probe_paths_answer_200_on_the_real_admin_app(tmp_path: Path) -> None:
    """The readiness and liveness probe paths and the HEALTHCHECK's path answer 200 on a started proxy's admin
    listener, and a Prometheus scrape path answers too."""
    backend = TestServer(backend_app("legacy"))
    await backend.start_server()
    try:
        assert backend.port is not None
        paths = {container()[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe")}
        (health_url,) = (a for a in healthcheck_command()[-1].split("'") if a.startswith("http"))
        paths.add(urlsplit(health_url).path)
        paths.add(manifests()["Deployment"]["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"])
        assert paths == {"/readyz", "/healthz", "/metrics"}
        async with (
            running_proxy(local_copy(tmp_path, backend.port, backend.port)) as running,
            aiohttp.ClientSession() as client,
        ):
            for path in sorted(paths):
                async with client.get(admin_url(running, path)) as resp:
                    assert resp.status == 200, path
    finally:
        await backend.close()


async def run_python(code: str) -> int:
    """Exit code of `python -c code`, run without blocking the loop (the proxy under test runs on it)."""
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stderr=asyncio.subprocess.DEVNULL)
    async with asyncio.timeout(20):
        return await process.wait()


@pytest.mark.slow
async def test_the_healthcheck_command_passes_on_a_live_admin_port_and_fails_on_a_dead_one(tmp_path: Path) -> None:
    """The HEALTHCHECK command itself (python -c with urllib), pointed at a started proxy's admin port, exits 0;
    at a port nobody listens on it exits non-zero, so a dead proxy is reported unhealthy."""
    command = healthcheck_command()
    assert command[0] == "python"
    backend = TestServer(backend_app("legacy"))
    await backend.start_server()
    try:
        assert backend.port is not None
        async with running_proxy(local_copy(tmp_path, backend.port, backend.port)) as running:
            live = command[-1].replace(":8081/", f":{running.admin_port}/")
            assert live != command[-1]
            assert await run_python(live) == 0
        assert await run_python(command[-1].replace(":8081/", f":{dead_port()}/")) != 0
    finally:
        await backend.close()


def test_the_grace_period_covers_prestop_drain_and_the_shadow_sides_close(config: Config) -> None:
    """terminationGracePeriodSeconds exceeds the preStop sleep + limits.drain_timeout + the time shadow copies in
    flight get at close (ShadowLimits.close_deadline) + the store writer's last retries (CLOSE_RETRY), so SIGKILL
    never cuts a drain short."""
    command = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0].endswith("sleep")
    pre_stop = float(command[1])
    grace = float(pod_spec()["terminationGracePeriodSeconds"])
    assert grace > pre_stop + config.limits.drain_timeout + ShadowLimits().close_deadline + CLOSE_RETRY


def test_the_store_is_on_a_writable_volume_and_the_root_is_read_only(config: Config) -> None:
    """The root file system is read-only; routes.yaml's store directory is a writable emptyDir mount (one store per
    replica), /tmp is one too, and the container file declares the same directory a VOLUME owned by its user."""
    assert container()["securityContext"]["readOnlyRootFilesystem"] is True
    store_dir = str(PurePosixPath(str(config.store.path)).parent)
    volume, mount = mount_at(store_dir)
    assert "emptyDir" in volume or "persistentVolumeClaim" in volume
    assert not mount.get("readOnly", False)
    tmp_volume, tmp_mount = mount_at("/tmp")
    assert "emptyDir" in tmp_volume
    assert not tmp_mount.get("readOnly", False)
    assert exec_form(instruction("VOLUME")) == [store_dir]
    assert any(f"chown strangler:strangler {store_dir}" in i.args for i in containerfile() if i.keyword == "RUN")


def test_the_configmap_is_mounted_where_the_image_reads_its_config() -> None:
    """The image's CMD reads /etc/strangler/routes.yaml; the ConfigMap (by its name) is mounted read-only on that
    directory without subPath (a subPath mount never sees updates), with routes.yaml as its key."""
    cmd = exec_form(instruction("CMD"))
    config_path = cmd[cmd.index("--config") + 1]
    assert config_path == CONFIG_PATH
    volume, mount = mount_for_volume("configMap")
    assert mount["mountPath"] == str(PurePosixPath(config_path).parent)
    assert "subPath" not in mount
    assert mount["readOnly"] is True
    assert volume["configMap"]["name"] == manifests()["ConfigMap"]["metadata"]["name"]
    assert PurePosixPath(config_path).name in manifests()["ConfigMap"]["data"]


def test_the_image_runs_strangler_serve_with_real_flags_as_a_non_root_user() -> None:
    """ENTRYPOINT is `strangler serve`, CMD's flags are options serve accepts, USER is the non-root user the
    Deployment's runAsUser names, and the base image is a slim Python 3.11+."""
    assert exec_form(instruction("ENTRYPOINT")) == ["strangler", "serve"]
    flags = {arg for arg in exec_form(instruction("CMD")) if arg.startswith("--")}
    assert flags <= serve_flags()
    base = instruction("FROM")
    assert base.startswith("python:3.1")
    assert base.endswith("-slim")
    assert int(base.removeprefix("python:3.").split("-")[0]) >= 11
    assert instruction("USER").split(":")[0] == "strangler"
    run = " ".join(i.args for i in containerfile() if i.keyword == "RUN")
    uid = pod_spec()["securityContext"]["runAsUser"]
    assert f"--uid {uid} " in run
    assert pod_spec()["securityContext"]["runAsNonRoot"] is True
    assert container()["securityContext"]["allowPrivilegeEscalation"] is False
    assert container()["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert "pip wheel" in " ".join(i.args for i in containerfile(0) if i.keyword == "RUN")


def test_the_image_installs_the_versions_the_suite_was_checked_with() -> None:
    """The build stage copies constraints.txt in and builds its wheels under it (`pip wheel -c constraints.txt`): the
    image holds the dependency versions make test and CI ran, not whatever is newest on the day it is built."""
    build = containerfile(0)
    copied = {arg for i in build if i.keyword == "COPY" for arg in i.args.split()[:-1] if not arg.startswith("--")}
    assert "constraints.txt" in copied
    assert all((ROOT / arg).exists() for arg in copied)
    # The build context excludes everything (`**`) but what the ignore file lets back in with `!`.
    ignore = CONTAINERFILE.with_name(CONTAINERFILE.name + ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert "**" in ignore
    assert copied <= {line[1:] for line in ignore if line.startswith("!")}
    wheel = [i.args for i in build if i.keyword == "RUN" and "pip wheel" in i.args]
    assert len(wheel) == 1
    assert "-c constraints.txt" in wheel[0]


def test_resources_are_requested_and_limited() -> None:
    """The container requests and limits cpu and memory."""
    resources = container()["resources"]
    for side in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[side]), side


def test_the_admin_token_comes_from_a_secret_and_quiets_the_exposed_warning(
    config: Config, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The Deployment sets admin.token_env from a Secret; with it set, the real warn_if_exposed stays quiet on the
    container's 0.0.0.0 admin listener, and without it it warns that the admin API is exposed."""
    (env,) = (e for e in container()["env"] if e["name"] == config.admin.token_env)
    assert env["valueFrom"]["secretKeyRef"]["name"]
    assert not env["valueFrom"]["secretKeyRef"].get("optional", False)
    caplog.set_level(logging.WARNING, logger="strangler.admin")
    monkeypatch.delenv(config.admin.token_env, raising=False)
    warn_if_exposed(config, config.admin.host)
    assert "ADMIN API EXPOSED" in caplog.text
    caplog.clear()
    monkeypatch.setenv(config.admin.token_env, "from-the-secret")
    warn_if_exposed(config, config.admin.host)
    assert caplog.text == ""


def test_every_replica_gets_the_same_redaction_key_from_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Deployment sets the redaction key variable (shadow.redact.KEY_ENV) from a Secret, and with it set the real
    key loader uses it and writes no per-pod key file beside the store: every replica redacts a secret to the same
    token, so merged stores group it as one value."""
    (env,) = (e for e in container()["env"] if e["name"] == KEY_ENV)
    assert env["valueFrom"]["secretKeyRef"]["name"]
    key = "ab" * KEY_BYTES
    monkeypatch.setenv(KEY_ENV, key)
    key_file = key_path_for(tmp_path / "strangler.db")
    assert load_or_create_key(key_file) == bytes.fromhex(key)
    assert not key_file.exists()


def test_the_service_and_the_budget_select_the_deployments_pods() -> None:
    """The Service and the PodDisruptionBudget select the pods the Deployment makes, and the budget leaves a
    replica standing."""
    labels = manifests()["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert manifests()["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert manifests()["Service"]["spec"]["selector"].items() <= labels.items()
    budget = manifests()["PodDisruptionBudget"]["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert 1 <= budget["minAvailable"] < manifests()["Deployment"]["spec"]["replicas"]


def strangler_command() -> list[str]:
    """The installed `strangler` console script (what ENTRYPOINT runs), or the same entry point through Python."""
    script = Path(sys.executable).parent / "strangler"
    if script.exists():
        return [str(script)]
    return strangler()


@pytest.mark.slow
async def test_the_images_command_reloads_on_sighup_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    """The image's ENTRYPOINT + CMD (config path pointed at a loopback copy of the ConfigMap's routes.yaml), run as a
    real process with its shadow worker: SIGHUP reloads (generation 2, trigger sighup), and SIGTERM, the image's
    STOPSIGNAL, drains and exits 0; it wrote only in the store's directory (and /tmp), never in its working
    directory or home, as the read-only root file system requires."""
    assert instruction("STOPSIGNAL") == "SIGTERM"
    backend = TestServer(backend_app("legacy"))
    await backend.start_server()
    try:
        assert backend.port is not None
        config_path = local_copy(tmp_path, backend.port, backend.port)
        config = load_config(config_path)
        args = [str(config_path) if a == CONFIG_PATH else a for a in exec_form(instruction("CMD"))]
        command = [*strangler_command(), *exec_form(instruction("ENTRYPOINT"))[1:], *args, "--quiet"]
        # Like the image's read-only root: a working directory and a home that must stay empty, /tmp apart.
        work, home, tmp = tmp_path / "work", tmp_path / "home", tmp_path / "tmp"
        for directory in (work, home, tmp):
            directory.mkdir()
        env = {"STRANGLER_ADMIN_TOKEN": "t", "HOME": str(home), "TMPDIR": str(tmp)}
        admin = f"http://127.0.0.1:{config.admin.port}"
        async with child_process(command, cwd=work, env=env) as process:
            async with aiohttp.ClientSession() as client:

                async def config_view() -> dict[str, Any] | None:
                    try:
                        async with client.get(f"{admin}/config") as resp:
                            data: dict[str, Any] = await resp.json()
                            return data
                    except aiohttp.ClientConnectionError:
                        return None

                async def started() -> bool:
                    return await config_view() is not None

                await wait_until(started, limit=30.0)
                async with client.get(f"http://127.0.0.1:{config.listen.port}/api/orders/1") as resp:
                    assert resp.status == 200
                process.send_signal(signal.SIGHUP)

                async def reloaded() -> bool:
                    view = await config_view()
                    return view is not None and view["last_reload"]["trigger"] == "sighup"

                await wait_until(reloaded, limit=20.0)
                view = await config_view()
                assert view is not None
                assert view["generation"] == 2
                assert view["last_reload"]["ok"] is True
            process.send_signal(signal.SIGTERM)
            await wait_until(lambda: process.poll() is not None, limit=40.0)
            assert process.returncode == 0, process.stderr.read() if process.stderr else ""
            assert list(work.iterdir()) == []
            assert list(home.iterdir()) == []
            store = Path(config.store.path)
            written = {p.name for p in store.parent.iterdir()}
            assert store.name in written
            assert written <= {store.name, f"{store.name}-wal", f"{store.name}-shm", f"{store.name}.key"}
    finally:
        await backend.close()


def container_engine() -> tuple[str | None, str]:
    """(engine, reason): a docker or podman that can reach its daemon, or None and why not."""
    for name in ("podman", "docker"):
        if shutil.which(name) is None:
            continue
        done = subprocess.run([name, "info"], capture_output=True, text=True, timeout=20, check=False)
        if done.returncode == 0:
            return name, ""
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"{name} is installed but `{name} info` fails: {last}"
    return None, "neither docker nor podman is installed"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_container_file_builds() -> None:
    """deploy/Containerfile builds from the repository root (needs a container engine and the network)."""
    engine, reason = container_engine()
    if engine is None:
        pytest.skip(f"no container engine to build deploy/Containerfile with: {reason}")
    done = subprocess.run(
        [engine, "build", "-f", str(CONTAINERFILE), "-t", "strangler-recipe-test", str(ROOT)],
        capture_output=True, text=True, timeout=880, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    inspect = subprocess.run(
        [engine, "image", "inspect", "strangler-recipe-test"], capture_output=True, text=True, timeout=60, check=True
    )
    (image,) = json.loads(inspect.stdout)
    assert image["Config"]["User"].startswith("strangler")
