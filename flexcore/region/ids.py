"""Opaque ids and private salts of a region's DSOs.

Every DSO of a region has a private secret. From it and the scenario seed it derives
(HMAC-SHA256, so that a run is reproducible for the same seed and secrets, but nothing is
derivable from public data):

- its **public id** (``d`` + 12 hex digits): the name under which the TSO knows it, the
  id of its column in the MV package and of its package folder;
- its **salt** for the row keys of its format-1 packages;
- its **bid pseudonyms** (``b`` + 16 hex digits, one per internal bid id): the column ids
  of its packages and of the bid table the TSO clears;
- the seed of the shuffles of its format-2 publications.

The area's name (``lv<transformer index>``), its transformer, buses and load indices stay
with the DSO. In a study run in one process every DSO's secret is derived from one master
secret (:func:`identities`; default: fresh OS entropy per run), the stand-in for secrets
the DSOs would each keep. The clearing does not depend on ids or salts: the region
clearing orders rows and columns by content (:mod:`flexcore.market.multi`), so the same
seed gives the same cost and dispatch whatever the secrets.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field, replace

from flexcore.exchange.bids import BidTable


@dataclass(frozen=True)
class DsoIdentity:
    """One DSO's derived names (private: the secret never leaves the DSO)."""

    secret: bytes = field(repr=False)
    seed: int = 0

    def _mac(self, text: str) -> str:
        return hmac.new(self.secret, f"{self.seed}|{text}".encode(), hashlib.sha256).hexdigest()

    @property
    def public_id(self) -> str:
        return "d" + self._mac("id")[:12]

    @property
    def salt(self) -> str:
        return self._mac("salt")

    @property
    def shuffle_seed(self) -> int:
        """Seed of the row and column shuffles of the DSO's format-2 publications."""
        return int(self._mac("shuffle")[:32], 16)

    def bid_id(self, internal: str) -> str:
        return "b" + self._mac(f"bid|{internal}")[:16]

    def pseudonymous(self, bids: BidTable) -> BidTable:
        """``bids`` with every id replaced by its pseudonym (order and values kept)."""
        return replace(bids, ids=tuple(self.bid_id(i) for i in bids.ids))


def identities(names: list[str], *, seed: int, secret: str | bytes | None = None
               ) -> dict[str, DsoIdentity]:
    """The identity of each DSO ``names`` (its private area name), its secret derived from
    ``secret`` (None: fresh OS entropy) and the name. Distinct public ids are checked."""
    master = secrets.token_bytes(32) if secret is None else (
        secret.encode() if isinstance(secret, str) else bytes(secret))
    out = {n: DsoIdentity(hmac.new(master, f"dso|{n}".encode(), hashlib.sha256).digest(),
                          int(seed)) for n in names}
    ids = [d.public_id for d in out.values()]
    if len(set(ids)) != len(ids):  # 48 bits: a clash is ~1e-10 for 133 DSOs
        raise ValueError("two DSOs derived the same public id; use another secret")
    return out
