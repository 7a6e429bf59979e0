-- The drift key's operation (schemas/drift.py: DriftResult), which 0001_core.sql lacks. It joins
-- the sorting key: two operations of one service and model are two rows, not versions of one.
-- A column added in the same ALTER without a default may extend the sorting key; rows written
-- before this migration read as ''. Repeating the statement is a no-op.
-- On a cluster the local table stores the rows and the Distributed table must show the column
-- too (it has no sorting key); on one node both statements name the same table.
ALTER TABLE {{table drift_results}} {{on_cluster}}
    ADD COLUMN IF NOT EXISTS operation LowCardinality(String) AFTER provider,
    MODIFY ORDER BY (tenant, service_name, request_model, prompt_template_version, environment,
        provider, feature, detector, window_end, operation);
ALTER TABLE {{database}}.drift_results {{on_cluster}}
    ADD COLUMN IF NOT EXISTS operation LowCardinality(String) AFTER provider;
