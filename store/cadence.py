"""When a schedule's occurrences fall: a cron expression read in wall-clock time, or an interval.

Cron follows Debian cron across DST changes (cronsim): a time that does not exist on the
spring-forward day (02:30 in Europe/Berlin) fires at the first minute after the gap (03:00),
and a time that happens twice on the fall-back day fires once, at its first (summer-time)
instance. Expressions that fire every minute or every hour (`*` in the minute or hour field)
simply follow real time. Intervals are counted from the Unix epoch, in UTC, so an occurrence
never depends on when the schedule was created or edited; they know no timezone.

Each occurrence is delayed by a stable jitter in [0, jitter_s), derived from the schedule's
id and the occurrence, so schedules with the same cadence spread out.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from itertools import islice
from zoneinfo import ZoneInfo, available_timezones

from cronsim import CronSim, CronSimError

#: The most a schedule's occurrences may be spread.
MAX_JITTER_S = 3600
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class CadenceError(ValueError):
    """A schedule's cadence cannot be used; `field` names the field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Cadence:
    """A checked cadence: exactly one of `cron` and `interval_s`, in `timezone`, with jitter."""

    cron: str | None
    interval_s: int | None
    timezone: str = "UTC"
    jitter_s: int = 0

    @classmethod
    def checked(
        cls, *, cron: str | None, interval_s: int | None, timezone: str = "UTC", jitter_s: int = 0
    ) -> Cadence:
        """The cadence, or CadenceError naming the first field that is wrong."""
        if (cron is None) == (interval_s is None):
            raise CadenceError("cron", "give exactly one of cron and interval_s")
        if interval_s is not None and interval_s < 1:
            raise CadenceError("interval_s", f"must be at least 1, got {interval_s}")
        if timezone not in _timezones():
            raise CadenceError("timezone", f"unknown IANA timezone {timezone!r}")
        if not 0 <= jitter_s <= MAX_JITTER_S:
            raise CadenceError("jitter_s", f"must lie in 0..{MAX_JITTER_S}, got {jitter_s}")
        cadence = cls(cron, interval_s, timezone, jitter_s)
        if cron is not None:
            cadence._check_cron(cron)
        return cadence

    def after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after `moment`, in UTC."""
        return next(self.occurrences_after(moment))

    def occurrences_after(self, moment: datetime) -> Iterator[datetime]:
        """The occurrences strictly after `moment`, in order, in UTC."""
        if self.interval_s is not None:
            step = self.interval_s
            k = int((moment - EPOCH).total_seconds() // step) + 1
            while True:
                yield EPOCH + timedelta(seconds=k * step)
                k += 1
        assert self.cron is not None
        start = moment.astimezone(ZoneInfo(self.timezone)).replace(microsecond=0)
        for local in CronSim(self.cron, start):
            occurrence = local.astimezone(UTC)
            if occurrence > moment:
                yield occurrence

    def jitter(self, schedule_id: uuid.UUID, occurrence: datetime) -> timedelta:
        """The occurrence's stable delay in [0, jitter_s)."""
        if self.jitter_s == 0:
            return timedelta(0)
        key = f"{schedule_id}/{occurrence.astimezone(UTC).isoformat()}".encode()
        draw = int.from_bytes(hashlib.sha256(key).digest()[:8], "big")
        return timedelta(milliseconds=draw % (self.jitter_s * 1000))

    def fire_at(self, schedule_id: uuid.UUID, occurrence: datetime) -> datetime:
        """When the occurrence is due: its time plus its jitter."""
        return occurrence + self.jitter(schedule_id, occurrence)

    def next_runs(self, schedule_id: uuid.UUID, first: datetime, count: int = 5) -> list[datetime]:
        """When the `count` occurrences from `first` (included) fire, jitter applied.

        Occurrences are handled in order, so one whose jitter would put it before an earlier
        occurrence fires with that earlier one.
        """
        just_before = first - timedelta(microseconds=1)
        runs: list[datetime] = []
        for occurrence in islice(self.occurrences_after(just_before), count):
            fire = self.fire_at(schedule_id, occurrence)
            runs.append(max(fire, runs[-1]) if runs else fire)
        return runs

    def _check_cron(self, cron: str) -> None:
        if len(cron.split()) != 5:
            raise CadenceError("cron", f"expected five fields, got {cron!r}")
        try:
            self.after(datetime.now(UTC))
        except (CronSimError, StopIteration):
            raise CadenceError("cron", f"not a cron expression that ever fires: {cron!r}") from None


#: Names available_timezones() may list that are no IANA zone or differ by host (Debian's
#: `localtime` is /etc/localtime); posix/ and right/ copies are left out as well.
_NOT_IANA = frozenset({"localtime", "posixrules", "Factory"})


@cache
def _timezones() -> frozenset[str]:
    return frozenset(
        name
        for name in available_timezones()
        if name not in _NOT_IANA and not name.startswith(("posix/", "right/"))
    )
