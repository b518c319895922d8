"""What Envoy serves in one response header: the route marker's probe (``chaoscontour.activities.routes``).

A GET without retries or redirects, as :func:`chaoscontour.edges.http.get`, but all it keeps of the answer is one
header; no answer is ``None``, since the marker's wait only asks whether the value has arrived yet.
"""

import requests

from chaoscontour.edges.http import USER_AGENT

__all__ = ["served_header"]


def served_header(url: str, host: str, header: str, timeout_s: float, verify_tls: bool) -> str | None:
    """The value of ``header`` in the answer to a GET of ``url`` (``Host: host`` when given); ``None`` when the
    header is absent or no answer came."""
    headers = {"User-Agent": USER_AGENT, **({"Host": host} if host else {})}
    try:
        response = requests.get(url, headers=headers, timeout=timeout_s, allow_redirects=False, verify=verify_tls)
    except requests.RequestException:
        return None
    return response.headers.get(header)
