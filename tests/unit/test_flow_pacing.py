"""Pacing, bidding and leases without Ray: the curve, the controller on synthetic traffic."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest

from kiki.flow import audit
from kiki.flow.campaigns import AdGroup, Campaign, CampaignStatus, PacingSettings
from kiki.flow.engine import BidEngine
from kiki.flow.exchange import Delivery, ExchangeConfig, SandboxExchange, SpendReports, Units
from kiki.flow.leases import LeaseBook
from kiki.flow.optimum import OfflineOptimum
from kiki.flow.pacing import (
    ControllerConfig,
    PacingPlan,
    TargetCurve,
    allowance_micros,
    market_shortfall,
    pace_reasons,
    pool_caps,
    update_multipliers_on_curve,
)

START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


def curve(shape: str = "even", hours: float = 24, **kw: float) -> TargetCurve:
    return TargetCurve(PacingPlan(START, START + timedelta(hours=hours), shape=shape, **kw))


def test_even_curve_is_linear_after_the_slow_start_and_done_before_the_end() -> None:
    c = curve(slow_start=0.0, fast_finish=0.0)
    assert c.share(START) == 0.0
    assert c.share(START + timedelta(hours=6)) == pytest.approx(0.25, abs=1e-4)
    assert c.share(START + timedelta(hours=24)) == 1.0
    finishing = curve(slow_start=0.0, fast_finish=0.1)
    assert finishing.share(START + timedelta(hours=21.6)) == 1.0  # 90 % of the schedule
    slow = curve(slow_start=0.1, fast_finish=0.0)
    # The first 10 % runs at half rate: its share is 0.05 / (0.05 + 0.9) of the budget.
    assert slow.share(START + timedelta(hours=2.4)) == pytest.approx(0.05 / 0.95, abs=1e-3)


def test_traffic_curve_follows_the_local_day_and_is_monotone() -> None:
    c = TargetCurve(
        PacingPlan(START, START + timedelta(hours=24), "Asia/Tokyo", "traffic", 0.0, 0.0)
    )
    moments = [START + timedelta(minutes=m) for m in range(0, 24 * 60 + 1, 10)]
    shares = [c.share(m) for m in moments]
    assert all(b >= a for a, b in itertools.pairwise(shares))
    # Tokyo is UTC+9: 15:00-21:00 UTC is its night, when little should be spent.
    night = c.share(START + timedelta(hours=21)) - c.share(START + timedelta(hours=15))
    day = c.share(START + timedelta(hours=9)) - c.share(START + timedelta(hours=3))
    assert night < day / 3


def test_allowance_never_runs_past_the_curve_or_the_budget() -> None:
    c = curve()
    done = c.target_micros(START + timedelta(hours=48), 1_000)
    assert allowance_micros(done, 1_000, 0) == 1_000
    assert allowance_micros(done, 1_000, 1_000) == 0
    noon = c.target_micros(START + timedelta(hours=12), 1_000_000)
    assert allowance_micros(noon, 1_000_000, noon + 10) == 0
    targets, budgets = np.array([noon, 5_000]), np.array([1_000_000, 4_000])
    assert allowance_micros(targets, budgets, np.array([noon - 7, 0])).tolist() == [7, 4_000]


def make_campaign(budget: int, hours: float, shape: str = "even", goal: str = "3") -> Campaign:
    return Campaign(
        tenant_id="00000000-0000-0000-0000-000000000001",
        campaign_id="c1",
        name="c1",
        status=CampaignStatus.RUNNING,
        starts_at=START,
        ends_at=START + timedelta(hours=hours),
        timezone="UTC",
        budget_micros=budget,
        currency="USD",
        goal_kind="roas",
        goal_target=Decimal(goal),
        platforms=("google_ads", "meta"),
        ad_groups=(
            AdGroup(ad_group_id="a", segment="s1", value_per_conversion=Decimal(60)),
            AdGroup(ad_group_id="b", segment="s2", value_per_conversion=Decimal(40)),
        ),
        max_bid_micros=None,
        pacing=PacingSettings(shape=shape),
    )


def run_day(
    campaign: Campaign,
    tick_s: float,
    seed: int = 0,
    controller: ControllerConfig | None = None,
    report_s: float | None = None,
) -> tuple[BidEngine, list, list]:
    """The engine against the sandbox market, ticking like the actor does, with each
    interval's spend capped at what the last tick allowed (the lease); or, with `report_s`,
    in the live market's conditions: no cap but the daily budget pushed at each report, spend
    reported every `report_s`. Returns the engine and the true spend after each tick."""
    engine = BidEngine([campaign], controller)
    units = Units(
        pool=engine.unit_pool,
        platform=engine.unit_platform,
        utc_offset_h=np.zeros(len(engine.unit_pool)),
        true_cvr=np.full(len(engine.unit_pool), 0.05),
        true_value_micros=np.full(len(engine.unit_pool), 50e6),
    )
    exchange = SandboxExchange(units, ExchangeConfig(auctions_per_s=2.0), seed)
    moments, spent = [], []
    now = campaign.starts_at
    zero = np.zeros(len(engine.unit_pool), dtype=np.int64)
    engine.observe(zero, zero, zero, zero)
    reports = SpendReports(report_s or 0.0, now)
    daily = engine.daily_budgets()
    while now <= campaign.ends_at:
        plan = engine.decide(now, now + timedelta(seconds=tick_s), np.zeros_like(zero))
        engine.granted(plan.reserve)
        exchange.bids[:] = plan.bids
        caps = engine.pool_cap if report_s is None else daily - exchange.pool_spent
        d = exchange.run(now, tick_s, caps)
        assert (np.bincount(engine.unit_pool, weights=d.spend_micros) <= caps).all()
        now += timedelta(seconds=tick_s)
        if reports.add(d, now):
            engine.observe(*reports.take())
            daily = engine.daily_budgets()
        else:
            engine.observe(zero, zero, zero, zero, fresh=False)
        moments.append(now)
        spent.append(int(exchange.pool_spent.sum()))
    return engine, moments, spent


@pytest.mark.parametrize("shape", ["even", "traffic"])
def test_controller_tracks_the_curve_on_synthetic_traffic(shape: str) -> None:
    budget = 2_000 * 1_000_000
    campaign = make_campaign(budget, hours=6, shape=shape)
    engine, moments, spent = run_day(campaign, tick_s=30)
    c = TargetCurve(campaign.pacing_plan())
    worst = max(abs(s - c.target_micros(m, budget)) for m, s in zip(moments, spent, strict=True))
    assert spent[-1] <= budget
    assert spent[-1] >= 0.98 * budget
    assert worst / budget <= 0.02
    # Bidding above the value bid (second price) was allowed only while the goal held.
    assert engine.value_total[0] / engine.spent[0] >= 3.0


def test_without_a_tick_cap_and_with_late_reports_the_curve_controller_stays_on_the_curve() -> None:
    """The live market's conditions: only the price paces. The curve controller keeps the
    campaign on its curve to the end; the fill one (which relies on the cap) buys the budget
    in the first part of the schedule, at a higher price per click."""
    budget = 1_000 * 1_000_000
    campaign = make_campaign(budget, hours=3)
    c = TargetCurve(campaign.pacing_plan())
    outcome = {}
    for kind in ("curve", "fill"):
        engine, moments, spent = run_day(campaign, 20, 1, ControllerConfig(kind=kind), 60)
        pairs = list(zip(moments, spent, strict=True))
        worst = max(abs(s - c.target_micros(m, budget)) for m, s in pairs)
        spent_out = next((m for m, s in pairs if s >= 0.99 * budget), moments[-1])
        alive = (spent_out - START) / (campaign.ends_at - START)
        outcome[kind] = (worst / budget, spent[-1], alive, spent[-1] / engine.clicks.sum())
    error, total, alive, cost_per_click = outcome["curve"]
    assert error <= 0.05 and 0.98 * budget <= total <= 1.01 * budget and alive >= 0.95
    fill_error, _, fill_alive, fill_cost_per_click = outcome["fill"]
    assert fill_error > 0.2 and fill_alive < 0.5 and fill_cost_per_click > cost_per_click


def test_the_curve_controller_moves_by_the_spend_it_wanted_against_what_it_got() -> None:
    config = ControllerConfig()
    m = np.full(5, 0.5)
    budget = np.full(5, 10_000)
    wanted = np.full(5, 100)
    got = np.array([100, 50, 200, 100, 0])
    behind = np.array([30, 30, 30, 30, 30])  # = the lag aimed at: on the curve
    capped = np.array([0.0, 0, 0, 1.0, 0])
    minutes = np.array([1.0, 1, 1, 1, 0])  # the last campaign had no report: unchanged
    moved, error = update_multipliers_on_curve(
        m, behind, wanted, got, capped, budget, minutes, np.ones(5), config
    )
    assert moved[0] == pytest.approx(0.5)  # got what it wanted
    assert moved[1] == pytest.approx(0.5 * 2 ** (1 / 3))  # half: up by 2^(1/elasticity)
    assert moved[2] == pytest.approx(0.5 * 0.5 ** (1 / 3))
    assert moved[3] == pytest.approx(0.5 * np.exp(-0.25))  # the cap held it every tick
    assert moved[4] == 0.5 and error[4] == 0.0
    # Behind the curve it wants its increment and the shortfall; bounded by floor and ceiling.
    far = update_multipliers_on_curve(
        np.array([0.9, 0.2]), np.array([5_000, -5_000]), np.array([100, 100]),
        np.array([100, 100]), np.zeros(2), np.full(2, 10_000), np.ones(2), np.ones(2), config,
    )  # fmt: skip
    assert far[0].tolist() == [1.0, 0.1] and far[1][0] > 0 > far[1][1]
    reasons = pace_reasons(config, far[1], far[0], np.ones(2))
    assert reasons.tolist() == ["behind_curve:at_ceiling", "ahead_of_curve:at_floor"]


def test_campaign_that_beats_its_goal_may_bid_above_value_but_not_one_that_misses() -> None:
    engine = BidEngine([make_campaign(10**12, hours=1, goal="2")])
    engine.spent[0], engine.value_total[0] = 100, 250
    engine.conversions[:] = 10
    assert engine.goal_met()[0]
    engine.value_total[0] = 150
    assert not engine.goal_met()[0]


def test_the_highest_bids_the_goal_allows_are_the_value_bids_until_it_is_shown_met() -> None:
    engine = BidEngine([make_campaign(10**12, hours=1, goal="2")])
    engine.multiplier[0] = 1.0
    no_values = np.zeros(4, dtype=np.int64)
    plan = engine.decide(START, START + timedelta(seconds=2), no_values)
    assert plan.ceiling_bids.tolist() == plan.bids.tolist()  # multiplier 1: the value bids
    engine.spent[0], engine.value_total[0] = 100, 250
    engine.conversions[:] = 10  # 40 conversions, ROAS 2.5 against a target of 2
    engine.multiplier[0] = 0.5
    shaded = engine.decide(START, START + timedelta(seconds=2), no_values)
    # cvr (10 + 2.5) / 50 = 0.25: value per click 15.00 (a) and 10.00 (b), / ROAS 2, x 3.
    assert sorted(set(shaded.ceiling_bids.tolist())) == [15_000_000, 22_500_000]
    assert sorted(set(shaded.bids.tolist())) == [2_500_000, 3_750_000]  # x 0.5


def test_bids_follow_value_goal_and_max_bid() -> None:
    campaign = make_campaign(10**12, hours=1, goal="2").model_copy(
        update={"max_bid_micros": 1_200_000}
    )
    engine = BidEngine([campaign])
    engine.multiplier[0] = 1.0  # the full value bid
    plan = engine.decide(START, START + timedelta(seconds=2), np.zeros(4, dtype=np.int64))
    # Prior conversion rate 5 %: value per click 3.00 (ad group a) and 2.00 (b), / ROAS 2.
    by_group = dict(zip(engine.unit_ad_group, plan.bids.tolist(), strict=True))
    assert by_group == {"a": 1_200_000, "b": 1_000_000}  # a is held at max_bid
    assert plan.push.all()  # nothing was pushed yet


def test_leases_renew_when_due_short_or_stopped_and_cap_each_tick() -> None:
    book = LeaseBook(np.arange(3), window=4)  # three campaigns, one pool each
    need = np.array([100, 100, 0])
    live = np.array([True, True, True])
    plenty = np.full(3, 10**9)
    first = book.renewals(1, need, live, plenty)
    assert first.commits == [] and first.reserves == [(0, 400), (1, 400)]
    book.opened(0, "r0", 400, 1)
    book.opened(1, "r1", 250, 1)  # partially granted
    assert book.caps(np.array([150, 150, 10])).tolist() == [150, 150, 0]
    book.spend(np.array([100, 200, 0]))
    # Pool 1 has 50 left, less than its need; pool 0's first window was staggered to 1 tick.
    second = book.renewals(2, need, live, plenty)
    assert second.commits == [(0, "r0", 100), (1, "r1", 200)]
    assert second.reserves == [(0, 400), (1, 400)]
    book.opened(0, "r0b", 400, 2)
    book.opened(1, "r1b", 400, 2)
    assert book.due.tolist()[:2] == [6, 6]  # later windows are full length
    assert book.renewals(3, need, live, plenty).commits == []  # room left and not due
    stopped = book.renewals(3, need, np.array([False, True, True]), plenty)
    assert stopped.commits == [(0, "r0b", 0)] and stopped.reserves == []
    assert book.close_all() == [(1, "r1b", 0)]


def test_a_new_lease_takes_only_its_part_of_the_budget_not_spent_or_leased() -> None:
    book = LeaseBook(np.array([0, 0, 0]), window=10)  # one campaign on three platforms
    need = np.array([300, 100, 100])
    live = np.ones(3, dtype=bool)
    # 1,000 left: parts in proportion to the needs (600/200/200), each below 10 ticks' need.
    assert book.renewals(1, need, live, np.array([1_000])).reserves == [
        (0, 600), (1, 200), (2, 200)
    ]  # fmt: skip
    book.opened(0, "r0", 600, 5)  # pool 0's lease runs to tick 6
    # Pool 0 holds 600 of the 700 left; of the 100 nobody holds, pools 1 and 2 take their
    # parts (100/500 of the needs each), leaving the rest for whichever pool renews next.
    assert book.renewals(5, need, live, np.array([700])).reserves == [(1, 20), (2, 20)]
    # Nothing free: no reservation is asked for (SyncShield would refuse it anyway).
    assert book.renewals(5, need, live, np.array([600])).reserves == []


def test_records_cover_only_live_campaigns_with_their_labels() -> None:
    running = make_campaign(10**9, hours=1)
    later = running.model_copy(
        update={"campaign_id": "c2", "starts_at": START + timedelta(hours=1),
                "ends_at": START + timedelta(hours=2)}
    )  # fmt: skip
    engine = BidEngine([later, running])
    plan = engine.decide(START, START + timedelta(seconds=2), np.zeros(8, dtype=np.int64))
    unchanged = np.full(8, "unchanged", dtype=object)
    outcome = audit.TickOutcome(audit.budget_reasons(engine, plan, {}), unchanged)
    rows = list(audit.records(engine, plan, outcome, 3, START, 1).rows())
    assert [(r[3], r[4], r[5]) for r in rows] == [
        ("c1", group, platform) for platform in ("google_ads", "meta") for group in ("a", "b")
    ]
    assert {(r[0], r[1], r[2], r[16]) for r in rows} == {(3, START, running.tenant_id, 1)}


def test_decision_log_lines_are_json_and_complete() -> None:
    engine = BidEngine([make_campaign(10**9, hours=1)])
    plan = engine.decide(START, START + timedelta(seconds=2), np.zeros(4, dtype=np.int64))
    outcome = audit.TickOutcome(
        audit.budget_reasons(engine, plan, {1: "denied:schedule"}),
        np.array(["pushed", 'rejected: "bad" bid', "pushed", "unchanged"], dtype=object),
    )
    decisions = audit.records(engine, plan, outcome, 7, START, 0)
    rows = list(decisions.rows())
    assert len(rows) == len(decisions) == 4 and len(rows[0]) == len(audit.COLUMNS)
    lines = audit.log_lines(decisions).splitlines()
    assert all(line.startswith("decision: ") for line in lines)
    parsed = [json.loads(line.removeprefix("decision: ")) for line in lines]
    assert {p["result"] for p in parsed} >= {'rejected: "bad" bid'}
    # The budget's reason, then the multiplier's: a new campaign starts at the floor.
    pace = "; pace:on_curve:at_floor"
    assert {p["reason"] for p in parsed} == {"reserved" + pace, "denied:schedule" + pace}
    assert all(p["tick"] == 7 and p["campaign"] == "c1" for p in parsed)
    (usage,) = audit.usage(rows)  # one tenant, one tick, one shard
    assert usage.quantity == 4 and usage.metric_code == "bid_decisions"
    assert usage.transaction_id == audit.usage(rows)[0].transaction_id  # the same rows bill once


def test_any_platform_may_take_the_whole_allowance_but_together_never_past_the_budget() -> None:
    allowance = np.array([1_000, 0, 900])
    pool_campaign = np.array([0, 0, 0, 1, 2, 2])
    plenty = np.array([10**9, 10**9, 10**9])
    assert pool_caps(allowance, pool_campaign, plenty).tolist() == [1_000] * 3 + [0, 900, 900]
    # Near the end of the budget the platforms share what is left equally, never more.
    last = pool_caps(allowance, pool_campaign, np.array([1_001, 0, 500]))
    assert last.tolist() == [333, 333, 333, 0, 250, 250]
    even = pool_caps(allowance, pool_campaign, plenty, "even")
    assert even.tolist() == [333, 333, 333, 0, 450, 450]


def test_market_shortfall_is_what_even_a_bidder_seeing_every_auction_falls_behind() -> None:
    c = curve(slow_start=0.0, fast_finish=0.0, hours=4)  # 25 % of the budget an hour
    hours = [START + timedelta(hours=h) for h in (1, 2, 3, 4)]
    # Offered 300, 100, 400, 1,000 an hour for a 1,000 budget: an hour's surplus cannot be
    # banked for later, so the second hour leaves it 150 behind (250 + 100 of 500), the third
    # makes it up to 750, the fourth to 1,000.
    assert market_shortfall(c, 1_000, hours, [300, 100, 400, 1_000]) == pytest.approx(0.15)
    assert market_shortfall(c, 1_000, hours, [1_000] * 4) == 0.0
    assert market_shortfall(c, 0, hours, [0] * 4) == 0.0


def test_the_sandbox_offers_at_least_what_was_bought_at_the_same_bids() -> None:
    units = Units(
        pool=np.array([0, 0, 1]),
        platform=["google_ads", "google_ads", "meta"],
        utc_offset_h=np.zeros(3),
        true_cvr=np.full(3, 0.05),
        true_value_micros=np.full(3, 50e6),
    )
    exchange = SandboxExchange(units, ExchangeConfig(auctions_per_s=5.0), seed=4)
    exchange.bids[:] = exchange.reach_bids[:] = [2_000_000, 500_000, 0]
    uncapped = exchange.run(START, 60, np.full(2, 10**12))
    # Uncapped, the same bids buy exactly what an omniscient bidder could have at them.
    assert (uncapped.reachable_micros == uncapped.spend_micros).all()
    assert uncapped.spend_micros[2] == 0 and uncapped.spend_micros[:2].all()
    capped = exchange.run(START, 60, np.array([1_000_000, 0]))
    assert (capped.spend_micros <= capped.reachable_micros).all()
    assert capped.reachable_micros.sum() > capped.spend_micros.sum()


def test_first_price_pays_the_bid_second_price_the_competing_bid() -> None:
    units = Units(
        pool=np.array([0]),
        platform=["google_ads"],
        utc_offset_h=np.zeros(1),
        true_cvr=np.full(1, 0.05),
        true_value_micros=np.full(1, 50e6),
    )
    runs = {}
    for auction in ("second", "first"):
        exchange = SandboxExchange(
            units, ExchangeConfig(auctions_per_s=5.0, auction={"google_ads": auction}), seed=2
        )
        exchange.bids[:] = 1_500_000
        runs[auction] = exchange.run(START, 600, np.full(1, 10**12))
    second, first = runs["second"], runs["first"]
    assert first.clicks[0] == second.clicks[0] > 0  # the same auctions won
    assert first.spend_micros[0] == 1_500_000 * first.clicks[0]
    assert second.spend_micros[0] < first.spend_micros[0]


def test_the_offline_optimum_buys_the_cheapest_units_of_each_span_of_the_curve() -> None:
    # One campaign, two units: unit 1's clicks are worth twice unit 0's (weights 1 and 2).
    optimum = OfflineOptimum(
        np.array([0, 0]), np.array([1.0, 2.0]), np.array([[300_000.0, 300_000.0]])
    )
    optimum.add(0, np.array([0, 0, 1]), np.array([100_000, 150_000, 400_000]))
    # Span 1 offers too little: what it could not buy is carried into span 2.
    optimum.add(1, np.array([0, 1, 1]), np.array([100_000, 100_000, 1_000_000]))
    # Scaled to mean weight 1: a click of unit 0 is worth 2/3 a unit, of unit 1 4/3. Span 1
    # buys cheapest per unit first: 100k (150k a unit), 150k (225k), then 50k of the 400k click
    # (300k a unit): 300k for 2/3 + 2/3 + 1/6. Span 2: 100k (75k a unit), 100k (150k), and
    # 100k of the 1M click: 300k for 4/3 + 2/3 + 2/15.
    units = 2 / 3 + 2 / 3 + 1 / 6 + 4 / 3 + 2 / 3 + 2 / 15
    assert optimum.cost_per_unit()[0] == pytest.approx(600_000 / units, rel=1e-6)
    assert optimum.own_units(np.array([3, 0]))[0] == pytest.approx(2.0)


def test_spend_reports_hold_delivery_until_a_report_is_due() -> None:
    reports = SpendReports(60, START)
    one = np.array([5])
    delivery = Delivery(one, one, one * 100, one * 0, one * 0, one)
    assert not reports.add(delivery, START + timedelta(seconds=30))
    assert reports.add(delivery, START + timedelta(seconds=60))
    assert reports.take()[0].tolist() == [1_000]  # spend of both intervals
    assert SpendReports(0, START).add(delivery, START + timedelta(seconds=2))


def test_a_rebuild_with_the_same_campaigns_changes_no_decision() -> None:
    """A shard rebuilds its engine whenever campaigns change; the campaigns it keeps must
    step, bid and spend as if nothing happened (the controller's next step compares the
    spend reported with the last decide's target, which the new engine must have too)."""
    campaign = make_campaign(1_000 * 1_000_000, hours=1)
    engine = BidEngine([campaign])
    pools, units = len(engine.pool_campaign), len(engine.unit_pool)
    values = np.zeros(units, dtype=np.int64)
    engine.observe(values, values, values, values)
    rng = np.random.default_rng(0)
    engines = [engine]
    for k in range(40):
        now = START + timedelta(seconds=20 * k)
        spend = rng.integers(0, 2_000_000, units)
        clicks = rng.integers(0, 3, units)
        for e in engines:
            assert e.observe(spend, clicks, clicks // 2, spend * 3).shape == (pools,)
        plans = [e.decide(now, now + timedelta(seconds=20), values) for e in engines]
        if k == 20:  # rebuilt from the first engine just after a decide, as a reload is
            rebuilt = BidEngine([campaign])
            rebuilt.carry_from(engine)
            engines.append(rebuilt)
        if len(plans) == 2:
            assert plans[1].bids.tolist() == plans[0].bids.tolist()
    assert engines[1].multiplier.tolist() == engines[0].multiplier.tolist()
    assert engines[1].spent.tolist() == engines[0].spent.tolist()
    assert engines[1].pushed_bids.tolist() == engines[0].pushed_bids.tolist()


def test_the_uniform_bid_pays_its_price_at_first_price_and_is_the_optimum_at_second() -> None:
    budgets = np.array([[600_000.0]])
    unit, price = np.array([0, 0, 0]), np.array([100_000, 200_000, 400_000])
    first = OfflineOptimum(np.array([0]), np.array([1.0]), budgets)
    first.add(0, unit, price, np.array([True, True, True]))
    # One bid for every auction, paid when it wins: 300k wins the two cheaper clicks and
    # spends the 600k; the optimum pays 100k + 200k + 300k of the 400k click, 2.75 clicks.
    assert first.uniform_bid_cost_per_unit()[0] == pytest.approx(300_000, rel=1e-6)
    assert first.cost_per_unit()[0] == pytest.approx(600_000 / 2.75, rel=1e-6)
    second = OfflineOptimum(np.array([0]), np.array([1.0]), budgets)
    second.add(0, unit, price)
    assert second.uniform_bid_cost_per_unit()[0] == pytest.approx(second.cost_per_unit()[0])
