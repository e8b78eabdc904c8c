-- The exporter's four bloom-filter indexes over ResourceAttributes/SpanAttributes keys and values
-- cost about as much CPU as the rest of an otel_traces insert (hashing every attribute of every
-- span), and for HTTP spans they rarely skip a granule: values such as url.path, client.address or
-- a route occur in nearly every 8,192-row granule. The attribute questions gatewatch asks are
-- answered by traffic_1m, edges_1m and client_requests; the trace-id and duration indexes stay.
-- Add them back for ad-hoc attribute searches with ALTER TABLE ... ADD INDEX / MATERIALIZE INDEX.
ALTER TABLE $db.$traces_local $on_cluster DROP INDEX IF EXISTS idx_res_attr_key;
ALTER TABLE $db.$traces_local $on_cluster DROP INDEX IF EXISTS idx_res_attr_value;
ALTER TABLE $db.$traces_local $on_cluster DROP INDEX IF EXISTS idx_span_attr_key;
ALTER TABLE $db.$traces_local $on_cluster DROP INDEX IF EXISTS idx_span_attr_value;
