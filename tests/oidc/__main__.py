"""python -m tests.oidc: installs oidc-provider into .cache/oidc (what `make npm-tools` runs)."""

import sys

from tests.oidc import CACHE, ensure

ensure()
print(f"oidc-provider ready in {CACHE}", file=sys.stderr)
