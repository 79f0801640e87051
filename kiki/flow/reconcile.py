"""Reconciliation of a day in the live market: KIKI's committed spend against each platform's
own report, per campaign and platform, and the over-delivery a platform owes back.

KIKI's side is what committed budget leases charged of that platform day's reports
(`platform_spend_marks`, written with each commit). The platform's side is its report for the
day, fetched anew. Over-delivery that a platform owes back is the part of a platform campaign's
delivery beyond the most its own terms allow on the highest daily budget KIKI pushed that day
(kiki.flow.caps). No platform offers an API to file such a claim: where a platform documents
that it credits or never charges such spend (`BudgetTerms.credit == "automatic"`), the claim
is a record to match against its invoice; elsewhere the difference is listed for a dispute
through the platform's support, and no claim is made up.

`reconcile` is pure; `platform_spend` fetches the reports through the connectors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from typing import Literal

from pydantic import BaseModel

from kiki.flow.campaigns import Campaign
from kiki.flow.caps import TERMS, most_delivered
from kiki.flow.connectors.base import PlatformConnector

LineKey = tuple[str, str, str]  # tenant, campaign, platform
CampaignRef = tuple[str, str, str, str, str]  # tenant, campaign, platform, account, campaign ref


class CreditClaim(BaseModel):
    """Over-delivery a platform's terms say it credits (or never charges)."""

    tenant_id: str
    campaign_id: str
    platform: str
    account_id: str
    campaign_ref: str
    day: date
    currency: str
    amount_micros: int
    basis: str  # how the amount follows from the platform's terms
    process: str  # what the platform documents; never an API call it does not have


class ReconcileLine(BaseModel):
    tenant_id: str
    campaign_id: str
    platform: str
    currency: str
    committed_micros: int  # what KIKI's committed leases charged of the day's reports
    reported_micros: int  # what the platform reports for the day now
    difference_micros: int  # reported - committed: > 0 delivered beyond what KIKI charged
    status: Literal["match", "platform_higher", "kiki_higher"]
    budget_pushed_micros: int | None  # the highest daily budgets pushed that day, summed
    over_limit_micros: int  # delivery beyond the platform's own daily limit on that budget
    credit: Literal["automatic", "none"]


class Reconciliation(BaseModel):
    day: date
    lines: list[ReconcileLine]
    claims: list[CreditClaim]
    differences: int  # lines whose two sides differ


def reconcile(
    day: date,
    committed: Mapping[LineKey, int],
    reported: Mapping[CampaignRef, int],
    pushed: Mapping[CampaignRef, int],
    currencies: Mapping[tuple[str, str], str],
) -> Reconciliation:
    """Per (tenant, campaign, platform): both sides and their difference; per platform
    campaign with a budget pushed: the over-delivery beyond the platform's own limit, as a
    claim where the platform documents giving it back. `currencies`: per (tenant, campaign)."""
    over: dict[LineKey, int] = {}
    budgets: dict[LineKey, int] = {}
    claims: list[CreditClaim] = []
    for ref in sorted(set(reported) | set(pushed)):
        tenant, campaign, platform, account, campaign_ref = ref
        line = (tenant, campaign, platform)
        if ref not in pushed:
            continue
        budget = pushed[ref]
        budgets[line] = budgets.get(line, 0) + budget
        limit = most_delivered(platform, budget)
        beyond = max(0, reported.get(ref, 0) - limit)
        over[line] = over.get(line, 0) + beyond
        terms = TERMS[platform]
        if beyond and terms.credit == "automatic":
            claims.append(
                CreditClaim(
                    tenant_id=tenant,
                    campaign_id=campaign,
                    platform=platform,
                    account_id=account,
                    campaign_ref=campaign_ref,
                    day=day,
                    currency=currencies[(tenant, campaign)],
                    amount_micros=beyond,
                    basis=f"delivered {reported[ref]} micros; the platform delivers at most "
                    f"{terms.day_factor} x the daily budget ({budget} micros pushed) = {limit}",
                    process=terms.credit_note,
                )
            )
    reported_lines: dict[LineKey, int] = {}
    for (tenant, campaign, platform, _, _), micros in reported.items():
        key = (tenant, campaign, platform)
        reported_lines[key] = reported_lines.get(key, 0) + micros
    lines = []
    for key in sorted(set(committed) | set(reported_lines)):
        ours, theirs = committed.get(key, 0), reported_lines.get(key, 0)
        difference = theirs - ours
        lines.append(
            ReconcileLine(
                tenant_id=key[0],
                campaign_id=key[1],
                platform=key[2],
                currency=currencies.get((key[0], key[1]), ""),
                committed_micros=ours,
                reported_micros=theirs,
                difference_micros=difference,
                status="match"
                if difference == 0
                else ("platform_higher" if difference > 0 else "kiki_higher"),
                budget_pushed_micros=budgets.get(key),
                over_limit_micros=over.get(key, 0),
                credit=TERMS[key[2]].credit,
            )
        )
    return Reconciliation(
        day=day,
        lines=lines,
        claims=claims,
        differences=sum(line.status != "match" for line in lines),
    )


async def platform_spend(
    connectors: Mapping[str, PlatformConnector], campaigns: Iterable[Campaign], day: date
) -> dict[CampaignRef, int]:
    """Each platform's reported spend on `day` per KIKI campaign and platform campaign, for
    the ad groups KIKI's campaigns map to (one report call per platform and account)."""
    owner: dict[tuple[str, str, str], CampaignRef] = {}  # platform, account, ad group -> ref
    for campaign in campaigns:
        for group in campaign.ad_groups:
            for platform, ref in group.platform_refs.items():
                owner[(platform, ref.account_id, ref.ad_group_ref)] = (
                    campaign.tenant_id,
                    campaign.campaign_id,
                    platform,
                    ref.account_id,
                    ref.campaign_ref,
                )
    spend: dict[CampaignRef, int] = {}
    for platform, account in sorted({(p, a) for p, a, _ in owner if p in connectors}):
        for row in await connectors[platform].spend_report(account, day, day):
            ref = owner.get((platform, account, row.ad_group_ref))
            if ref is not None and row.day == day:
                spend[ref] = spend.get(ref, 0) + row.spend_micros
    return spend
