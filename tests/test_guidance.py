"""Reasons a household can act on: every reason code carries what the rules let the
household do, with the rule's source, versioned with the catalogue."""

from __future__ import annotations

import dataclasses

import pytest

from features import catalogue as C

REMEDIES = {"act", "repair", "time", "never", "none"}


@pytest.mark.parametrize("reason", C.REASONS, ids=lambda r: r.code)
def test_every_reason_says_what_can_be_done_and_where_the_rule_is(reason):
    g = reason.guidance
    assert g.remedy in REMEDIES - {"none"}
    assert g.text_zh and g.text_en and g.source
    assert reason.code in {f.reason for f in C.FEATURES}  # a reason some feature gives


def test_the_guidance_follows_the_rules():
    by = C.REASONS_BY_CODE
    assert by["R04"].guidance.remedy == by["R05"].guidance.remedy == "act"  # file, restore
    penalty = by["R06"].guidance  # credit repair after the minimum publicity period
    assert penalty.remedy == "repair" and "6 months" in penalty.text_en
    assert "1 year for food, drugs and special equipment" in penalty.text_en
    assert by["R07"].guidance.remedy == "never"  # suspension, revocation, bans
    assert "revoked" in by["R07"].guidance.text_en and "bans" in by["R07"].guidance.text_en
    listing = by["R08"].guidance
    assert listing.remedy == "repair" and "1 year" in listing.text_en
    assert "3 years" in listing.text_en and "令第44号" in listing.source
    assert C.NO_ADVERSE.guidance.remedy == "none"


def test_guidance_is_versioned_with_the_catalogue(monkeypatch):
    before = C.catalogue_version()
    r = C.REASONS[0]
    changed = dataclasses.replace(
        r, guidance=dataclasses.replace(r.guidance, text_en=r.guidance.text_en + " (amended)")
    )
    monkeypatch.setattr(C, "REASONS", (changed, *C.REASONS[1:]))
    assert C.catalogue_version() != before
