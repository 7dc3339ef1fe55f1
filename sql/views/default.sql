-- Analyst view for record types without their own view: every source column, rows absent from
-- the source hidden, highwater's bookkeeping columns left out.
CREATE OR REPLACE VIEW analytics.{view} AS
SELECT * EXCLUDE (_hw_run_id, _hw_op, _hw_hash, _hw_deleted_at)
FROM {table}
WHERE _hw_deleted_at IS NULL;
