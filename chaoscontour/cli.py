"""The ``chaoscontour`` command: operator tools beside the Chaos Toolkit activities.

Each subcommand lives in its own module and is imported only when used, so ``chaos`` never pays for them.
"""

import importlib
import sys
from collections.abc import Sequence

__all__: list[str] = []

_SUBCOMMANDS = {
    "activities": ("chaoscontour.tools.activities_doc", "print the activity reference (Markdown) from discovery"),
    "annotations": (
        "chaoscontour.tools.annotations",
        "print a journal's fault windows, kills, restarts and outage as Grafana annotations (JSON)",
    ),
    "cleanup": ("chaoscontour.tools.cleanup", "remove every object chaoscontour created in a cluster"),
    "gate": ("chaoscontour.tools.gate", "judge a chaos journal for CI: exit code, JUnit XML, Markdown summary"),
    "gateway-env": (
        "chaoscontour.tools.gateway_env",
        "print the experiments' settings for a Gateway served by Contour's Gateway provisioner",
    ),
    "report": ("chaoscontour.tools.report", "render a journal as a PNG timeline and an HTML page"),
}

# Commands of the sandbox distribution, which users of the extension do not install.
_MOVED = {"sandbox": "<up|down|status|mode|load> ...", "binaries": "binaries <build|where> ..."}


def _usage() -> str:
    lines = ["usage: chaoscontour <command> [options]", "", "commands:"]
    width = max(map(len, _SUBCOMMANDS))
    lines += [f"  {name:<{width}} {summary}" for name, (_, summary) in _SUBCOMMANDS.items()]
    lines += ["", "Run `chaoscontour <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name in _MOVED:
        print(
            f"chaoscontour: `{name}` is not part of the extension: the local sandbox and its binary builder are a "
            f"separate distribution, chaoscontour-sandbox (in this repository: pip install -e ./sandbox). "
            f"Run `chaoscontour-sandbox {_MOVED[name]}` instead.",
            file=sys.stderr,
        )
        return 2
    if name not in _SUBCOMMANDS:
        print(f"chaoscontour: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(_SUBCOMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
