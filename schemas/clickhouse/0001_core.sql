-- llmtap's tables. Released migrations are never edited: change the schema in a new file.
-- The {{...}} placeholders and the directive comments are explained in README.md here.

-- One row per normalized span (schemas/llm_span.py), written by the ClickHouse sink.
-- A span delivered twice has the same sorting key, so the copies collapse (newest ingested_at
-- wins); read with FINAL where exact counts matter.
-- distributed: llm_spans sharding=cityHash64(trace_id)
-- retention: llm_spans timestamp
CREATE TABLE IF NOT EXISTS {{table llm_spans}} {{on_cluster}}
(
    timestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    end_timestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    duration_ms Float64 CODEC(ZSTD(1)),
    trace_id String CODEC(ZSTD(1)),
    span_id String CODEC(ZSTD(1)),
    parent_span_id String CODEC(ZSTD(1)),
    name LowCardinality(String),
    kind LowCardinality(String),
    status LowCardinality(String),
    status_message String CODEC(ZSTD(3)),
    service_name LowCardinality(String),
    service_version LowCardinality(String),
    environment LowCardinality(String),
    tenant LowCardinality(String),
    scope_name LowCardinality(String),
    scope_version LowCardinality(String),
    span_type LowCardinality(String),
    convention LowCardinality(String),
    provider LowCardinality(String),
    operation LowCardinality(String),
    request_model LowCardinality(String),
    response_model LowCardinality(String),
    response_id String CODEC(ZSTD(3)),
    temperature Nullable(Float64),
    top_p Nullable(Float64),
    max_tokens Nullable(UInt32),
    stream Nullable(UInt8),
    finish_reasons Array(LowCardinality(String)),
    -- Token counts follow the span model: input includes cache reads and writes, output
    -- includes reasoning. NULL when the source did not report them (never a silent zero).
    input_tokens Nullable(UInt64),
    output_tokens Nullable(UInt64),
    cache_read_tokens Nullable(UInt64),
    cache_write_tokens Nullable(UInt64),
    reasoning_tokens Nullable(UInt64),
    priced UInt8,
    cost_total Nullable(Decimal(38, 12)),
    cost_input Nullable(Decimal(38, 12)),
    cost_output Nullable(Decimal(38, 12)),
    cost_cache_read Nullable(Decimal(38, 12)),
    cost_cache_write Nullable(Decimal(38, 12)),
    cost_reasoning Nullable(Decimal(38, 12)),
    currency LowCardinality(String),
    price_version LowCardinality(String),
    price_id LowCardinality(String),
    unpriced_reason LowCardinality(String),
    time_to_first_token_ms Nullable(Float64),
    user_id String CODEC(ZSTD(3)),
    session_id String CODEC(ZSTD(3)),
    prompt_template_id LowCardinality(String),
    prompt_template_version LowCardinality(String),
    system_instructions String CODEC(ZSTD(3)),
    prompt_text String CODEC(ZSTD(3)),
    completion_text String CODEC(ZSTD(3)),
    -- JSON text (arrays of the span model's structs); empty when the span had none.
    input_messages String CODEC(ZSTD(3)),
    output_messages String CODEC(ZSTD(3)),
    retrieved_documents String CODEC(ZSTD(3)),
    tool_calls String CODEC(ZSTD(3)),
    error_type LowCardinality(String),
    error_message String CODEC(ZSTD(3)),
    attributes Map(LowCardinality(String), String) CODEC(ZSTD(3)),
    resource_attributes Map(LowCardinality(String), String) CODEC(ZSTD(3)),
    received_at Nullable(DateTime64(9)) CODEC(Delta, ZSTD(1)),
    -- Where the row came from: the sink resumes a partition after its highest stored offset.
    kafka_topic LowCardinality(String),
    kafka_partition UInt16,
    kafka_offset UInt64 CODEC(ZSTD(1)),
    ingested_at DateTime64(3) DEFAULT now64(3) CODEC(Delta, ZSTD(1)),
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_span_id span_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_user_id user_id TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_session_id session_id TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_attribute_keys mapKeys(attributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_attribute_values mapValues(attributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration_ms duration_ms TYPE minmax GRANULARITY 1,
    INDEX idx_kafka_offset kafka_offset TYPE minmax GRANULARITY 1
)
ENGINE = {{engine ReplacingMergeTree(ingested_at)}}
PARTITION BY toDate(timestamp)
ORDER BY (tenant, service_name, toStartOfHour(timestamp), trace_id, span_id)
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000,
    ttl_only_drop_parts = 1;

-- Embeddings of a span's prompt, completion or retrieved context, for drift and risk scoring.
-- distributed: span_embeddings sharding=cityHash64(trace_id)
-- retention: span_embeddings timestamp
CREATE TABLE IF NOT EXISTS {{table span_embeddings}} {{on_cluster}}
(
    timestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    tenant LowCardinality(String),
    trace_id String CODEC(ZSTD(1)),
    span_id String CODEC(ZSTD(1)),
    -- prompt, completion or context
    kind LowCardinality(String),
    model LowCardinality(String),
    content_hash String CODEC(ZSTD(1)),
    vector Array(Float32) CODEC(ZSTD(1)),
    ingested_at DateTime64(3) DEFAULT now64(3) CODEC(Delta, ZSTD(1)),
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_content_hash content_hash TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = {{engine ReplacingMergeTree(ingested_at)}}
PARTITION BY toDate(timestamp)
ORDER BY (tenant, toDate(timestamp), trace_id, span_id, kind)
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000,
    ttl_only_drop_parts = 1;

-- Risk scores, computed after the span arrived; joined to llm_spans on (trace_id, span_id).
-- distributed: span_scores sharding=cityHash64(trace_id)
-- retention: span_scores timestamp
CREATE TABLE IF NOT EXISTS {{table span_scores}} {{on_cluster}}
(
    -- the scored span's start time, so scores share llm_spans' daily partitions
    timestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    tenant LowCardinality(String),
    trace_id String CODEC(ZSTD(1)),
    span_id String CODEC(ZSTD(1)),
    service_name LowCardinality(String),
    request_model LowCardinality(String),
    risk_score Float32,
    support_min Float32,
    answer_context_similarity Float32,
    answer_question_similarity Float32,
    sampling_weight Float32,
    model_version LowCardinality(String),
    -- JSON text: the per-sentence evidence behind the score
    details String CODEC(ZSTD(3)),
    ingested_at DateTime64(3) DEFAULT now64(3) CODEC(Delta, ZSTD(1)),
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_risk_score risk_score TYPE minmax GRANULARITY 1
)
ENGINE = {{engine ReplacingMergeTree(ingested_at)}}
PARTITION BY toDate(timestamp)
ORDER BY (tenant, service_name, toStartOfHour(timestamp), trace_id, span_id)
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000,
    ttl_only_drop_parts = 1;

-- Windowed aggregates from the stream processors. A window is re-emitted with a higher version
-- whenever late spans change it; the highest version is the current one.
-- distributed: llm_aggregates sharding=cityHash64(tenant, service_name, environment, provider, request_model, operation, prompt_template_version)
-- retention: llm_aggregates window_start
CREATE TABLE IF NOT EXISTS {{table llm_aggregates}} {{on_cluster}}
(
    window_start DateTime CODEC(Delta, ZSTD(1)),
    window_seconds UInt32,
    tenant LowCardinality(String),
    service_name LowCardinality(String),
    environment LowCardinality(String),
    provider LowCardinality(String),
    request_model LowCardinality(String),
    operation LowCardinality(String),
    prompt_template_version LowCardinality(String),
    requests UInt64,
    errors UInt64,
    unpriced_requests UInt64,
    input_tokens UInt64,
    output_tokens UInt64,
    cache_read_tokens UInt64,
    cache_write_tokens UInt64,
    reasoning_tokens UInt64,
    cost_total Decimal(38, 12),
    -- serialized mergeable latency sketch; the quantiles below are read from it
    latency_sketch String CODEC(ZSTD(3)),
    latency_p50_ms Float64,
    latency_p95_ms Float64,
    latency_p99_ms Float64,
    finish_reasons Map(LowCardinality(String), UInt64),
    late_spans UInt64,
    version UInt64,
    ingested_at DateTime64(3) DEFAULT now64(3) CODEC(Delta, ZSTD(1))
)
ENGINE = {{engine ReplacingMergeTree(version)}}
PARTITION BY toDate(window_start)
ORDER BY (tenant, service_name, window_seconds, window_start, provider, request_model, operation,
    prompt_template_version, environment)
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000,
    ttl_only_drop_parts = 1;

-- Drift tests: one row per (key, feature, detector, window); re-evaluations bump version.
-- distributed: drift_results sharding=cityHash64(tenant, service_name, request_model)
-- retention: drift_results window_end
CREATE TABLE IF NOT EXISTS {{table drift_results}} {{on_cluster}}
(
    window_start DateTime CODEC(Delta, ZSTD(1)),
    window_end DateTime CODEC(Delta, ZSTD(1)),
    tenant LowCardinality(String),
    service_name LowCardinality(String),
    environment LowCardinality(String),
    provider LowCardinality(String),
    request_model LowCardinality(String),
    prompt_template_version LowCardinality(String),
    -- what was compared (e.g. prompt_embedding, output_tokens) and how (e.g. mmd, ks, psi)
    feature LowCardinality(String),
    detector LowCardinality(String),
    statistic Float64,
    p_value Nullable(Float64),
    threshold Float64,
    drifted UInt8,
    reference_size UInt64,
    current_size UInt64,
    -- JSON text: what a reviewer needs to judge the result (top shifted bins, examples)
    evidence String CODEC(ZSTD(3)),
    version UInt64,
    ingested_at DateTime64(3) DEFAULT now64(3) CODEC(Delta, ZSTD(1))
)
ENGINE = {{engine ReplacingMergeTree(version)}}
PARTITION BY toDate(window_end)
ORDER BY (tenant, service_name, request_model, prompt_template_version, environment, provider,
    feature, detector, window_end)
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000,
    ttl_only_drop_parts = 1;

-- Alerts and their delivery. A state change (firing, resolved) or a delivery attempt writes the
-- alert again with a higher version.
-- distributed: alerts sharding=cityHash64(tenant, rule_id, dedup_key)
-- retention: alerts fired_at
CREATE TABLE IF NOT EXISTS {{table alerts}} {{on_cluster}}
(
    fired_at DateTime64(3) CODEC(Delta, ZSTD(1)),
    resolved_at Nullable(DateTime64(3)),
    tenant LowCardinality(String),
    rule_id LowCardinality(String),
    -- info, warning or critical
    severity LowCardinality(String),
    -- firing or resolved
    state LowCardinality(String),
    -- the group the rule fired for, as text (service=chat,model=gpt-4o) and as labels
    group_key String CODEC(ZSTD(1)),
    labels Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    value Float64,
    threshold Float64,
    message String CODEC(ZSTD(3)),
    -- pending, delivered, failed or suppressed (a duplicate within the dedup window)
    delivery_status LowCardinality(String),
    delivery_attempts UInt32,
    delivered_at Nullable(DateTime64(3)),
    delivery_error String CODEC(ZSTD(3)),
    dedup_key String CODEC(ZSTD(1)),
    version UInt64,
    ingested_at DateTime64(3) DEFAULT now64(3) CODEC(Delta, ZSTD(1))
)
ENGINE = {{engine ReplacingMergeTree(version)}}
PARTITION BY toDate(fired_at)
ORDER BY (tenant, rule_id, dedup_key, fired_at)
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000,
    ttl_only_drop_parts = 1;

-- Records a stage could not process, kept for inspection and replay.
-- distributed: dead_letters sharding=rand()
-- retention: dead_letters received_at
CREATE TABLE IF NOT EXISTS {{table dead_letters}} {{on_cluster}}
(
    received_at DateTime64(3) CODEC(Delta, ZSTD(1)),
    stage LowCardinality(String),
    reason String CODEC(ZSTD(3)),
    source_topic LowCardinality(String),
    source_partition UInt16,
    source_offset UInt64,
    key String CODEC(ZSTD(3)),
    value String CODEC(ZSTD(3)),
    headers Map(String, String) CODEC(ZSTD(3))
)
ENGINE = {{engine MergeTree}}
PARTITION BY toDate(received_at)
ORDER BY (stage, received_at)
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000,
    ttl_only_drop_parts = 1;
