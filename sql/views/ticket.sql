-- Analyst view of a ticket stream: typed timestamps (0 -> NULL), numeric elapsed times,
-- rows deleted in Cerb (status_id 3) or absent from it (_hw_deleted_at) hidden.
--
-- Template rules (all views under sql/views/): {view} and {table} are filled in by highwater;
-- one select-list expression per line, one condition per `AND` line. A line naming a column the
-- table does not have yet (a young or filtered stream) is left out, so the view always fits.
CREATE OR REPLACE VIEW analytics.{view} AS
SELECT
    id,
    mask,
    subject,
    status,
    status_id,
    importance,
    CAST(spam_score AS DOUBLE) AS spam_score,
    spam_training,
    group_id,
    bucket_id,
    owner_id,
    org_id,
    num_messages,
    num_messages_in,
    num_messages_out,
    to_timestamp(NULLIF(created, 0)) AS created_at,
    to_timestamp(NULLIF(updated, 0)) AS updated_at,
    to_timestamp(NULLIF(closed_at, 0)) AS closed_at,
    to_timestamp(NULLIF(last_opened_at, 0)) AS last_opened_at,
    to_timestamp(NULLIF(reopen_date, 0)) AS reopen_at,
    TRY_CAST(elapsed_response_first AS BIGINT) AS elapsed_response_first_s,
    TRY_CAST(elapsed_resolution_first AS BIGINT) AS elapsed_resolution_first_s,
    _hw_synced_at AS synced_at
FROM {table}
WHERE _hw_deleted_at IS NULL
  AND status_id IS DISTINCT FROM 3;
