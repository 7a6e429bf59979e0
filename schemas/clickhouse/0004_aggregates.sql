-- What the stream's windowed aggregates carry beyond 0001 (schemas/aggregates.py: Aggregate):
-- cost by part, time to first token, the currency, and per-user windows in their own table.
-- On a cluster the local table stores the rows and the Distributed table must show the
-- columns too; on one node both statements name the same table and the second is a no-op.
ALTER TABLE {{table llm_aggregates}} {{on_cluster}}
    ADD COLUMN IF NOT EXISTS currency LowCardinality(String) DEFAULT 'USD' AFTER reasoning_tokens,
    ADD COLUMN IF NOT EXISTS cost_input Decimal(38, 12) DEFAULT 0 AFTER cost_total,
    ADD COLUMN IF NOT EXISTS cost_output Decimal(38, 12) DEFAULT 0 AFTER cost_input,
    ADD COLUMN IF NOT EXISTS cost_cache_read Decimal(38, 12) DEFAULT 0 AFTER cost_output,
    ADD COLUMN IF NOT EXISTS cost_cache_write Decimal(38, 12) DEFAULT 0 AFTER cost_cache_read,
    ADD COLUMN IF NOT EXISTS cost_reasoning Decimal(38, 12) DEFAULT 0 AFTER cost_cache_write,
    ADD COLUMN IF NOT EXISTS ttft_count UInt64 DEFAULT 0 AFTER latency_p99_ms,
    ADD COLUMN IF NOT EXISTS ttft_sketch String DEFAULT '' CODEC(ZSTD(3)) AFTER ttft_count,
    ADD COLUMN IF NOT EXISTS ttft_p50_ms Float64 DEFAULT 0 AFTER ttft_sketch,
    ADD COLUMN IF NOT EXISTS ttft_p95_ms Float64 DEFAULT 0 AFTER ttft_p50_ms;
ALTER TABLE {{database}}.llm_aggregates {{on_cluster}}
    ADD COLUMN IF NOT EXISTS currency LowCardinality(String) DEFAULT 'USD' AFTER reasoning_tokens,
    ADD COLUMN IF NOT EXISTS cost_input Decimal(38, 12) DEFAULT 0 AFTER cost_total,
    ADD COLUMN IF NOT EXISTS cost_output Decimal(38, 12) DEFAULT 0 AFTER cost_input,
    ADD COLUMN IF NOT EXISTS cost_cache_read Decimal(38, 12) DEFAULT 0 AFTER cost_output,
    ADD COLUMN IF NOT EXISTS cost_cache_write Decimal(38, 12) DEFAULT 0 AFTER cost_cache_read,
    ADD COLUMN IF NOT EXISTS cost_reasoning Decimal(38, 12) DEFAULT 0 AFTER cost_cache_write,
    ADD COLUMN IF NOT EXISTS ttft_count UInt64 DEFAULT 0 AFTER latency_p99_ms,
    ADD COLUMN IF NOT EXISTS ttft_sketch String DEFAULT '' CODEC(ZSTD(3)) AFTER ttft_count,
    ADD COLUMN IF NOT EXISTS ttft_p50_ms Float64 DEFAULT 0 AFTER ttft_sketch,
    ADD COLUMN IF NOT EXISTS ttft_p95_ms Float64 DEFAULT 0 AFTER ttft_p50_ms;

-- Cost and usage per (tenant, user) and window, for per-user budgets and cost reports. The
-- stream re-emits a window with a higher version when it changes; the highest is current.
-- distributed: llm_user_aggregates sharding=cityHash64(tenant, user_id)
-- retention: llm_user_aggregates window_start
CREATE TABLE IF NOT EXISTS {{table llm_user_aggregates}} {{on_cluster}}
(
    window_start DateTime CODEC(Delta, ZSTD(1)),
    window_seconds UInt32,
    tenant LowCardinality(String),
    user_id String CODEC(ZSTD(1)),
    requests UInt64,
    errors UInt64,
    unpriced_requests UInt64,
    input_tokens UInt64,
    output_tokens UInt64,
    currency LowCardinality(String),
    cost_total Decimal(38, 12),
    late_spans UInt64,
    version UInt64,
    ingested_at DateTime64(3) DEFAULT now64(3) CODEC(Delta, ZSTD(1))
)
ENGINE = {{engine ReplacingMergeTree(version)}}
PARTITION BY toDate(window_start)
ORDER BY (tenant, user_id, window_seconds, window_start)
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000,
    ttl_only_drop_parts = 1;
