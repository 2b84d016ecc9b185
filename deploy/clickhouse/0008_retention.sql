-- Retention (issue #17): the raw-event archive and the clicks are personal data kept only as
-- long as needed. These TTLs are the defaults of the settings REFSTREAM_RAW_EVENTS_RETENTION_DAYS
-- (730) and REFSTREAM_CLICKS_RETENTION_DAYS (400); `refstream migrate` (and `up`) then sets each
-- table's TTL to its setting on every run (`deploy.migrations.apply_retention`), 0 removing it.
-- An archived event expires by the time it was received, a click by the time it happened; the
-- ledger in PostgreSQL and the other analytics tables keep no TTL (totals do not expire), but a
-- replay can only rebuild from what the archive still holds.
ALTER TABLE raw_events MODIFY TTL toDateTime(received_at) + toIntervalDay(730);

ALTER TABLE clicks MODIFY TTL toDateTime(occurred_at) + toIntervalDay(400);
