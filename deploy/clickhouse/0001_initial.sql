-- Analytics tables written by the attribution dataflow and the raw-event archive.
-- ReplacingMergeTree(version) on a key derived from the inputs: a replay or a retried batch
-- writes the same key again and the merge keeps one row (queries use FINAL or argMax).

CREATE TABLE IF NOT EXISTS raw_events
(
    tenant_id      LowCardinality(String),
    source         LowCardinality(String),
    kind           LowCardinality(String),
    event_id       String,
    shop           Nullable(String),
    entity_id      Nullable(String),
    occurred_at    DateTime64(3, 'UTC'),
    received_at    DateTime64(3, 'UTC'),
    schema_version UInt16,
    body_sha256    FixedString(64),
    headers        Map(String, String),
    body           String CODEC(ZSTD(3)),
    body_encoding  LowCardinality(String),
    archived_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(archived_at)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, source, event_id);

CREATE TABLE IF NOT EXISTS clicks
(
    tenant_id    LowCardinality(String),
    click_id     String,
    link_code    String,
    program_id   Nullable(String),
    agent_id     Nullable(String),
    shop         Nullable(String),
    visitor_id   Nullable(String),
    occurred_at  DateTime64(3, 'UTC'),
    landing_url  Nullable(String),
    referrer     Nullable(String),
    user_agent   Nullable(String),
    ip_hash      Nullable(String),
    is_bot       Bool,
    is_duplicate Bool,
    version      UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, toDate(occurred_at), click_id);

CREATE TABLE IF NOT EXISTS conversions
(
    tenant_id       LowCardinality(String),
    conversion_id   String,
    shop            Nullable(String),
    order_id        String,
    order_name      Nullable(String),
    occurred_at     DateTime64(3, 'UTC'),
    attributed_at   DateTime64(3, 'UTC'),
    rule            LowCardinality(String),
    agent_id        Nullable(String),
    program_id      Nullable(String),
    click_id        Nullable(String),
    coupon_code     Nullable(String),
    customer_id     Nullable(String),
    is_new_customer Bool,
    currency        LowCardinality(String),
    revenue         Decimal(18, 4),
    fx_rate         Decimal(18, 8),
    source_event_id String,
    version         UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, toDate(occurred_at), conversion_id);

CREATE TABLE IF NOT EXISTS commission_events
(
    tenant_id       LowCardinality(String),
    entry_id        String,
    agent_id        String,
    program_id      Nullable(String),
    conversion_id   String,
    order_id        String,
    line_item_id    Nullable(String),
    kind            LowCardinality(String),
    status          LowCardinality(String),
    level           UInt8,
    amount          Decimal(18, 4),
    currency        LowCardinality(String),
    fx_rate         Decimal(18, 8),
    rule_id         Nullable(String),
    rule_version    Nullable(UInt32),
    occurred_at     DateTime64(3, 'UTC'),
    source_event_id String,
    version         UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, toDate(occurred_at), entry_id);
