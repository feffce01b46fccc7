-- pgq-go copier tables, version 3: parked events are never overwritten,
-- and rows keep their per-key order across retries and parking.

-- A parked row is one event, for ever: event ids repeat when a hub is
-- rebuilt or a node moves to another shard, so (consumer, queue, ev_id) is
-- no key. The unique constraint of pgq_go/1 made park an upsert that kept
-- the first event's payload; drop it (whatever name it was given).
do $$
declare
    c name;
begin
    for c in
        select con.conname
          from pg_constraint con
         where con.conrelid = 'pgq_go.parked_event'::regclass
           and con.contype = 'u'
           and (select array_agg(a.attname::text order by a.attname)
                  from pg_attribute a
                 where a.attrelid = con.conrelid and a.attnum = any (con.conkey))
               = array['consumer_id', 'ev_id', 'queue_name']
    loop
        execute format('alter table pgq_go.parked_event drop constraint %I', c);
    end loop;
end
$$;

create index parked_event_ev_idx on pgq_go.parked_event (consumer_id, queue_name, ev_id);

-- The order key of a parked row (see CopierConfig.OrderKey); NULL when it
-- has none (parked before pgq_go/3, misaddressed, or its key could not be
-- read). While a key has a parked row, later rows of that key are parked
-- behind it, and a replay takes them in park_id order.
alter table pgq_go.parked_event add column order_key text;
create index parked_event_key_idx on pgq_go.parked_event (consumer_id, order_key, park_id)
    where order_key is not null;

-- Rows held on the node behind a failed row of the same key, written in
-- the pull's node transaction together with the batch record. The first
-- row of a key (lowest hold_id) is the head: it failed and is retried
-- after retry_after; the others arrived after it and wait, in hold_id
-- order. When the head applies, the others follow in order; when it is
-- parked, they are parked behind it.
create table pgq_go.held_event (
    hold_id         bigserial primary key,
    consumer_id     text not null,
    queue_name      text not null,
    order_key       text not null,
    held_at         timestamptz not null default now(),
    attempts        integer not null default 0,
    retry_after     timestamptz not null default now(),
    error           text,
    ev_id           bigint not null,
    ev_time         timestamptz not null,
    ev_txid         bigint,
    ev_retry        integer,
    ev_type         text,
    ev_data         text,
    ev_extra1       text,
    ev_extra2       text,
    ev_extra3       text,
    ev_extra4       text
);
create index held_event_key_idx on pgq_go.held_event (consumer_id, order_key, hold_id);
