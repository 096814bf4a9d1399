"""Which errors are retried and which are skipped: a table of rules, extendable per job type."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dramatiq.middleware.time_limit import TimeLimitExceeded

from middleware import errors

RETRY, SKIP, CANCEL = "retry", "skip", "cancel"


@dataclass(frozen=True)
class Rule:
    """Errors of this class (or a subclass) get this verdict."""

    error: type[BaseException]
    verdict: str  # retry | skip | cancel


@dataclass(frozen=True)
class Verdict:
    """What to do about one failed attempt."""

    kind: str
    error_type: str
    message: str
    retry_after_ms: int | None = None


class Classifier:
    """Applies the first matching rule; an error no rule names is a bug, and bugs are retried."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)

    def extended(self, rules: Sequence[Rule]) -> Classifier:
        """A classifier whose `rules` take precedence over these (for one job type)."""
        return Classifier((*rules, *self.rules))

    def names(self, error: BaseException) -> bool:
        """Whether a rule names `error`: if none does, it is a bug."""
        return any(isinstance(error, r.error) for r in self.rules)

    def classify(self, error: BaseException) -> Verdict:
        """The verdict for `error`, with its type name and a short message."""
        kind = next((r.verdict for r in self.rules if isinstance(error, r.error)), RETRY)
        retry_after = getattr(error, "retry_after_ms", None)
        return Verdict(kind, type(error).__name__, _short(error), retry_after)


def _short(error: BaseException, limit: int = 500) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


DEFAULT_RULES = (
    Rule(errors.Cancelled, CANCEL),
    Rule(errors.LeaseLost, RETRY),  # named, so not taken for a bug; its finish is fenced anyway
    Rule(errors.Permanent, SKIP),
    Rule(errors.Retryable, RETRY),
    Rule(TimeLimitExceeded, RETRY),
)

DEFAULT = Classifier(DEFAULT_RULES)
