"""THE feature definition. Every engine (BigQuery/DuckDB/Spark SQL, the vectorized kernel, the online
state) reads this module and nothing else to know what to compute.

Semantics (DESIGN.md section 3): time is whole epoch seconds; a click at second t sees only clicks whose
second lies in [t - end, t - start] with start >= 1, so clicks in the same second never see each other.
Adding a window feature is one line in DEFAULT_SPEC below.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

from attribution.schema import ID_FIELDS

KEY_FIELDS: tuple[str, ...] = ID_FIELDS  # what a window may be keyed by: the click's ids


@dataclass(frozen=True)
class Band:
    """Seconds before the click, both ends inclusive: [t - end, t - start]."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 1 <= self.start <= self.end:
            raise ValueError(f"band needs 1 <= start <= end, got {self.start}..{self.end}")


@dataclass(frozen=True)
class ClickCount:
    """Clicks of the same key group in each band."""

    keys: tuple[str, ...]
    bands: tuple[Band, ...]

    def names(self) -> list[str]:
        return [f"clicks_{'_'.join(self.keys)}_{b.start}s_{b.end}s" for b in self.bands]


@dataclass(frozen=True)
class DistinctCount:
    """Distinct values of `of` among the group's clicks in [t - window, t - 1]."""

    keys: tuple[str, ...]
    of: str
    window: int

    @property
    def name(self) -> str:
        return f"distinct_{self.of}_per_{'_'.join(self.keys)}_{self.window}s"


@dataclass(frozen=True)
class SincePrevious:
    """t minus the second of the group's latest click in [t - window, t - 1]; missing (NULL/NaN) if none."""

    keys: tuple[str, ...]
    window: int

    @property
    def name(self) -> str:
        return f"secs_since_prev_{'_'.join(self.keys)}"


@dataclass(frozen=True)
class FeatureSpec:
    counts: tuple[ClickCount, ...]
    distincts: tuple[DistinctCount, ...]
    since_previous: tuple[SincePrevious, ...]
    hour_of_day: bool = True
    version: int = 1

    def __post_init__(self) -> None:
        for group in [c.keys for c in self.counts] + [d.keys for d in self.distincts] + [
            p.keys for p in self.since_previous
        ]:
            unknown = set(group) - set(KEY_FIELDS)
            if unknown or not group:
                raise ValueError(f"key group {group} must be a non-empty subset of {KEY_FIELDS}")
        for d in self.distincts:
            if d.of not in KEY_FIELDS:
                raise ValueError(f"distinct count of unknown field {d.of!r}")
        names = self.feature_names
        if len(set(names)) != len(names):
            raise ValueError("duplicate feature names in spec")

    # ---- names -------------------------------------------------------------------------------
    @property
    def count_names(self) -> list[str]:
        return [n for c in self.counts for n in c.names()]

    @property
    def distinct_names(self) -> list[str]:
        return [d.name for d in self.distincts]

    @property
    def since_previous_names(self) -> list[str]:
        return [p.name for p in self.since_previous]

    @property
    def hour_names(self) -> list[str]:
        return ["hour_sin", "hour_cos"] if self.hour_of_day else []

    @property
    def feature_names(self) -> list[str]:
        return self.count_names + self.distinct_names + self.since_previous_names + self.hour_names

    @property
    def integer_features(self) -> list[str]:
        return self.count_names + self.distinct_names

    @property
    def max_window(self) -> int:
        """The state horizon: no feature looks further back than this many seconds."""
        spans = [b.end for c in self.counts for b in c.bands]
        spans += [d.window for d in self.distincts] + [p.window for p in self.since_previous]
        return max(spans)

    @property
    def key_groups(self) -> list[tuple[str, ...]]:
        """Every distinct key group the spec uses, in first-use order."""
        seen: dict[tuple[str, ...], None] = {}
        for g in [c.keys for c in self.counts] + [d.keys for d in self.distincts] + [
            p.keys for p in self.since_previous
        ]:
            seen.setdefault(g, None)
        return list(seen)

    def distinct_fields(self, group: tuple[str, ...]) -> tuple[str, ...]:
        """The fields whose values the group's distinct counts need, each once, in spec order."""
        return tuple(dict.fromkeys(d.of for d in self.distincts if d.keys == group))

    def window_offsets(self, group: tuple[str, ...]) -> list[int]:
        """Every edge the group's windows cut at, as seconds before the click, ascending from 0 (the click's
        own second). Each engine finds "the group's first click at or after second t - offset" once per
        offset; bands share edges ([t-300, t-1] and [t-3600, t-301] both cut at t-300)."""
        return sorted(
            {0}
            | {b.start - 1 for c in self.counts if c.keys == group for b in c.bands}
            | {b.end for c in self.counts if c.keys == group for b in c.bands}
            | {d.window for d in self.distincts if d.keys == group}
        )

    # ---- hour of day ---------------------------------------------------------------------------
    @staticmethod
    def hour_table() -> list[tuple[float, float]]:
        """(sin, cos) of each UTC hour. Engines look values up here (SQL renders them as exact
        literals) rather than calling their own sin/cos, whose last bits differ between runtimes."""
        return [(math.sin(2 * math.pi * h / 24), math.cos(2 * math.pi * h / 24)) for h in range(24)]

    # ---- identity --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def hash(self) -> str:
        """Content hash of the definition; the predictor refuses a model built with another one."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        return cls(
            counts=tuple(
                ClickCount(tuple(c["keys"]), tuple(Band(**b) for b in c["bands"])) for c in d["counts"]
            ),
            distincts=tuple(DistinctCount(tuple(x["keys"]), x["of"], x["window"]) for x in d["distincts"]),
            since_previous=tuple(SincePrevious(tuple(x["keys"]), x["window"]) for x in d["since_previous"]),
            hour_of_day=d["hour_of_day"],
            version=d["version"],
        )


FIVE_MIN, HOUR, EIGHT_HOURS = 300, 3600, 28800
SEED_BANDS = (Band(1, FIVE_MIN), Band(FIVE_MIN + 1, HOUR), Band(HOUR + 1, EIGHT_HOURS))
SEED_GROUPS: tuple[tuple[str, ...], ...] = (
    ("ip",),
    ("ip", "app"),
    ("ip", "app", "os"),
    ("ip", "device", "os"),
    ("ip", "device", "os", "app"),
    ("ip", "device", "os", "app", "channel"),
)

DEFAULT_SPEC = FeatureSpec(
    counts=tuple(ClickCount(g, SEED_BANDS) for g in SEED_GROUPS),
    distincts=(
        DistinctCount(("ip",), "channel", EIGHT_HOURS),
        DistinctCount(("ip",), "app", EIGHT_HOURS),
        DistinctCount(("ip", "device", "os"), "app", EIGHT_HOURS),
        DistinctCount(("ip", "device", "os"), "channel", EIGHT_HOURS),
        DistinctCount(("ip", "app"), "os", EIGHT_HOURS),
        DistinctCount(("ip",), "device", EIGHT_HOURS),
    ),
    since_previous=tuple(SincePrevious(g, EIGHT_HOURS) for g in SEED_GROUPS),
)

# ---- families beyond the seed (issue 17.2) --------------------------------------------------------------
# Not in DEFAULT_SPEC yet: every engine and both online states compute them (tests/test_features_parity.py,
# tests/test_online_redis.py; Redis keeps groups without ip as hot keys, docs/online-state.md, whose size and
# CPU per click bench/online.py --parts wide measures). bench/feature_families.py measures what each family buys.
DAY = 86400
CAMPAIGN_GROUPS: tuple[tuple[str, ...], ...] = (
    ("app",), ("channel",), ("app", "channel"), ("app", "os"), ("device", "os"),
)
IP_DAY_GROUPS: tuple[tuple[str, ...], ...] = (("ip",), ("ip", "app"), ("ip", "device", "os"))
FAMILIES: dict[str, tuple[tuple[ClickCount, ...], tuple[DistinctCount, ...]]] = {
    # campaign-level popularity and reach: clicks and distinct ips of an app, a channel, ... in the last hour
    # and the 23 hours before it
    "campaign": (
        tuple(ClickCount(g, (Band(1, HOUR), Band(HOUR + 1, DAY))) for g in CAMPAIGN_GROUPS),
        tuple(DistinctCount(g, "ip", w) for g in CAMPAIGN_GROUPS for w in (HOUR, DAY)),
    ),
    # the daily cycle of an ip's activity: its clicks in the 16 hours before the seed's 8
    "ip_day": (tuple(ClickCount(g, (Band(EIGHT_HOURS + 1, DAY),)) for g in IP_DAY_GROUPS), ()),
}


def spec_with(*families: str, base: FeatureSpec = DEFAULT_SPEC) -> FeatureSpec:
    """`base` with the named FAMILIES added (their features after the base's)."""
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown feature families {sorted(unknown)}; choose from {sorted(FAMILIES)}")
    counts, distincts = list(base.counts), list(base.distincts)
    for name in families:
        counts += FAMILIES[name][0]
        distincts += FAMILIES[name][1]
    return FeatureSpec(tuple(counts), tuple(distincts), base.since_previous, base.hour_of_day, base.version)
