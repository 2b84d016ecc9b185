-- What replay needs to rebuild an archived envelope byte for byte: 0001 kept the times at
-- millisecond precision in UTC, while the envelope carries microseconds and the source's UTC
-- offset (Shopify sends local times), and it did not keep the payload's content type.
-- Rows archived before this file get the millisecond values, offset 0 and the default type.
ALTER TABLE raw_events
    ADD COLUMN IF NOT EXISTS occurred_at_us DateTime64(6, 'UTC') DEFAULT occurred_at,
    ADD COLUMN IF NOT EXISTS occurred_offset_s Int32 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS received_at_us DateTime64(6, 'UTC') DEFAULT received_at,
    ADD COLUMN IF NOT EXISTS received_offset_s Int32 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS content_type LowCardinality(String) DEFAULT 'application/json';
