#!/usr/bin/env python
"""Start a Flower SuperLink and N SuperNodes on 127.0.0.1, run the fedkd app with ``flwr run``, stop them.

    .venv/bin/python deploy/loopback.py --nodes 2 --overrides "rounds=2" --out outputs/loopback

See :mod:`fedkd.federated.loopback` and docs/federated.md.
"""

import sys

from fedkd.federated.loopback import main

if __name__ == "__main__":
    sys.exit(main())
