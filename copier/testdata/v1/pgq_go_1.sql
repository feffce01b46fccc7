-- pgq-go's own destination tables (schema pgq_go; pgq_ext stays pristine).

-- Retry tags of the last applied batch per remote consumer, written in the
-- same destination transaction as set_batch_done. When the process dies
-- after the destination commit and before finish_batch on the source, the
-- batch is skipped as done on the next run and these tags are re-issued,
-- so no retried event is lost.
create table pgq_go.remote_retry (
    consumer_id     text not null,
    subconsumer_id  text not null default '',
    batch_id        bigint not null,
    ev_id           bigint not null,
    retry_after     timestamptz not null,
    primary key (consumer_id, subconsumer_id, batch_id, ev_id)
);

-- Events a targeted copier could not apply after its retry limit: kept with
-- their error for an operator to inspect, replay or purge.
create table pgq_go.parked_event (
    park_id         bigserial primary key,
    consumer_id     text not null,
    queue_name      text not null,
    parked_at       timestamptz not null default now(),
    error           text not null,
    ev_id           bigint not null,
    ev_time         timestamptz not null,
    ev_txid         bigint,
    ev_retry        integer,
    ev_type         text,
    ev_data         text,
    ev_extra1       text,
    ev_extra2       text,
    ev_extra3       text,
    ev_extra4       text,
    unique (consumer_id, queue_name, ev_id)
);
