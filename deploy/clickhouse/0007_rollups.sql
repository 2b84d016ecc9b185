-- Analytics rollups (issue #16).
--
-- 1. Commission rows carry what the dashboard filters and groups them by: the order's shop, its
--    winning coupon and its winning link, written by the dataflow from the attribution decision
--    (agent and program were already there). No query looks an entry's conversion up by order id.
ALTER TABLE commission_events
    ADD COLUMN IF NOT EXISTS shop LowCardinality(Nullable(String)),
    ADD COLUMN IF NOT EXISTS link_code LowCardinality(Nullable(String)),
    ADD COLUMN IF NOT EXISTS coupon_code Nullable(String);

-- Rows written before: write each again with its order's shop, coupon and link (the row's link,
-- else its click's link) and the same version; ReplacingMergeTree keeps the last inserted of
-- equal versions. Entries whose order has no attributed conversion row keep NULLs.
INSERT INTO commission_events (tenant_id, entry_id, agent_id, program_id, conversion_id,
    order_id, line_item_id, kind, status, level, amount, currency, fx_rate, rule_id,
    rule_version, occurred_at, source_event_id, version, shop, link_code, coupon_code)
SELECT e.tenant_id, e.entry_id, e.agent_id, e.program_id, e.conversion_id, e.order_id,
       e.line_item_id, e.kind, e.status, e.level, e.amount, e.currency, e.fx_rate, e.rule_id,
       e.rule_version, e.occurred_at, e.source_event_id, e.version, c.shop,
       nullIf(ifNull(c.link_code, l.link_code), ''), c.coupon_code
FROM (SELECT * FROM commission_events FINAL
      WHERE shop IS NULL AND link_code IS NULL AND coupon_code IS NULL) AS e
INNER JOIN (SELECT tenant_id, order_id, shop, link_code, click_id, coupon_code
            FROM conversion_orders FINAL WHERE agent_id IS NOT NULL) AS c
    ON e.tenant_id = c.tenant_id AND e.order_id = c.order_id
LEFT JOIN (SELECT tenant_id, click_id, any(link_code) AS link_code FROM click_links
           WHERE click_id IN (SELECT click_id FROM conversion_orders
                              WHERE link_code IS NULL AND click_id IS NOT NULL)
           GROUP BY tenant_id, click_id) AS l
    ON c.tenant_id = l.tenant_id AND c.click_id = l.click_id;

-- 2. Which hours changed: every insert into a table analytics reads records the (tenant, UTC
--    hour) of its rows with the time of the insert; the latest touch per hour is kept. An hour
--    whose rollup was built before its latest touch is stale: queries read its raw rows and the
--    builder (`api.analytics.rollups`) rebuilds it. A replayed or retried row touches its hour
--    too, so it is never counted from a rollup built without it, nor twice (builds read FINAL).
CREATE TABLE IF NOT EXISTS rollup_touches
(
    tenant_id  LowCardinality(String),
    hour       DateTime('UTC'),
    touched_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(touched_at)
ORDER BY (tenant_id, hour);

CREATE MATERIALIZED VIEW IF NOT EXISTS clicks_touch_mv TO rollup_touches (tenant_id LowCardinality(String), hour DateTime('UTC')) AS
SELECT DISTINCT tenant_id, toStartOfHour(occurred_at) AS hour FROM clicks;

CREATE MATERIALIZED VIEW IF NOT EXISTS conversions_touch_mv TO rollup_touches (tenant_id LowCardinality(String), hour DateTime('UTC')) AS
SELECT DISTINCT tenant_id, toStartOfHour(occurred_at) AS hour FROM conversions;

CREATE MATERIALIZED VIEW IF NOT EXISTS commission_touch_mv TO rollup_touches (tenant_id LowCardinality(String), hour DateTime('UTC')) AS
SELECT DISTINCT tenant_id, toStartOfHour(occurred_at) AS hour FROM commission_events;

CREATE MATERIALIZED VIEW IF NOT EXISTS refunds_touch_mv TO rollup_touches (tenant_id LowCardinality(String), hour DateTime('UTC')) AS
SELECT DISTINCT tenant_id, toStartOfHour(occurred_at) AS hour FROM refunds;

-- A refund counts through its order's conversion, which may be written after the refund (a
-- refund delivered before its order, an order replayed once its fx rate exists): writing a
-- conversion touches the hours of its order's refunds too. `refund_hours` is a Join-engine
-- table (an in-memory hash table by order, kept on disk), so the view looks the inserted
-- orders up in it without reading a table; a replayed refund adds a duplicate entry, which
-- only touches the same hour twice.
CREATE TABLE IF NOT EXISTS refund_hours
(
    tenant_id String,
    order_id  String,
    hour      DateTime('UTC')
)
ENGINE = Join(ALL, INNER, tenant_id, order_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS refund_hours_mv TO refund_hours AS
SELECT tenant_id, order_id, toStartOfHour(occurred_at) AS hour FROM refunds;

CREATE MATERIALIZED VIEW IF NOT EXISTS refund_orders_touch_mv TO rollup_touches (tenant_id LowCardinality(String), hour DateTime('UTC')) AS
SELECT c.tenant_id AS tenant_id, r.hour AS hour
FROM conversions AS c
INNER JOIN refund_hours AS r ON c.tenant_id = r.tenant_id AND c.order_id = r.order_id;

-- 3. The rollups: per tenant, "cuboid" (the dimensions kept: total = none; agent, program, shop,
--    link or coupon = that one) and grain (m = minute, total only; h = UTC hour, total and
--    agent; d = UTC day; `api.analytics.rollups.GRAINS`), the sums and a mergeable
--    `uniqCombined(14)` state of click visitors. A single-
--    dimension cuboid keeps only rows that have that dimension (its value also in `k`, the sort
--    key). `gen` is the build that wrote the row: a day is rebuilt whole under a new gen, and
--    queries read only the gens `rollup_builds` names as current, so a rebuild in progress or an
--    older build is never mixed in. Money is in the reporting currency, unrounded (scale 12),
--    exactly the sums the raw queries compute.
CREATE TABLE IF NOT EXISTS rollups
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
ORDER BY (tenant_id, cuboid, grain, bucket, k)
-- Small granules: a query reads a few dozen rows of one cuboid, and every row read costs the
-- deserialisation of its visitors state (8192-row granules made a 30-day total read 49k).
SETTINGS index_granularity = 256;

-- One row per (tenant, UTC day) built: when the build read the raw rows (`built_at`, taken
-- before it started, so a row inserted during the build leaves its hour stale), up to which hour
-- it covers (`until`: the day's end, or the start of the hour that was still open) and its gen.
CREATE TABLE IF NOT EXISTS rollup_builds
(
    tenant_id LowCardinality(String),
    day       Date,
    built_at  DateTime64(3, 'UTC'),
    until     DateTime('UTC'),
    gen       UInt64
)
ENGINE = ReplacingMergeTree(built_at)
ORDER BY (tenant_id, day);

-- Rows written before this file: every hour that has rows is stale until built; refunds are
-- findable by order.
INSERT INTO rollup_touches (tenant_id, hour)
SELECT DISTINCT tenant_id, toStartOfHour(occurred_at) FROM clicks
UNION DISTINCT SELECT DISTINCT tenant_id, toStartOfHour(occurred_at) FROM conversions
UNION DISTINCT SELECT DISTINCT tenant_id, toStartOfHour(occurred_at) FROM commission_events
UNION DISTINCT SELECT DISTINCT tenant_id, toStartOfHour(occurred_at) FROM refunds;

INSERT INTO refund_hours
SELECT DISTINCT tenant_id, order_id, toStartOfHour(occurred_at) FROM refunds;
