-- Backfill progress (schema pgq_go), version 1: how far a backfill of a
-- captured table to one target has gone, so that one that stopped (a
-- crash, a cancel) continues after the last key it sent. The row is
-- updated in the transaction that sends each chunk, so it never claims a
-- row that was not sent, and locked there, so two backfills of the same
-- table and target take turns instead of sending the same rows.
create table if not exists pgq_go.capture_backfill (
    table_oid    oid not null,
    target       text not null,
    last_key     text[],               -- the key of the last row sent, as text; NULL: none yet
    rows_sent    bigint not null default 0,
    done         boolean not null default false,
    started_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    primary key (table_oid, target)
);
