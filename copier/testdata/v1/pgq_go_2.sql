-- pgq-go destination tracking, version 2.
--
-- 1. Every database pgq-go installs into gets a stable identity, so that a
--    tracking row on a destination can name the source it follows
--    (subconsumer_id), and two flows never share a position.
-- 2. RemoteConsumer also records the tick its last batch ended at. PgQ can
--    hand two batch ids out over the same ticks (next_batch_custom reads
--    sub_batch without a row lock); the tick range, not the batch id, says
--    which events were applied.
-- 3. Retry tags are matched to a batch by its end tick for the same reason.

create table pgq_go.identity (
    singleton   boolean primary key default true check (singleton),
    id          text not null default gen_random_uuid()::text,
    created_at  timestamptz not null default now()
);
insert into pgq_go.identity default values;

create table pgq_go.remote_position (
    consumer_id     text not null,
    subconsumer_id  text not null default '',
    last_batch_id   bigint not null,
    last_tick_id    bigint not null,
    last_tick_time  timestamptz not null,
    updated_at      timestamptz not null default now(),
    primary key (consumer_id, subconsumer_id)
);

alter table pgq_go.remote_retry add column tick_id bigint;
