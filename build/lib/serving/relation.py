"""A relation before an answer: what entitles a platform to be told about a household.

The pilot opens the regulator's records so that a platform can open and keep *its own*
merchants' payment codes (minimum necessity). So a platform is told a household's score,
class, reasons or changes only while it has a relation with that household:

- **onboarding**: it verified the household with a match on the operator's identity
  (operator name or ID number, :data:`serving.limits.RELATION_FIELDS`; the shop's name
  alone is not enough, anyone reads it off the shop front) in the last
  :data:`RELATION_DAYS` days: verify, then score; or
- **its merchant**: it watches the household (a watch is made under the rule above and
  renewed by watching again while the merchant stays with the platform): periodic review
  of its merchants through ``/v1/score_batch`` and the change feed.

A household without a relation is refused with ``no_relation`` (403 on ``/v1/score``, the
item's error in a batch or a watch) *before* the register is read, so the refusal says
nothing about the household, not even whether it exists. The refusal is audited, and the
household is charged to the key's and the platform's daily household budgets
(:meth:`serving.limits.VerifyLimits.charge`): a walk of the register ends at the budget,
with ``429 household_budget_exhausted``. A related household costs nothing, so a review of
any number of watched merchants never meets a budget.
"""

from __future__ import annotations

from datetime import date

from serving.keys import ApiKey
from serving.limits import Asker, VerifyLimits
from serving.watch import WatchStore

#: A verification with an operator match makes a relation for this many days.
RELATION_DAYS = 30
NO_RELATION = "no_relation"
NO_RELATION_MESSAGE = (
    f"this platform has no relation with this household: verify the operator first (a "
    f"match in the last {RELATION_DAYS} days) or watch it as a merchant"
)


def related(
    limits: VerifyLimits, watches: WatchStore, platform: str, codes: list[str], today: date
) -> set[str]:
    """Which of ``codes`` the platform has a relation with today."""
    matched = limits.matched_since(platform, codes, RELATION_DAYS)
    rest = [c for c in codes if c not in matched]
    return matched | watches.watching(platform, rest, today) if rest else matched


def screen(
    limits: VerifyLimits, watches: WatchStore, asker: Asker, codes: list[str], today: date
) -> dict[str, str]:
    """The codes the asker must not be told about, each with its refusal code:
    ``no_relation``, or a budget's code once the unrelated ones spent it (they are
    charged in order)."""
    known = related(limits, watches, asker.platform, codes, today)
    unrelated = [c for c in dict.fromkeys(codes) if c not in known]
    if not unrelated:
        return {}
    over = limits.charge(asker, unrelated)
    return {c: over.get(c, NO_RELATION) for c in unrelated}


def asker_of(key: ApiKey) -> Asker:
    """The budgets of an authenticated key."""
    return Asker(key.platform, key.key_id, key.daily_households, key.platform_daily_households)
