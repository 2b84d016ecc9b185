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
-- sorting key (tenant, day, conversion id), so bloom filters let the lookup skip the granules
-- that cannot hold it instead of reading every order id of the tenant.
ALTER TABLE conversions
    ADD INDEX IF NOT EXISTS order_id_bloom order_id TYPE bloom_filter(0.01) GRANULARITY 1,
    ADD INDEX IF NOT EXISTS order_name_bloom order_name TYPE bloom_filter(0.01) GRANULARITY 1;

ALTER TABLE conversions MATERIALIZE INDEX order_id_bloom;

ALTER TABLE conversions MATERIALIZE INDEX order_name_bloom;
