-- client_requests: the few span attributes the detectors read per client request (address, route,
-- path, status, user agent, subject), copied out of the SpanAttributes map at insert time. Reading
-- the whole map for every span of a 120 s window was most of a detection cycle; these narrow
-- columns are a fraction of it and keep every request (features need exact inter-arrival times).
-- Filled from spans that carry client.address (gateways; sidecars too, filtered at read time on
-- ServiceName, the key prefix). Same retention as otel_traces.
CREATE TABLE IF NOT EXISTS $db.$client_requests_local $on_cluster (
    Timestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    ServiceName LowCardinality(String),
    Client String CODEC(ZSTD(1)),
    Method LowCardinality(String),
    Route LowCardinality(String),
    Path String CODEC(ZSTD(1)),
    Status UInt16,
    UserAgent LowCardinality(String),
    Subject String CODEC(ZSTD(1))
) ENGINE = $engine_mergetree
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, toDateTime(Timestamp), Client)
$traces_ttl
SETTINGS $dedup_window;

CREATE MATERIALIZED VIEW IF NOT EXISTS $db.client_requests_mv $on_cluster
TO $db.$client_requests_local
AS SELECT
    Timestamp,
    ServiceName,
    SpanAttributes['client.address'] AS Client,
    SpanAttributes['http.request.method'] AS Method,
    SpanAttributes['http.route'] AS Route,
    SpanAttributes['url.path'] AS Path,
    toUInt16OrZero(SpanAttributes['http.response.status_code']) AS Status,
    SpanAttributes['user_agent.original'] AS UserAgent,
    SpanAttributes['enduser.id'] AS Subject
FROM $db.$traces_local
WHERE SpanAttributes['client.address'] != '';

-- cluster-only
CREATE TABLE IF NOT EXISTS $db.client_requests $on_cluster AS $db.$client_requests_local
ENGINE = Distributed($cluster, $db, $client_requests_local, rand());
