-- Columns of span_scores that the risk stage writes (schemas/scores.py: SpanScore) and
-- 0001_core.sql lacks. Defaults keep rows written before this migration readable.
-- On a cluster the local table stores the rows and the Distributed table must show the
-- columns too; on one node both statements name the same table and the second is a no-op.
ALTER TABLE {{table span_scores}} {{on_cluster}}
    ADD COLUMN IF NOT EXISTS prompt_template_version LowCardinality(String) DEFAULT '' AFTER request_model,
    ADD COLUMN IF NOT EXISTS support_mean Float32 DEFAULT 0 AFTER support_min,
    ADD COLUMN IF NOT EXISTS has_context UInt8 DEFAULT 0 AFTER answer_question_similarity,
    ADD COLUMN IF NOT EXISTS injection_score Float32 DEFAULT 0 AFTER has_context,
    ADD COLUMN IF NOT EXISTS injection_flag UInt8 DEFAULT 0 AFTER injection_score;
ALTER TABLE {{database}}.span_scores {{on_cluster}}
    ADD COLUMN IF NOT EXISTS prompt_template_version LowCardinality(String) DEFAULT '' AFTER request_model,
    ADD COLUMN IF NOT EXISTS support_mean Float32 DEFAULT 0 AFTER support_min,
    ADD COLUMN IF NOT EXISTS has_context UInt8 DEFAULT 0 AFTER answer_question_similarity,
    ADD COLUMN IF NOT EXISTS injection_score Float32 DEFAULT 0 AFTER has_context,
    ADD COLUMN IF NOT EXISTS injection_flag UInt8 DEFAULT 0 AFTER injection_score;
