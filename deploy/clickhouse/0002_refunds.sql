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

-- Refunds find their conversion by order id, which is not in the conversions' sorting key.
ALTER TABLE conversions ADD INDEX IF NOT EXISTS conversions_order_id order_id TYPE bloom_filter(0.01) GRANULARITY 1;

ALTER TABLE conversions MATERIALIZE INDEX conversions_order_id;
