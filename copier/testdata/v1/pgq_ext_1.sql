-- pgq_ext-compatible destination tracking, written for pgq-go.
-- Same schema, tables and function signatures as Skytools' pgq_ext 3.x, so
-- Python RemoteConsumer/SerialConsumer positions carry over unchanged.
-- Applied only when the database has no pgq_ext schema of its own.

create schema pgq_ext;
grant usage on schema pgq_ext to public;

-- last applied tick per consumer (SerialConsumer)
create table pgq_ext.completed_tick (
    consumer_id     text not null,
    subconsumer_id  text not null default '',
    last_tick_id    bigint not null,
    primary key (consumer_id, subconsumer_id)
);

-- last applied batch per consumer (RemoteConsumer)
create table pgq_ext.completed_batch (
    consumer_id     text not null,
    subconsumer_id  text not null default '',
    last_batch_id   bigint not null,
    primary key (consumer_id, subconsumer_id)
);

-- events applied in the current (partial) batch
create table pgq_ext.completed_event (
    consumer_id     text not null,
    subconsumer_id  text not null default '',
    batch_id        bigint not null,
    event_id        bigint not null,
    primary key (consumer_id, subconsumer_id, batch_id, event_id)
);

-- the batch completed_event rows belong to
create table pgq_ext.partial_batch (
    consumer_id     text not null,
    subconsumer_id  text not null default '',
    cur_batch_id    bigint not null,
    primary key (consumer_id, subconsumer_id)
);

create function pgq_ext.version() returns text
language sql immutable as $$ select '3.1'::text $$;

-- true iff the stored last batch of (consumer, subconsumer) is i_batch_id
create function pgq_ext.is_batch_done(i_consumer text, i_subconsumer text, i_batch_id bigint)
returns boolean language sql stable as $$
    select coalesce((select last_batch_id = i_batch_id
                       from pgq_ext.completed_batch
                      where consumer_id = i_consumer and subconsumer_id = i_subconsumer), false)
$$;

create function pgq_ext.is_batch_done(i_consumer text, i_batch_id bigint)
returns boolean language sql stable as $$
    select pgq_ext.is_batch_done(i_consumer, '', i_batch_id)
$$;

-- stores i_batch_id as done; false when it already was
create function pgq_ext.set_batch_done(i_consumer text, i_subconsumer text, i_batch_id bigint)
returns boolean language plpgsql as $$
begin
    if pgq_ext.is_batch_done(i_consumer, i_subconsumer, i_batch_id) then
        return false;
    end if;
    if i_batch_id > 0 then
        insert into pgq_ext.completed_batch (consumer_id, subconsumer_id, last_batch_id)
        values (i_consumer, i_subconsumer, i_batch_id)
        on conflict (consumer_id, subconsumer_id)
        do update set last_batch_id = excluded.last_batch_id;
    end if;
    return true;
end;
$$;

create function pgq_ext.set_batch_done(i_consumer text, i_batch_id bigint)
returns boolean language sql as $$
    select pgq_ext.set_batch_done(i_consumer, '', i_batch_id)
$$;

create function pgq_ext.is_event_done(i_consumer text, i_subconsumer text, i_batch_id bigint, i_event_id bigint)
returns boolean language sql stable as $$
    select exists (select 1 from pgq_ext.completed_event
                    where consumer_id = i_consumer and subconsumer_id = i_subconsumer
                      and batch_id = i_batch_id and event_id = i_event_id)
$$;

create function pgq_ext.is_event_done(i_consumer text, i_batch_id bigint, i_event_id bigint)
returns boolean language sql stable as $$
    select pgq_ext.is_event_done(i_consumer, '', i_batch_id, i_event_id)
$$;

-- marks an event done; a new batch clears the marks of the previous one.
-- false when the event was already marked.
create function pgq_ext.set_event_done(i_consumer text, i_subconsumer text, i_batch_id bigint, i_event_id bigint)
returns boolean language plpgsql as $$
declare
    prev_batch bigint;
begin
    if pgq_ext.is_event_done(i_consumer, i_subconsumer, i_batch_id, i_event_id) then
        return false;
    end if;
    select cur_batch_id into prev_batch from pgq_ext.partial_batch
     where consumer_id = i_consumer and subconsumer_id = i_subconsumer
       for update;
    if not found then
        insert into pgq_ext.partial_batch (consumer_id, subconsumer_id, cur_batch_id)
        values (i_consumer, i_subconsumer, i_batch_id);
    elsif prev_batch <> i_batch_id then
        delete from pgq_ext.completed_event
         where consumer_id = i_consumer and subconsumer_id = i_subconsumer
           and batch_id = prev_batch;
        update pgq_ext.partial_batch set cur_batch_id = i_batch_id
         where consumer_id = i_consumer and subconsumer_id = i_subconsumer;
    end if;
    insert into pgq_ext.completed_event (consumer_id, subconsumer_id, batch_id, event_id)
    values (i_consumer, i_subconsumer, i_batch_id, i_event_id);
    return true;
end;
$$;

create function pgq_ext.set_event_done(i_consumer text, i_batch_id bigint, i_event_id bigint)
returns boolean language sql as $$
    select pgq_ext.set_event_done(i_consumer, '', i_batch_id, i_event_id)
$$;

create function pgq_ext.get_last_tick(i_consumer text, i_subconsumer text)
returns bigint language sql stable as $$
    select last_tick_id from pgq_ext.completed_tick
     where consumer_id = i_consumer and subconsumer_id = i_subconsumer
$$;

create function pgq_ext.get_last_tick(i_consumer text)
returns bigint language sql stable as $$
    select pgq_ext.get_last_tick(i_consumer, '')
$$;

-- stores the last applied tick; NULL forgets the consumer. Returns 1.
create function pgq_ext.set_last_tick(i_consumer text, i_subconsumer text, i_tick_id bigint)
returns integer language plpgsql as $$
begin
    if i_tick_id is null then
        delete from pgq_ext.completed_tick
         where consumer_id = i_consumer and subconsumer_id = i_subconsumer;
    else
        insert into pgq_ext.completed_tick (consumer_id, subconsumer_id, last_tick_id)
        values (i_consumer, i_subconsumer, i_tick_id)
        on conflict (consumer_id, subconsumer_id)
        do update set last_tick_id = excluded.last_tick_id;
    end if;
    return 1;
end;
$$;

create function pgq_ext.set_last_tick(i_consumer text, i_tick_id bigint)
returns integer language sql as $$
    select pgq_ext.set_last_tick(i_consumer, '', i_tick_id)
$$;
