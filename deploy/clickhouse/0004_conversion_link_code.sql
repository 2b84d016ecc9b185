-- The winning click's link on the conversion row (issue #6): the dataflow knows it when it
-- attributes the order, so the link breakdown and filter no longer look each conversion's click
-- up in `click_links` (a full scan: click ids are random). NULL = no click (coupon, binding,
-- unattributed) or a row written without it; queries then fall back to the lookup by click id.
ALTER TABLE conversions ADD COLUMN IF NOT EXISTS link_code Nullable(String);

ALTER TABLE conversion_orders ADD COLUMN IF NOT EXISTS link_code Nullable(String);

-- In place, so no insert into `conversions` goes uncopied while the view changes.
ALTER TABLE conversion_orders_mv MODIFY QUERY
SELECT tenant_id, order_id, conversion_id, agent_id, program_id, shop, click_id, coupon_code,
       fx_rate, version, link_code
FROM conversions;

-- Rows written before: write each click-attributed row again with its click's link and the
-- same version (ReplacingMergeTree keeps the last inserted of equal versions, and a newer
-- version written meanwhile still wins); the view copies them into `conversion_orders`.
-- Conversions whose click is not in `click_links` keep NULL, as the lookup found nothing either.
INSERT INTO conversions (tenant_id, conversion_id, shop, order_id, order_name, occurred_at,
    attributed_at, rule, agent_id, program_id, click_id, coupon_code, customer_id,
    is_new_customer, currency, revenue, fx_rate, source_event_id, version, link_code)
SELECT c.tenant_id, c.conversion_id, c.shop, c.order_id, c.order_name, c.occurred_at,
       c.attributed_at, c.rule, c.agent_id, c.program_id, c.click_id, c.coupon_code,
       c.customer_id, c.is_new_customer, c.currency, c.revenue, c.fx_rate, c.source_event_id,
       c.version, l.link_code
FROM (SELECT * FROM conversions FINAL WHERE link_code IS NULL AND click_id IS NOT NULL) AS c
INNER JOIN (SELECT tenant_id, click_id, any(link_code) AS link_code FROM click_links
            WHERE click_id IN (SELECT click_id FROM conversions
                               WHERE link_code IS NULL AND click_id IS NOT NULL)
            GROUP BY tenant_id, click_id) AS l
    ON c.tenant_id = l.tenant_id AND c.click_id = l.click_id;
