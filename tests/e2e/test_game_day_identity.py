"""Both shipped experiments, run as deploy/'s game-day ServiceAccount with deploy/'s admission policies in force,
against the sandbox: least privilege that still does the job (issue 10). The runner holds only a ServiceAccount
token (TokenRequest), as the game-day pod does; the admission policies refuse anything not shaped like our objects."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from tests.support.chaosrun import EXPERIMENTS, ChaosRun, activity, as_vars, gate_verdict
from tests.support.game_day_identity import (
    SERVICE_ACCOUNT,
    admission_documents,
    applied,
    rbac_documents,
    wait_for_admission_policies,
)
from tests.support.sandbox import NS, Sandbox, leftovers


@pytest.fixture
def game_day_kubeconfig(
    sandbox: Sandbox, healthy_contour: dict[str, str], k: Any, tmp_path: Path
) -> Iterator[tuple[Path, str]]:
    """A kubeconfig holding only the chaoscontour ServiceAccount's token, with deploy/ applied; removed after."""
    with applied(k.api, rbac_documents(NS) + admission_documents(NS)):
        request: Any = {"spec": {"expirationSeconds": 3600}}
        token = client.CoreV1Api(k.api).create_namespaced_service_account_token(SERVICE_ACCOUNT, NS, request)
        admin = yaml.safe_load(Path(healthy_contour["KUBECONFIG"]).read_text())
        cluster = admin["clusters"][0]
        path = tmp_path / "game-day.kubeconfig"
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [cluster],
                    "users": [{"name": SERVICE_ACCOUNT, "user": {"token": token.status.token}}],
                    "contexts": [
                        {"name": "game-day", "context": {"cluster": cluster["name"], "user": SERVICE_ACCOUNT}}
                    ],
                    "current-context": "game-day",
                }
            )
        )
        path.chmod(0o600)
        as_service_account = config.new_client_from_config(str(path))
        wait_for_admission_policies(k.api, as_service_account, NS)
        yield path, token.status.token


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("leader-kill", {"sampling_s": "30"}),
        ("apiserver-outage", {"fault_window_s": "10", "sampling_s": "45", "fault_expiry_s": "240"}),
    ],
)
def test_shipped_experiment_passes_as_the_game_day_service_account_under_the_admission_policies(
    name: str, overrides: dict[str, str], game_day_kubeconfig: tuple[Path, str], k: Any, tmp_path: Path
) -> None:
    kubeconfig, token = game_day_kubeconfig
    experiment = EXPERIMENTS / f"{name}.json"
    run = ChaosRun(
        experiment,
        tmp_path,
        {"KUBECONFIG": str(kubeconfig)},
        name=f"game-day-identity-{name}",
        variables=as_vars(experiment, overrides),
    )
    journal = run.run(timeout_s=360)
    verdict = gate_verdict(run.journal_path)
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    assert journal["status"] == "completed" and journal["deviated"] is False
    if name == "apiserver-outage":
        assert activity(journal, "block-apiserver-egress")["output"]["verification"]["confirmed"] is True
        assert activity(journal, "the-fault-held-for-the-whole-window")["output"]["held"] is True
    assert leftovers(k) == []
    assert token not in run.log() and token not in run.journal_path.read_text(), "a token was written to a log"
