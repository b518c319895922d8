"""The cleanup tool's pure parts: durations and age filtering."""

from datetime import UTC, datetime

import pytest

from chaoscontour.tools.cleanup import main, older_than, parse_duration_s


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1.5d", 129600)])
def test_durations(text, seconds):
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-5m", "10 minutes", "5w"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration_s(text)


def test_bad_older_than_is_a_usage_error_before_any_cluster_call(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--older-than", "soon"])
    assert exit_info.value.code == 2
    assert "--older-than" in capsys.readouterr().err


def test_older_than_keeps_only_old_enough_objects():
    now = datetime(2026, 11, 26, 19, 0, 0, tzinfo=UTC)
    objects = [
        {"metadata": {"name": "old", "creationTimestamp": "2026-11-26T18:00:00Z"}},
        {"metadata": {"name": "young", "creationTimestamp": "2026-11-26T18:59:30Z"}},
    ]
    assert [o["metadata"]["name"] for o in older_than(objects, now, 600)] == ["old"]
    assert len(older_than(objects, now, 0)) == 2


def test_markers_that_cannot_be_listed_fail_after_the_faults_are_dealt_with(capsys):
    """Issue 21: an identity without RBAC on HTTPProxies still gets its faults removed, and is told what was not
    checked (exit 1), rather than a silent success."""
    from unittest import mock

    from chaoslib.exceptions import ActivityFailed

    denied = ActivityFailed("failed to list HTTPProxies: RBAC forbids it (403)")
    with (
        mock.patch("chaoscontour.tools.cleanup.kube", autospec=True),
        mock.patch("chaoscontour.tools.cleanup._ours", autospec=True, return_value=[]),
        mock.patch("chaoscontour.edges.route_objects.list_at", autospec=True, side_effect=denied),
    ):
        assert main(["--namespace", "demo"]) == 1
    out, err = capsys.readouterr()
    assert "removed 0 object(s)" in out
    assert "route markers not checked: failed to list HTTPProxies: RBAC forbids it (403)" in err
