"""How far pyVoIP's SIP parser gets with the messages callpop's own parser is tested on.

Not part of callpop and not run by the tests: pyVoIP is not a dependency. Run it in a
throw-away virtual environment to repeat the measurement in docs/telephony.md:

    python3 -m venv /tmp/pyvoip && /tmp/pyvoip/bin/pip install pyVoIP==1.6.8
    /tmp/pyvoip/bin/python bench/pyvoip_parse.py

It feeds every RFC 4475 torture message (``$CALLPOP_RFC4475_DIR``, else
``../shared/corpora/rfc4475`` beside the checkout, the same place the tests read it from)
and every recorded INVITE (tests/data/invites) to ``pyVoIP.SIP.SIPMessage`` and prints,
per corpus, how many were parsed and which raised what. callpop's parser on the same
files: tests/telephony.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPORA = {
    "rfc4475": Path(
        os.environ.get("CALLPOP_RFC4475_DIR") or REPO.parent / "shared" / "corpora" / "rfc4475"
    ),
    "invites": REPO / "tests" / "data" / "invites",
}


def main() -> int:
    try:
        import pyVoIP.VoIP  # noqa: F401  (pyVoIP.SIP alone fails on a circular import)
        from pyVoIP.SIP import SIPMessage
    except ImportError as exc:
        print(f"pyVoIP is not importable here ({exc}); see this file's docstring", file=sys.stderr)
        return 2
    print(f"{'corpus':<10} {'files':>5} {'parsed':>6} {'raised':>6}  exceptions")
    for corpus, pattern in (("rfc4475", "*.dat"), ("invites", "*.sip")):
        files = sorted(CORPORA[corpus].glob(pattern))
        if not files:
            print(f"{corpus:<10} not found at {CORPORA[corpus]} (set CALLPOP_RFC4475_DIR)")
            continue
        raised: dict[str, str] = {}
        for path in files:
            try:
                SIPMessage(path.read_bytes())
            except Exception as exc:  # what escapes is the measurement
                raised[path.stem] = type(exc).__name__
        kinds = ", ".join(f"{name} {n}" for name, n in Counter(raised.values()).most_common())
        parsed = len(files) - len(raised)
        print(f"{corpus:<10} {len(files):>5} {parsed:>6} {len(raised):>6}  {kinds}")
        for stem, name in raised.items():
            print(f"    {stem}: {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
