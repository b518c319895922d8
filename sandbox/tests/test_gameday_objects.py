"""The sandbox's game day: the user's edit of the CronJob, and the Job `kubectl create job --from` makes (pure)."""

import copy
from pathlib import Path

import yaml

from chaoscontour_sandbox.gameday import CRONJOB, for_cluster, job_from_cronjob

CRONJOB_YAML = Path(__file__).parents[2] / "deploy" / "cronjob.yaml"


def cronjob() -> dict:
    document = yaml.safe_load(CRONJOB_YAML.read_text())
    document["metadata"]["uid"] = "cj-uid"
    return document


def without_env(cron: dict) -> dict:
    cron = copy.deepcopy(cron)
    cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0].pop("env")
    return cron


def env_of(pod_spec: dict) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in pod_spec["containers"][0]["env"]}


def test_the_users_edit_sets_where_envoy_answers_and_nothing_else() -> None:
    other = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    original = cronjob()
    edited = for_cluster([other, original], {"ENVOY_URL": "http://10.213.0.12:8080/", "ENVOY_HOST": "echo.local"})
    assert edited[0] == other
    env = env_of(edited[1]["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    assert env["ENVOY_URL"] == "http://10.213.0.12:8080/"
    assert env["ENVOY_HOST"] == "echo.local"
    assert env["CHAOSTOOLKIT_IN_POD"] == "true"
    assert env_of(original["spec"]["jobTemplate"]["spec"]["template"]["spec"])["ENVOY_HOST"] == "gameday.example.com"
    assert without_env(edited[1]) == without_env(original)


def test_a_job_from_the_cronjob_is_its_template_marked_manual_and_owned_by_it() -> None:
    source = cronjob()
    job = job_from_cronjob(source, "gameday-now")
    assert job["metadata"] == {
        "name": "gameday-now",
        "namespace": "projectcontour",
        "annotations": {"cronjob.kubernetes.io/instantiate": "manual"},
        "labels": source["spec"]["jobTemplate"]["metadata"]["labels"],
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": CRONJOB, "uid": "cj-uid"}],
    }
    assert job["spec"] == source["spec"]["jobTemplate"]["spec"]
    pod = job["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == "chaoscontour"
    assert "app" not in pod["metadata"]["labels"]


def test_a_variant_overrides_the_environment_of_a_copy() -> None:
    source = cronjob()
    job = job_from_cronjob(source, "gameday-floor", {"EXPERIMENTS": "leader-kill.json", "MIN_AVAILABILITY": "1"})
    env = env_of(job["spec"]["template"]["spec"])
    assert env["EXPERIMENTS"] == "leader-kill.json"
    assert env["MIN_AVAILABILITY"] == "1"
    assert env_of(source["spec"]["jobTemplate"]["spec"]["template"]["spec"])["EXPERIMENTS"] != "leader-kill.json"
