-- The planning state of the analytics rollups in one table (issue #16).
--
-- Every analytics query first reads, for its period, the builds (`rollup_builds_v2`), the
-- touches (`rollup_touches`) and the month rows (`rollup_months`). On the chDB front each table
-- read costs about 3 ms whatever its size, so that read took 6-8 ms of a 20-40 ms query. This
-- table holds the same rows, one kind per source, written by materialized views on the three
-- tables (cascading: the touches table is itself written by the views of 0007), so the planner
-- reads one table. Same key and version as each source: `kind`, then the day ('b'), the hour
-- ('t') or the month ('M') in `at`, and `version` (built_at / touched_at / built_at), of which
-- `FINAL` keeps the greatest, as the sources' ReplacingMergeTree does. The builder keeps reading
-- and writing the three source tables; nothing writes here directly.
CREATE TABLE IF NOT EXISTS rollup_state
(
    tenant_id LowCardinality(String),
    kind      LowCardinality(String),
    at        DateTime('UTC'),
    version   DateTime64(3, 'UTC'),
    until     DateTime('UTC'),
    gen       UInt64,
    day_gens  Array(UInt64)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, kind, at);

CREATE MATERIALIZED VIEW IF NOT EXISTS rollup_state_builds_mv TO rollup_state AS
SELECT tenant_id, 'b' AS kind, toDateTime(day, 'UTC') AS at, built_at AS version, until, gen,
       CAST([] AS Array(UInt64)) AS day_gens
FROM rollup_builds_v2;

CREATE MATERIALIZED VIEW IF NOT EXISTS rollup_state_touches_mv TO rollup_state AS
SELECT tenant_id, 't' AS kind, hour AS at, touched_at AS version, toDateTime(0, 'UTC') AS until,
       toUInt64(0) AS gen, CAST([] AS Array(UInt64)) AS day_gens
FROM rollup_touches;

CREATE MATERIALIZED VIEW IF NOT EXISTS rollup_state_months_mv TO rollup_state AS
SELECT tenant_id, 'M' AS kind, toDateTime(month, 'UTC') AS at, built_at AS version,
       toDateTime(0, 'UTC') AS until, gen, day_gens
FROM rollup_months;

-- The rows written before the views existed (after them, so none is missed; a row copied twice
-- is the same row, which FINAL keeps once).
INSERT INTO rollup_state
SELECT tenant_id, 'b', toDateTime(day, 'UTC'), built_at, until, gen, CAST([] AS Array(UInt64))
FROM rollup_builds_v2;

INSERT INTO rollup_state
SELECT tenant_id, 't', hour, touched_at, toDateTime(0, 'UTC'), toUInt64(0),
       CAST([] AS Array(UInt64))
FROM rollup_touches;

INSERT INTO rollup_state
SELECT tenant_id, 'M', toDateTime(month, 'UTC'), built_at, toDateTime(0, 'UTC'), gen, day_gens
FROM rollup_months;
