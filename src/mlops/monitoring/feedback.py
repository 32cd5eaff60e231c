"""Delayed labels. Every /predict answer carries an `X-Request-ID` that holds what was
predicted for each of its samples, when, and a keyed digest of both; `POST /feedback`
sends (request id, sample index, true label) back whenever the label is known. Any
worker, any replica of the same version, before or after a restart, can then count the
answer right or wrong per class without having kept anything per request.

The digest's key is derived from the version's identity (model, version, run id): it
tells this version's ids from mistyped, truncated or another version's ones. It does not
authenticate whoever sends feedback (the run id is public in /metadata).
"""

from __future__ import annotations

import hashlib
import hmac
import random
import time
from collections.abc import Sequence

ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
DIGEST_BYTES = 8
DAY_S = 86_400


def code_width(num_classes: int) -> int:
    """Characters per sample's class in an id: 1 up to 36 classes, 2 up to 1296, ..."""
    width = 1
    while len(ALPHABET) ** width < num_classes:
        width += 1
    return width


def class_code(index: int, width: int) -> str:
    digits = []
    for _ in range(width):
        index, digit = divmod(index, len(ALPHABET))
        digits.append(ALPHABET[digit])
    return "".join(reversed(digits))


class RequestIds:
    """`issue` an id for one answer's predicted classes; `predicted` reads them back."""

    def __init__(self, identity: str, labels: Sequence, ttl_days: float) -> None:
        self.key = hashlib.sha256(f"mlops-request-id:{identity}".encode()).digest()
        self.width = code_width(len(labels))
        self.ttl_s = ttl_days * DAY_S
        # the class code of each answer label, as `predict` answers it (an int or a name)
        self.code_of = {label: class_code(i, self.width) for i, label in enumerate(labels)}
        self.index_of = {code: i for i, code in enumerate(self.code_of.values())}

    def _digest(self, body: str) -> str:
        # keyed BLAKE2: a MAC by design, and a third of HMAC-SHA256's time on a short id
        return hashlib.blake2b(body.encode(), key=self.key, digest_size=DIGEST_BYTES).hexdigest()

    def issue(self, labels: Sequence, now: float | None = None) -> str:
        issued = int(time.time() if now is None else now)
        codes = "".join([self.code_of[label] for label in labels])
        body = f"{issued:x}-{random.getrandbits(32):08x}-{codes}"
        return f"{body}-{self._digest(body)}"

    def predicted(self, request_id: str, index: int, now: float | None = None) -> int | str:
        """The class index predicted for sample `index` of the answer, or why there is
        none: "unknown" (not an id this version issued, or no such sample) or "expired"."""
        body, _, digest = request_id.rpartition("-")
        parts = body.split("-")
        if len(parts) != 3 or not hmac.compare_digest(digest, self._digest(body)):
            return "unknown"
        issued, _, codes = parts
        start = index * self.width
        code = codes[start : start + self.width]
        if len(code) != self.width or code not in self.index_of:
            return "unknown"
        age = (time.time() if now is None else now) - int(issued, 16)
        if age > self.ttl_s:
            return "expired"
        return self.index_of[code]


def feedback_metrics(labels: Sequence) -> tuple[dict, dict]:
    """Counters of matched feedback per true label and outcome, and of unmatched feedback
    per reason; every series exists from the start (at 0)."""
    from prometheus_client import Counter

    judged = Counter("mlops_feedback", "Fed-back labels matched to an answer, per true "
                     "label and whether the answer was right", ["label", "outcome"])  # fmt: skip
    unmatched = Counter("mlops_feedback_unmatched", "Fed-back labels matched to no answer "
                        "of this version: unknown id or sample, or older than the time "
                        "to live", ["reason"])  # fmt: skip
    counters = {
        (i, outcome): judged.labels(label=str(label), outcome=outcome)
        for i, label in enumerate(labels)
        for outcome in ("correct", "wrong")
    }
    return counters, {reason: unmatched.labels(reason=reason) for reason in ("unknown", "expired")}
