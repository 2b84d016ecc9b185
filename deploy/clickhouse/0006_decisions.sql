-- Every order explained (issue #16): the attribution decision of every decided order, attributed
-- or not, on its `conversions` row. The dataflow already writes one row per decided order (the
-- rule is `unattributed` when no agent won), so the explanation lives beside the facts it
-- explains, is replaced with them when an edit re-emits the row (same key, newer version), and
-- replays rewrite it identically. Analytics queries never read these columns (columnar storage:
-- they cost nothing there).
--   explanation: the decision in words (the winner, and what it beat);
--   rejected: every candidate that lost, in the decision's canonical order (binding, coupons as
--     on the order, clicks by time), with `code` (machine-readable, `schemas.ledger.
--     RejectionCode`) and `reason` (the words). `ref` is the click id, coupon code or bound
--     customer id; `at` the click's time or the binding's start.
-- Rows written before this file read '' and [] (the decision was not kept then).
ALTER TABLE conversions
    ADD COLUMN IF NOT EXISTS explanation String DEFAULT '' CODEC(ZSTD(3)),
    ADD COLUMN IF NOT EXISTS rejected Array(Tuple(
        kind String,
        ref String,
        agent_id Nullable(String),
        program_id Nullable(String),
        link_code Nullable(String),
        at Nullable(DateTime64(3, 'UTC')),
        code String,
        reason String
    )) CODEC(ZSTD(3));

-- `GET /v1/conversions/{order_id}` and `?order=` find an order by id or name; neither leads the
-- sorting key (tenant, day, conversion id), so a lookup table sorted by them gives the order's
-- (time, conversion id), with which the `conversions` row is read by its sorting key: two
-- primary-key reads, a few milliseconds whatever the table's size (bloom filter skip indexes,
-- tried first, still read 40-65 ms of index and false-positive granules at 10M orders). One row
-- per order id and one per order name (`ref`); the view sees the rows inserted after it exists,
-- the INSERT ... SELECT copies those written before (a row copied twice collapses).
CREATE TABLE IF NOT EXISTS conversion_refs
(
    tenant_id     LowCardinality(String),
    ref           String,
    occurred_at   DateTime64(3, 'UTC'),
    conversion_id String,
    version       UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, ref, conversion_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS conversion_refs_mv TO conversion_refs AS
SELECT tenant_id, ref, occurred_at, conversion_id, version
FROM conversions
ARRAY JOIN arrayDistinct(arrayFilter(x -> x != '', [order_id, ifNull(order_name, '')])) AS ref;

INSERT INTO conversion_refs
SELECT tenant_id, ref, occurred_at, conversion_id, version
FROM conversions
ARRAY JOIN arrayDistinct(arrayFilter(x -> x != '', [order_id, ifNull(order_name, '')])) AS ref;
