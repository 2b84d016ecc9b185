-- Week and month rollup rows (issue #16): a summary over months reads a few pre-merged visitor
-- states instead of one per day (reading and deserialising `uniqCombined(14)` states was the
-- cost of every summary). The builder writes `rollups` rows of grain 'w' (UTC weeks from Monday)
-- and 'M' (UTC months), bucket = the span's start, by summing the current day rows of the span's
-- days and merging their states (`api.analytics.builder`), never from anything else, so a span
-- row equals the sum of its days' rows. No `rollups` DDL changes: `grain` is a string.
--
-- One row per (tenant, grain, start) built: the gen of its rows and the gens of the day builds
-- it summed (`sources`, in day order). A query reads a span only while every one of its days is
-- current (built whole, no touch after the day's build) and still has that gen; otherwise it reads
-- the days (or their hours, or raw rows), so a late row in an old week makes the week and its
-- month read from days until the builder has rebuilt the day and then the week and the month.
CREATE TABLE IF NOT EXISTS rollup_spans
(
    tenant_id LowCardinality(String),
    grain     LowCardinality(String),
    start     DateTime('UTC'),
    built_at  DateTime64(3, 'UTC'),
    gen       UInt64,
    sources   Array(UInt64)
)
ENGINE = ReplacingMergeTree(built_at)
ORDER BY (tenant_id, grain, start);
