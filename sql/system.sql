-- highwater's own tables, created on first open of a warehouse and kept backwards compatible.
-- Every statement is idempotent: the binary runs this file on each read-write open.
-- Timestamps are TIMESTAMPTZ (UTC); cursors are the source's own integers.

CREATE SCHEMA IF NOT EXISTS highwater;
CREATE SCHEMA IF NOT EXISTS analytics;

-- One row per stream: where its cursor stands and which table schema it has reached.
CREATE TABLE IF NOT EXISTS highwater.streams (
    name            VARCHAR NOT NULL,   -- the stream name = table name = lake folder
    record_type     VARCHAR NOT NULL,   -- Cerb record type (ticket, message, ...)
    cursor_mode     VARCHAR NOT NULL,   -- updated_id | id
    cursor_field    VARCHAR NOT NULL,   -- updated | updated_at | id
    cursor_updated  BIGINT,             -- NULL until the first committed checkpoint or run
    cursor_id       BIGINT,             -- 9223372036854775807 = the whole second is done
    schema_json     VARCHAR NOT NULL,   -- the source columns and their types, as JSON
    schema_version  INTEGER NOT NULL,   -- +1 for every checkpoint that changed the schema
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);
-- The stream's extra Cerb filter when it was first loaded: a cursor means nothing under another
-- filter (rows the old one excluded are behind it), so a change is refused.
ALTER TABLE highwater.streams ADD COLUMN IF NOT EXISTS filter VARCHAR;

-- One row per run of one stream (sync or reconcile).
CREATE TABLE IF NOT EXISTS highwater.runs (
    run_id                VARCHAR NOT NULL,
    stream                VARCHAR NOT NULL,
    kind                  VARCHAR NOT NULL,  -- sync | reconcile
    outcome               VARCHAR NOT NULL,  -- running | succeeded | failed | rate_limited | aborted
    started_at            TIMESTAMPTZ NOT NULL,
    finished_at           TIMESTAMPTZ,
    window_end            BIGINT,            -- H = server time - lag (sync of updated_id streams)
    cursor_before_updated BIGINT,
    cursor_before_id      BIGINT,
    cursor_after_updated  BIGINT,
    cursor_after_id       BIGINT,
    pages                 BIGINT NOT NULL DEFAULT 0,
    rows_fetched          BIGINT NOT NULL DEFAULT 0,
    rows_written          BIGINT NOT NULL DEFAULT 0,
    checkpoints           BIGINT NOT NULL DEFAULT 0,
    requests              BIGINT NOT NULL DEFAULT 0,
    retries               BIGINT NOT NULL DEFAULT 0,
    wait_ms               BIGINT NOT NULL DEFAULT 0,
    scanned               BIGINT NOT NULL DEFAULT 0,  -- reconcile: source rows seen
    deleted               BIGINT NOT NULL DEFAULT 0,  -- reconcile: rows marked deleted
    undeleted             BIGINT NOT NULL DEFAULT 0,  -- reconcile: marks cleared
    repaired              BIGINT NOT NULL DEFAULT 0,  -- reconcile: rows re-upserted
    details               VARCHAR,                    -- JSON: reconcile's sample ids, warnings
    error                 VARCHAR,
    pid                   BIGINT
);

-- Every committed lake file. The lake itself is never listed to decide what is committed.
CREATE TABLE IF NOT EXISTS highwater.files (
    key           VARCHAR NOT NULL,   -- object key relative to the lake URL
    stream        VARCHAR NOT NULL,
    run_id        VARCHAR NOT NULL,
    seq           INTEGER NOT NULL,   -- checkpoint number within the run
    rows          BIGINT NOT NULL,
    bytes         BIGINT NOT NULL,
    committed_at  TIMESTAMPTZ NOT NULL
);

-- Every column added or widened, with the value that caused it.
CREATE TABLE IF NOT EXISTS highwater.schema_changes (
    stream       VARCHAR NOT NULL,
    run_id       VARCHAR NOT NULL,
    seq          INTEGER NOT NULL,
    column_name  VARCHAR NOT NULL,
    from_type    VARCHAR,             -- NULL when the column is new
    to_type      VARCHAR NOT NULL,
    reason       VARCHAR NOT NULL,
    changed_at   TIMESTAMPTZ NOT NULL
);

-- Source records that could not be loaded, kept whole so nothing is silently lost.
CREATE TABLE IF NOT EXISTS highwater.rejects (
    stream       VARCHAR NOT NULL,
    run_id       VARCHAR NOT NULL,
    record_id    VARCHAR,
    raw          VARCHAR NOT NULL,
    reason       VARCHAR NOT NULL,
    rejected_at  TIMESTAMPTZ NOT NULL
);
