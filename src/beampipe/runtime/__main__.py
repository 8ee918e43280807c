"""Entry point of a node process: ``python -m beampipe.runtime --control EP --node N --replica R``.

Started by a launcher, not by hand.
"""

from __future__ import annotations

import argparse
import signal
import sys

from beampipe.runtime.node import NodeRuntime
from beampipe.transport.security import CredentialsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m beampipe.runtime")
    parser.add_argument("--control", required=True, help="launcher control endpoint")
    parser.add_argument("--node", required=True)
    parser.add_argument("--replica", type=int, default=0)
    parser.add_argument("--incarnation", type=int, default=0, help="restarts before this one")
    args = parser.parse_args(argv)
    # The launcher coordinates shutdown: a terminal Ctrl-C must not kill nodes mid-message.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        runtime = NodeRuntime(args.control, args.node, args.replica, args.incarnation)
    except CredentialsError as exc:
        print(f"beampipe node {args.node!r}: {exc}", file=sys.stderr)
        return 2
    return runtime.run()


if __name__ == "__main__":
    sys.exit(main())
