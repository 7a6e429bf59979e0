-- The otel_traces view shows llm_spans in the shape of the OTel Collector ClickHouse
-- exporter's trace table (exporter/clickhouseexporter, sqltemplates/traces_table.sql): the same
-- column names and types, and the values the exporter writes (SpanKind 'Client', StatusCode
-- 'Ok' / 'Error' / 'Unset'), so Grafana's ClickHouse data source shows llmtap spans in its
-- trace view with its OTel defaults.
--
-- SpanAttributes is the span's unmapped attributes plus the fields the normalizer promoted to
-- columns, under their OTel names again (only those with a value). llmtap keeps no span events
-- or links yet: the Events.* and Links.* columns are empty arrays.
-- FINAL collapses a span delivered twice, so a trace never shows a span twice.
-- In cluster mode the view reads the Distributed table, so it sees every shard.
CREATE VIEW IF NOT EXISTS {{database}}.otel_traces {{on_cluster}} AS
SELECT
    timestamp AS Timestamp,
    trace_id AS TraceId,
    span_id AS SpanId,
    parent_span_id AS ParentSpanId,
    '' AS TraceState,
    name AS SpanName,
    CAST(
        transform(
            kind,
            ['internal', 'server', 'client', 'producer', 'consumer'],
            ['Internal', 'Server', 'Client', 'Producer', 'Consumer'],
            'Unspecified'
        ) AS LowCardinality(String)
    ) AS SpanKind,
    service_name AS ServiceName,
    resource_attributes AS ResourceAttributes,
    CAST(scope_name AS String) AS ScopeName,
    CAST(scope_version AS String) AS ScopeVersion,
    CAST(
        mapUpdate(
            attributes,
            mapFilter(
                (attribute_key, attribute_value) -> attribute_value != '',
                map(
                    'gen_ai.provider.name', toString(provider),
                    'gen_ai.operation.name', toString(operation),
                    'gen_ai.request.model', toString(request_model),
                    'gen_ai.response.model', toString(response_model),
                    'gen_ai.usage.input_tokens', ifNull(toString(input_tokens), ''),
                    'gen_ai.usage.output_tokens', ifNull(toString(output_tokens), ''),
                    'llmtap.cost.total', ifNull(toString(cost_total), ''),
                    'llmtap.span_type', toString(span_type),
                    'user.id', user_id,
                    'session.id', session_id
                )
            )
        ) AS Map(LowCardinality(String), String)
    ) AS SpanAttributes,
    toUInt64(greatest(toUnixTimestamp64Nano(end_timestamp) - toUnixTimestamp64Nano(timestamp), 0))
        AS Duration,
    CAST(transform(status, ['ok', 'error'], ['Ok', 'Error'], 'Unset') AS LowCardinality(String))
        AS StatusCode,
    status_message AS StatusMessage,
    CAST([], 'Array(DateTime64(9))') AS `Events.Timestamp`,
    CAST([], 'Array(LowCardinality(String))') AS `Events.Name`,
    CAST([], 'Array(Map(LowCardinality(String), String))') AS `Events.Attributes`,
    CAST([], 'Array(String)') AS `Links.TraceId`,
    CAST([], 'Array(String)') AS `Links.SpanId`,
    CAST([], 'Array(String)') AS `Links.TraceState`,
    CAST([], 'Array(Map(LowCardinality(String), String))') AS `Links.Attributes`
FROM {{database}}.llm_spans FINAL;
