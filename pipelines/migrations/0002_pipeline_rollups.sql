-- pipeline_batches: the Kafka offset range of every batch the pipeline inserts, written just BEFORE
-- the insert. A pipeline that restarts (or takes over a partition) rebuilds exactly the last range,
-- so the insert deduplication token (topic/partition/first-last) repeats and ClickHouse drops the
-- replayed block instead of storing it twice.
CREATE TABLE IF NOT EXISTS $db.pipeline_batches $on_cluster (
    Topic LowCardinality(String),
    Partition UInt32,
    FirstOffset UInt64,
    LastOffset UInt64,
    WrittenAt DateTime64(3) DEFAULT now64(3)
) ENGINE = $engine_mergetree
ORDER BY (Topic, Partition, LastOffset)
TTL toDateTime(WrittenAt) + toIntervalDay(7);

-- Replayed inserts reach materialized views too: their target tables need a dedup window of their
-- own (the view's block gets a token derived from the source insert's) to drop the replay as well.
ALTER TABLE $db.otel_traces_trace_id_ts $on_cluster MODIFY SETTING $dedup_window;

-- traffic_1m: gateway traffic per minute from HTTP SERVER spans, by service, route, method, status
-- class and client key (JWT subject from enduser.id, else client.address). Errors are 5xx responses
-- or spans with StatusCode 'Error'. Read with sum() and quantilesTDigestMerge(0.5, 0.9, 0.99).
CREATE TABLE IF NOT EXISTS $db.$traffic_local $on_cluster (
    Minute DateTime CODEC(Delta, ZSTD(1)),
    ServiceName LowCardinality(String),
    Route LowCardinality(String),
    Method LowCardinality(String),
    StatusClass LowCardinality(String),
    ClientKind LowCardinality(String),
    ClientKey String CODEC(ZSTD(1)),
    Requests SimpleAggregateFunction(sum, UInt64),
    Errors SimpleAggregateFunction(sum, UInt64),
    Latency AggregateFunction(quantilesTDigest(0.5, 0.9, 0.99), UInt64)
) ENGINE = $engine_aggregating
PARTITION BY toDate(Minute)
ORDER BY (ServiceName, Minute, Route, Method, StatusClass, ClientKind, ClientKey)
SETTINGS $dedup_window;

CREATE MATERIALIZED VIEW IF NOT EXISTS $db.traffic_1m_mv $on_cluster
TO $db.$traffic_local
AS SELECT
    toStartOfMinute(Timestamp) AS Minute,
    ServiceName,
    SpanAttributes['http.route'] AS Route,
    SpanAttributes['http.request.method'] AS Method,
    if(toUInt16OrZero(SpanAttributes['http.response.status_code']) = 0, 'none',
       concat(toString(intDiv(toUInt16OrZero(SpanAttributes['http.response.status_code']), 100)), 'xx')) AS StatusClass,
    if(SpanAttributes['enduser.id'] != '', 'subject', 'address') AS ClientKind,
    if(SpanAttributes['enduser.id'] != '', SpanAttributes['enduser.id'], SpanAttributes['client.address']) AS ClientKey,
    toUInt64(count()) AS Requests,
    toUInt64(countIf(StatusCode = 'Error' OR toUInt16OrZero(SpanAttributes['http.response.status_code']) >= 500)) AS Errors,
    quantilesTDigestState(0.5, 0.9, 0.99)(Duration) AS Latency
FROM $db.$traces_local
WHERE SpanKind = 'Server' AND SpanAttributes['http.request.method'] != ''
GROUP BY Minute, ServiceName, Route, Method, StatusClass, ClientKind, ClientKey;

-- edges_1m: service-to-service calls per minute from CLIENT spans: caller = the span's service,
-- callee = peer.service, else server.address. Spans naming neither are resolved at read time from
-- their child's service (pipelines.queries.edges_from_parents).
CREATE TABLE IF NOT EXISTS $db.$edges_local $on_cluster (
    Minute DateTime CODEC(Delta, ZSTD(1)),
    Caller LowCardinality(String),
    Callee LowCardinality(String),
    Calls SimpleAggregateFunction(sum, UInt64),
    Errors SimpleAggregateFunction(sum, UInt64),
    Latency AggregateFunction(quantilesTDigest(0.5, 0.9, 0.99), UInt64)
) ENGINE = $engine_aggregating
PARTITION BY toDate(Minute)
ORDER BY (Minute, Caller, Callee)
SETTINGS $dedup_window;

CREATE MATERIALIZED VIEW IF NOT EXISTS $db.edges_1m_mv $on_cluster
TO $db.$edges_local
AS SELECT
    toStartOfMinute(Timestamp) AS Minute,
    ServiceName AS Caller,
    if(SpanAttributes['peer.service'] != '', SpanAttributes['peer.service'], SpanAttributes['server.address']) AS Callee,
    toUInt64(count()) AS Calls,
    toUInt64(countIf(StatusCode = 'Error' OR toUInt16OrZero(SpanAttributes['http.response.status_code']) >= 500)) AS Errors,
    quantilesTDigestState(0.5, 0.9, 0.99)(Duration) AS Latency
FROM $db.$traces_local
WHERE SpanKind = 'Client' AND (SpanAttributes['peer.service'] != '' OR SpanAttributes['server.address'] != '')
GROUP BY Minute, Caller, Callee;

-- cluster-only
CREATE TABLE IF NOT EXISTS $db.traffic_1m $on_cluster AS $db.$traffic_local
ENGINE = Distributed($cluster, $db, $traffic_local, rand());

-- cluster-only
CREATE TABLE IF NOT EXISTS $db.edges_1m $on_cluster AS $db.$edges_local
ENGINE = Distributed($cluster, $db, $edges_local, rand());
