-- otel_traces: the column layout of the OpenTelemetry Collector's ClickHouse exporter, so Grafana's
-- ClickHouse trace view and other OTel tools read it unchanged. The dedup window makes insert
-- deduplication tokens work on a non-replicated MergeTree (the pipeline's exactly-once guard).
CREATE TABLE IF NOT EXISTS $db.$traces_local $on_cluster (
    Timestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    Links Nested (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1
) ENGINE = $engine_mergetree
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp))
$traces_ttl
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1, $dedup_window;

-- cluster-only
CREATE TABLE IF NOT EXISTS $db.otel_traces $on_cluster AS $db.$traces_local
ENGINE = Distributed($cluster, $db, $traces_local, cityHash64(TraceId));

CREATE TABLE IF NOT EXISTS $db.otel_traces_trace_id_ts $on_cluster (
    TraceId String CODEC(ZSTD(1)),
    Start DateTime CODEC(Delta, ZSTD(1)),
    End DateTime CODEC(Delta, ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = $engine_mergetree
PARTITION BY toDate(Start)
ORDER BY (TraceId, Start)
$lookup_ttl
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS $db.otel_traces_trace_id_ts_mv $on_cluster
TO $db.otel_traces_trace_id_ts
AS SELECT
    TraceId,
    min(Timestamp) AS Start,
    max(Timestamp) AS End
FROM $db.$traces_local
WHERE TraceId != ''
GROUP BY TraceId;

-- decisions: every decision a detector took, with its full JSON (the proxies' contract) beside
-- the columns dashboards filter on.
CREATE TABLE IF NOT EXISTS $db.decisions $on_cluster (
    Id UUID,
    Kind LowCardinality(String),
    Scope LowCardinality(String),
    TargetKey String,
    Params String,
    Detector LowCardinality(String),
    Score Float64,
    TopFeatures Map(LowCardinality(String), Float64),
    Mode LowCardinality(String),
    CreatedAt DateTime64(3, 'UTC'),
    ExpiresAt DateTime64(3, 'UTC'),
    Decision String CODEC(ZSTD(1))
) ENGINE = $engine_replacing
PARTITION BY toYYYYMM(CreatedAt)
ORDER BY (Scope, TargetKey, CreatedAt, Id);

-- alerts: one row per state change; ReplacingMergeTree(UpdatedAt) keeps the latest per alert.
CREATE TABLE IF NOT EXISTS $db.alerts $on_cluster (
    Fingerprint String,
    Name LowCardinality(String),
    Severity LowCardinality(String),
    Labels Map(LowCardinality(String), String),
    Annotations Map(LowCardinality(String), String),
    StartsAt DateTime64(3, 'UTC'),
    EndsAt Nullable(DateTime64(3, 'UTC')),
    DecisionId String,
    UpdatedAt DateTime64(3, 'UTC')
) ENGINE = $engine_replacing_updated
PARTITION BY toYYYYMM(StartsAt)
ORDER BY (Fingerprint, StartsAt);

-- ground_truth: what the simulator injected (bots, faults) with times, to score detectors.
CREATE TABLE IF NOT EXISTS $db.ground_truth $on_cluster (
    RunId String,
    Scenario LowCardinality(String),
    Kind LowCardinality(String),
    Label LowCardinality(String),
    Scope LowCardinality(String),
    EntityKey String,
    StartAt DateTime64(3, 'UTC'),
    EndAt DateTime64(3, 'UTC'),
    Details String
) ENGINE = $engine_mergetree
ORDER BY (RunId, Kind, EntityKey, StartAt);
