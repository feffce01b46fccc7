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

-- (Releases before the copier package existed also created
-- pgq_go.parked_event here; the copier package's own migration now creates
-- it, or upgrades the table those releases made.)
