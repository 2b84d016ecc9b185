-- Month rows of the analytics totals (issue #16).
--
-- A 180-day summary merged 180 day states of the totals (uniqCombined(14): about 45 us each,
-- two threads) plus their reads over 7 monthly parts. The builder now also sums each whole UTC
-- month's current day rows of the totals into one month row (grain 'mon', bucket = the month's
-- first day, in `rollups_v2`, in that month's partition), under a gen of its own, and registers
-- it here with the gen of every day it summed, in day order, only after its rows are written.
-- A query reads a month row only while every day of the month is read from day rows under
-- exactly those gens (`api.analytics.rollups.plan`): a late, retried or replayed row makes its
-- hour read raw and its month read as days; its day's rebuild changes that day's gen, so the
-- month is read as days until the builder sums it again from the rebuilt days.
-- Nothing to fill here: the builder's next pass sums every whole month whose days are built.
CREATE TABLE IF NOT EXISTS rollup_months
(
    tenant_id LowCardinality(String),
    month     Date,
    built_at  DateTime64(3, 'UTC'),
    gen       UInt64,
    day_gens  Array(UInt64)
)
ENGINE = ReplacingMergeTree(built_at)
ORDER BY (tenant_id, month);
