"""The node agent's pod-spec translation: images to programs, commands, environment and statuses (pure, no root)."""

import base64
import sys
from pathlib import Path
from typing import Any

import pytest

from chaoscontour.sandbox.container import images
from chaoscontour.sandbox.podspec import (
    ContainerConfigError,
    Image,
    PodFacts,
    container_argv,
    container_env,
    dockerfile_image,
    env_objects,
    expand,
    field_value,
    pod_phase,
    program_for_image,
    restart_delay_s,
    terminated_state,
)

POD = PodFacts(
    name="contour-7d9f-abcde",
    namespace="projectcontour",
    uid="1234-5678",
    node="sandbox",
    service_account="contour",
    pod_ip="10.213.0.11",
    host_ip="10.213.0.1",
    labels={"app": "contour"},
    annotations={"note": "x"},
)
CONTOUR = Image("contour", "/cache/contour", {"PATH": "/usr/bin:/bin"}, "/", ("/bin/contour",))
ENVOY = Image("envoy", "/venv/bin/envoy", {}, "/", (), ("envoy", "-c", "/etc/envoy/envoy.yaml"))


@pytest.mark.parametrize(
    ("image", "program"),
    [
        ("ghcr.io/projectcontour/contour:v1.33.6", "contour"),
        ("projectcontour/contour@sha256:abc", "contour"),
        ("docker.io/envoyproxy/envoy:v1.38.3", "envoy"),
        ("localhost:5000/chaoscontour/echo:latest", "echo"),
        ("chaoscontour-gameday:0.1.0", "runner"),
        ("registry.example.com/team/chaoscontour-gameday:0.1.0", "runner"),
        ("library/busybox", None),
        ("other/contour", None),
    ],
)
def test_an_image_maps_to_its_stand_in_by_repository_path(image: str, program: str | None) -> None:
    assert program_for_image(image) == program


def test_dollar_paren_expansion_follows_kubernetes() -> None:
    env = {"A": "1", "POD": "p"}
    assert expand("$(A)-$(POD)", env) == "1-p"
    assert expand("$(MISSING)", env) == "$(MISSING)"
    assert expand("$$(A) costs $$5", env) == "$(A) costs $5"


def test_field_refs_read_the_pod() -> None:
    assert field_value("metadata.name", POD) == "contour-7d9f-abcde"
    assert field_value("status.podIP", POD) == "10.213.0.11"
    assert field_value("spec.serviceAccountName", POD) == "contour"
    assert field_value("metadata.labels['app']", POD) == "contour"
    assert field_value("metadata.labels", POD) == 'app="contour"'
    with pytest.raises(ValueError, match="not supported"):
        field_value("status.phase", POD)


def test_every_container_gets_the_kubernetes_service_variables_for_in_cluster_clients() -> None:
    env, notes = container_env({"name": "c"}, POD, image_env={"PATH": "/bin"}, service_host="10.0.0.1")
    assert env["KUBERNETES_SERVICE_HOST"] == "10.0.0.1"
    assert env["KUBERNETES_SERVICE_PORT"] == "443"
    assert env["KUBERNETES_PORT_443_TCP_ADDR"] == "10.0.0.1"
    assert env["HOSTNAME"] == "contour-7d9f-abcde"
    assert env["PATH"] == "/bin"
    assert notes == []


def test_env_values_expand_earlier_ones_and_field_refs_and_unsupported_sources_are_noted() -> None:
    container = {
        "name": "c",
        "env": [
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "WHERE", "value": "$(NS)/$(KUBERNETES_SERVICE_HOST)"},
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {"name": "PATH", "value": "/venv/bin:$(PATH)"},
        ],
    }
    env, notes = container_env(container, POD, image_env={"PATH": "/bin"}, service_host="10.0.0.1")
    assert env["WHERE"] == "projectcontour/10.0.0.1"
    assert env["PATH"] == "/venv/bin:/bin"
    assert "CPU" not in env
    assert notes == ["env CPU (resourceFieldRef) is not supported by the sandbox and was left out"]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


SETTINGS = {"data": {"LEVEL": "debug", "MODE": "fast", "bad key": "x"}}
CREDENTIALS = {"data": {"user": b64("admin"), "password": b64("s3cret")}}


def test_env_and_env_from_read_config_maps_and_decoded_secrets_with_prefixes_and_env_winning() -> None:
    container = {
        "name": "c",
        "envFrom": [{"configMapRef": {"name": "settings"}}, {"secretRef": {"name": "creds"}, "prefix": "DB_"}],
        "env": [
            {"name": "MODE", "value": "slow"},
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
            {"name": "LOG", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "LEVEL"}}},
        ],
    }
    assert env_objects(container) == [("ConfigMap", "settings"), ("Secret", "creds")]
    objects = {("ConfigMap", "settings"): SETTINGS, ("Secret", "creds"): CREDENTIALS}
    env, notes = container_env(container, POD, image_env={}, service_host="10.0.0.1", objects=objects)
    assert (env["LEVEL"], env["MODE"], env["DB_user"], env["DB_password"]) == ("debug", "slow", "admin", "s3cret")
    assert (env["PASSWORD"], env["LOG"]) == ("s3cret", "debug")
    assert "bad key" not in env
    assert notes == ["envFrom ConfigMap keys skipped, not valid variable names: bad key"]


@pytest.mark.parametrize(
    ("container", "message"),
    [
        ({"envFrom": [{"secretRef": {"name": "creds"}}]}, 'secret "creds" not found'),
        (
            {"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "K"}}}]},
            'configmap "settings" not found',
        ),
        (
            {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "present", "key": "K"}}}]},
            "couldn't find key K in Secret projectcontour/present",
        ),
    ],
)
def test_a_missing_required_object_or_key_is_a_container_config_error_in_the_kubelets_words(
    container: dict[str, Any], message: str
) -> None:
    objects = {("Secret", "present"): CREDENTIALS}
    with pytest.raises(ContainerConfigError) as raised:
        container_env({"name": "c", **container}, POD, image_env={}, service_host="h", objects=objects)
    assert str(raised.value) == message


def test_optional_objects_and_keys_that_are_missing_are_left_out() -> None:
    container = {
        "name": "c",
        "envFrom": [{"secretRef": {"name": "absent", "optional": True}}],
        "env": [
            {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "K", "optional": True}}},
            {"name": "B", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nope", "optional": True}}},
        ],
    }
    objects = {("Secret", "creds"): CREDENTIALS}
    env, _ = container_env(container, POD, image_env={}, service_host="h", objects=objects)
    assert "A" not in env and "B" not in env


def test_a_command_naming_the_images_binary_runs_the_local_one_with_expanded_args() -> None:
    container = {"name": "contour", "command": ["contour"], "args": ["serve", "--incluster", "--ns=$(NS)"]}
    assert container_argv(CONTOUR, container, {"NS": "projectcontour"}) == [
        "/cache/contour",
        "serve",
        "--incluster",
        "--ns=projectcontour",
    ]
    assert container_argv(CONTOUR, {"name": "c", "command": ["/bin/contour", "version"]}, {})[0] == "/cache/contour"


def test_without_command_the_images_entrypoint_and_cmd_apply_as_in_kubernetes() -> None:
    assert container_argv(ENVOY, {"name": "envoy"}, {}) == ["/venv/bin/envoy", "-c", "/etc/envoy/envoy.yaml"]
    assert container_argv(ENVOY, {"name": "envoy", "args": ["envoy", "--version"]}, {}) == [
        "/venv/bin/envoy",
        "--version",
    ]
    assert container_argv(CONTOUR, {"name": "c", "args": ["serve"]}, {}) == ["/cache/contour", "serve"]
    other = {"name": "sh", "command": ["/bin/sh", "-c"], "args": ["echo $HOME"]}
    assert container_argv(CONTOUR, other, {}) == ["/bin/sh", "-c", "echo $HOME"]


def test_the_game_day_image_is_read_from_its_dockerfile() -> None:
    dockerfile = """
        FROM python:3.13 AS build
        ENV IGNORED=1
        FROM python:3.13-slim
        ARG V=0.1.0
        RUN pip install x \\
            && useradd chaos
        # chaostoolkit reads ~/.chaostoolkit
        ENV HOME=/tmp \\
            MPLCONFIGDIR=/tmp/matplotlib \\
            PYTHONUNBUFFERED=1
        ENV LEGACY some value
        USER 10001
        WORKDIR /tmp
        CMD ["chaos", "--help"]
    """
    image = dockerfile_image(dockerfile)
    assert image.env == {
        "HOME": "/tmp",
        "MPLCONFIGDIR": "/tmp/matplotlib",
        "PYTHONUNBUFFERED": "1",
        "LEGACY": "some value",
    }
    assert image.workdir == "/tmp"
    assert image.cmd == ("chaos", "--help")
    assert image.entrypoint == ()


def test_the_repositorys_dockerfile_gives_the_runner_its_environment() -> None:
    image = dockerfile_image((Path(__file__).parents[2] / "deploy" / "Dockerfile").read_text())
    assert image.env["CHAOSTOOLKIT_IN_POD"] == "true"
    assert image.env["HOME"] == "/tmp"
    assert image.workdir == "/tmp"


def test_a_terminated_state_says_completed_or_error() -> None:
    assert terminated_state(0, "t0", "t1", "sandbox://x")["reason"] == "Completed"
    failed = terminated_state(1, "t0", "t1", "sandbox://x", "liveness")
    assert failed == {
        "exitCode": 1,
        "reason": "Error",
        "startedAt": "t0",
        "finishedAt": "t1",
        "containerID": "sandbox://x",
        "message": "liveness",
    }


RUNNING = {"state": {"running": {}}}
WAITING = {"state": {"waiting": {"reason": "ContainerCreating"}}}
CRASHLOOP = {"state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"exitCode": 1}}}
DONE = {"state": {"terminated": {"exitCode": 0}}}
FAILED = {"state": {"terminated": {"exitCode": 2}}}


@pytest.mark.parametrize(
    ("policy", "initialized", "init_failed", "containers", "phase"),
    [
        ("Always", False, False, [WAITING], "Pending"),
        ("Never", False, True, [WAITING], "Failed"),
        ("Always", True, False, [WAITING], "Pending"),
        ("Always", True, False, [RUNNING, WAITING], "Pending"),
        ("Always", True, False, [RUNNING], "Running"),
        ("Always", True, False, [CRASHLOOP], "Running"),
        ("Always", True, False, [DONE], "Running"),
        ("Never", True, False, [DONE], "Succeeded"),
        ("Never", True, False, [DONE, FAILED], "Failed"),
        ("Never", True, False, [RUNNING, DONE], "Running"),
        ("OnFailure", True, False, [FAILED], "Running"),
        ("OnFailure", True, False, [DONE], "Succeeded"),
    ],
)
def test_the_pod_phase_follows_the_kubelets_rules(
    policy: str, initialized: bool, init_failed: bool, containers: list, phase: str
) -> None:
    assert pod_phase(policy, initialized, init_failed, containers) == phase


def test_crash_loop_back_off_restarts_at_once_then_doubles_to_five_minutes_and_forgets_after_ten() -> None:
    assert restart_delay_s(0.0, 0.0) == (0.0, 10.0)
    assert restart_delay_s(10.0, 5.0) == (10.0, 20.0)
    assert restart_delay_s(160.0, 5.0) == (160.0, 300.0)
    assert restart_delay_s(300.0, 5.0) == (300.0, 300.0)
    assert restart_delay_s(300.0, 601.0) == (0.0, 10.0)


def test_the_runner_image_is_this_venv_with_the_dockerfiles_environment(tmp_path: Path) -> None:
    found = images("/cache/contour", "/venv/bin/envoy")
    runner = found["runner"]
    venv_bin = str(Path(sys.executable).parent)
    assert runner.env["PATH"].split(":")[0] == venv_bin
    assert runner.env["CHAOSTOOLKIT_IN_POD"] == "true"
    assert runner.workdir == "/tmp"
    assert runner.cmd == ("chaos", "--help")
    assert found["contour"].binary == "/cache/contour"
    # The echo server (and a stand-in) comes from this checkout, whatever checkout the venv's install points at.
    assert found["echo"].env["PYTHONPATH"] == str(Path(__file__).resolve().parents[2])
    assert "runner" not in images("/c", "/e", dockerfile=tmp_path / "missing")
