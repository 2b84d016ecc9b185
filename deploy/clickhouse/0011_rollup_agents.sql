-- The agent rollup rows again, sorted by agent (issue #16).
--
-- A manager's or an agent's query reads a few agents' day and hour rows of the `agent` cuboid.
-- In `rollups_v2` ClickHouse finds them through the `by_key` projection, after analysing the
-- table's index *and* the projection's (about 1.5 ms each for 50 agents) and weighing the two;
-- the manager's 30-day summary still read 4,544 rows in 92 ranges. `rollup_agents` holds the
-- same rows (the builder copies them from `rollups_v2` right after writing them, under the
-- same gen, before it registers the gen), sorted by (tenant, grain, agent, bucket) in 16-row
-- granules, so a query narrowed on agents reads each agent's days side by side with one index
-- analysis and no projection. Measured on copies of the 10M bench's agent rows (2026-12-07,
-- the manager's summary SQL, 25 interleaved runs at load 3-4, median ms): `rollups_v2` through
-- `by_key` 33.0; (tenant, agent, grain, bucket) in 32-row granules 36.8 (no faster: ClickHouse
-- searches each agent's run for its day rows among its hour rows); (tenant, grain, agent,
-- bucket) in 32-row granules 29.9, 16-row 26.1, 8-row 25.3; day rows only, 8-row 23.6.
-- The breakdowns over every agent keep reading `rollups_v2` (sorted by bucket: a period's rows
-- of every agent are adjacent there, not here).
-- No materialized view: the builder writes it (a view on the raw tables costs every insert).
CREATE TABLE IF NOT EXISTS rollup_agents
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
    m_refunded    Decimal(38, 12)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (tenant_id, grain, k, bucket)
SETTINGS index_granularity = 16;

-- The gen of a day's rows in `rollup_agents` (0: none). A builder of this version writes a
-- day's agent rows there under the day's own gen and registers `agent_gen = gen`; a day built
-- before (or by a builder of the previous version during a rollout, which leaves the default 0)
-- is read from `rollups_v2` until this version's builder copies its rows under a new gen and
-- registers that (`api.analytics.builder`: "keying"). A query reads `rollup_agents` only when
-- every day and hour it reads from rollups has an agent gen.
ALTER TABLE rollup_builds_v2 ADD COLUMN IF NOT EXISTS agent_gen UInt64 DEFAULT 0;
