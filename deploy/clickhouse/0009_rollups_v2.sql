-- Analytics rollups in 32-row granules, with a copy sorted by key (issue #16).
--
-- A query reads a few dozen rollup rows, but ClickHouse reads whole granules, and every row
-- read deserialises its visitors state, wanted or not.
-- In 256-row granules the 180-day summary read 2,400 rows for its 180 day rows (the granules at
-- both ends of each monthly part), and a manager's 50 agents read every agent of each day
-- (30,000 states for 1,500 wanted): rows are sorted by bucket, then key. So `rollups_v2`:
-- - 32-row granules (`index_granularity` cannot be changed on an existing table);
-- - a projection sorted by key then bucket (`by_key`, also 32-row granules), which ClickHouse
--   reads instead when it selects fewer granules: a query filtering on agents reads each
--   agent's days, adjacent. The builder deletes superseded gens with `ALTER TABLE ... DELETE`
--   (a mutation that rewrites the parts it touches, projection included), once per pass: with a
--   lightweight `DELETE`, reads served by the projection still saw the deleted rows (chDB 4.4 /
--   ClickHouse 26.9, with `lightweight_mutation_projection_mode = 'rebuild'`), so this table
--   keeps the default mode, which refuses lightweight deletes.
-- Its gens are registered in `rollup_builds_v2`, so a builder of the previous version that is
-- still running during a rollout writes and registers only in `rollups` / `rollup_builds`, which
-- this version no longer reads (they are left for such a builder and the previous API; drop them
-- once none runs).
CREATE TABLE IF NOT EXISTS rollups_v2
(
    tenant_id     LowCardinality(String),
    cuboid        LowCardinality(String),
    grain         LowCardinality(String),
    bucket        DateTime('UTC'),
    k             String,
    gen           UInt64,
    agent_id      Nullable(String),
    program_id    Nullable(String),
    shop          Nullable(String),
    link_code     Nullable(String),
    coupon_code   Nullable(String),
    n_clicks      UInt64,
    visitors      AggregateFunction(uniqCombined(14), Nullable(String)),
    n_conversions UInt64,
    m_revenue     Decimal(38, 12),
    n_entries     UInt64,
    m_commission  Decimal(38, 12),
    n_refunds     UInt64,
    m_refunded    Decimal(38, 12),
    PROJECTION by_key
    (
        SELECT * ORDER BY tenant_id, cuboid, grain, k, bucket
    ) WITH SETTINGS (index_granularity = 32)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (tenant_id, cuboid, grain, bucket, k)
SETTINGS index_granularity = 32;

CREATE TABLE IF NOT EXISTS rollup_builds_v2
(
    tenant_id LowCardinality(String),
    day       Date,
    built_at  DateTime64(3, 'UTC'),
    until     DateTime('UTC'),
    gen       UInt64
)
ENGINE = ReplacingMergeTree(built_at)
ORDER BY (tenant_id, day);

-- The current builds and their rows, so queries keep reading rollups through the upgrade. Run
-- again after a failure, the file starts over (nothing reads these tables before it is done).
-- The builds are copied first, then the rows of those gens: a gen current when the builds were
-- read was completely written before, and its rows are deleted only a minute after a newer gen
-- replaced it, long after the rows' read started.
TRUNCATE TABLE rollup_builds_v2;

TRUNCATE TABLE rollups_v2;

INSERT INTO rollup_builds_v2 (tenant_id, day, built_at, until, gen)
SELECT tenant_id, day, built_at, until, gen FROM rollup_builds FINAL;

INSERT INTO rollups_v2
SELECT * FROM rollups
WHERE (tenant_id, toDate(bucket), gen) IN (SELECT tenant_id, day, gen FROM rollup_builds_v2 FINAL);
