"""Readers for the deploy recipes (Kubernetes manifests, the container file, the systemd unit), so the tests can
hold each figure in them against what `strangler serve` really does."""

from __future__ import annotations

import configparser
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
import yaml

from cli.main import app as cli_app

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
CONTAINERFILE = DEPLOY / "Containerfile"
UNIT = DEPLOY / "systemd" / "strangler.service"


def manifests() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object under deploy/k8s, by kind (one object of each kind)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            assert doc["kind"] not in found, f"{path.name}: a second {doc['kind']}"
            found[doc["kind"]] = doc
    return found


def routes_yaml_text() -> str:
    """The routes.yaml the ConfigMap holds."""
    return str(manifests()["ConfigMap"]["data"]["routes.yaml"])


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = manifests()["Deployment"]["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    (only,) = pod_spec()["containers"]
    return dict(only)


def container_port(name: str) -> int:
    """The number of the container port with this name."""
    return next(int(p["containerPort"]) for p in container()["ports"] if p["name"] == name)


def mount_for_volume(kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(volume, its mount) for the one volume of this kind (configMap, emptyDir, ...), whatever its name."""
    (volume,) = (v for v in pod_spec()["volumes"] if kind in v)
    (mount,) = (m for m in container()["volumeMounts"] if m["name"] == volume["name"])
    return volume, mount


def mount_at(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(volume, mount) for the mount at exactly this path."""
    (mount,) = (m for m in container()["volumeMounts"] if m["mountPath"] == path)
    (volume,) = (v for v in pod_spec()["volumes"] if v["name"] == mount["name"])
    return volume, mount


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, EXPOSE, ...
    args: str  # the rest of the line, continuation lines joined


def containerfile(stage: int = -1) -> list[Instruction]:
    """The instructions of one build stage of deploy/Containerfile (by default the final one, the image run)."""
    lines: list[str] = []
    pending = ""
    for raw in CONTAINERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    stages: list[list[Instruction]] = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append(Instruction(keyword.upper(), args.strip()))
    return stages[stage]


def exec_form(args: str) -> list[str]:
    """An instruction's JSON (exec) form, e.g. ENTRYPOINT ["strangler", "serve"]."""
    value = json.loads(args)
    assert isinstance(value, list), args
    return [str(v) for v in value]


def instruction(keyword: str) -> str:
    """The args of the one instruction with this keyword in the final stage."""
    (found,) = (i.args for i in containerfile() if i.keyword == keyword)
    return found


def healthcheck_command() -> list[str]:
    """The HEALTHCHECK's CMD, in exec form (its --interval and other options left out)."""
    args = instruction("HEALTHCHECK")
    _, _, command = args.partition(" CMD ")
    return exec_form(command)


def unit() -> configparser.ConfigParser:
    """deploy/systemd/strangler.service, keys case kept, no interpolation (the unit has $VARS and %specifiers)."""
    parser = configparser.ConfigParser(interpolation=None, strict=True, empty_lines_in_values=False)
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return parser


def unit_exec_start() -> list[str]:
    return shlex.split(unit()["Service"]["ExecStart"])


def seconds(value: str) -> float:
    """A systemd time span such as 45s, 2min or 90 (seconds)."""
    units = {"ms": 0.001, "s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0}
    for suffix in sorted(units, key=len, reverse=True):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * units[suffix]
    return float(value)


def serve_flags() -> set[str]:
    """Every option name the real `strangler serve` command accepts."""
    command = typer.main.get_command(cli_app)
    assert isinstance(command, typer.core.TyperGroup)
    serve = command.commands["serve"]
    return {name for param in serve.params for name in param.opts}
