-- Refunds for analytics (issue #6): one row per Shopify refund, written by the attribution
-- dataflow as it reads refunds/create. Keyed by the refund id: a replay or a retried batch writes
-- the same key again and the merge keeps one row (queries use FINAL).
-- `amount` is the merchandise subtotal of the refunded lines in the shop currency (after
-- discounts, as Shopify reports it); shipping and goodwill adjustments are not revenue and are
-- left out, as in `conversions.revenue`. `fx_rate` is NULL until the dataflow knows a rate: the
-- queries then use the rate of the order's conversion (fixed at sale).
-- Refunds carry no agent: queries attribute them through the conversion of the same order.

CREATE TABLE IF NOT EXISTS refunds
(
    tenant_id       LowCardinality(String),
    refund_id       String,
    order_id        String,
    shop            Nullable(String),
    occurred_at     DateTime64(3, 'UTC'),
    currency        LowCardinality(Nullable(String)),
    amount          Decimal(18, 4),
    fx_rate         Nullable(Decimal(18, 8)),
    line_count      UInt32,
    source_event_id String,
    version         UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, refund_id);

-- Lookups by order and by click: refunds and commission entries find their order's conversion
-- (agent, program, shop, coupon, click, fx rate) by order id, and conversions find their click's
-- link by click id; neither id leads the sorting keys of `conversions` and `clicks` (which are
-- by date for the period scans), so materialized views keep copies sorted by them. A view sees
-- the rows inserted after it exists; the INSERT ... SELECT copies those written before (a row
-- copied twice collapses in the ReplacingMergeTree).

CREATE TABLE IF NOT EXISTS conversion_orders
(
    tenant_id     LowCardinality(String),
    order_id      String,
    conversion_id String,
    agent_id      Nullable(String),
    program_id    Nullable(String),
    shop          Nullable(String),
    click_id      Nullable(String),
    coupon_code   Nullable(String),
    fx_rate       Decimal(18, 8),
    version       UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, order_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS conversion_orders_mv TO conversion_orders AS
SELECT tenant_id, order_id, conversion_id, agent_id, program_id, shop, click_id, coupon_code,
       fx_rate, version
FROM conversions;

INSERT INTO conversion_orders
SELECT tenant_id, order_id, conversion_id, agent_id, program_id, shop, click_id, coupon_code,
       fx_rate, version
FROM conversions;

CREATE TABLE IF NOT EXISTS click_links
(
    tenant_id LowCardinality(String),
    click_id  String,
    link_code String,
    version   UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, click_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS click_links_mv TO click_links AS
SELECT tenant_id, click_id, link_code, version FROM clicks;

INSERT INTO click_links SELECT tenant_id, click_id, link_code, version FROM clicks;
