-- Fixture: a Skytools-3-shaped pgq_ext installed as plain SQL (the
-- "noext" install: no CREATE EXTENSION, as older Skytools installers and
-- many long-lived sites did it). Written for pgq-go's tests; it is not
-- Skytools' code, only its shape:
--   * tables keyed by (consumer_id, subconsumer_id default '');
--   * is_batch_done/set_batch_done(text, text, bigint),
--     get_last_tick(text, text), set_last_tick(text, text, bigint) plus the
--     two-argument forms without a subconsumer;
--   * version() that reads pg_extension, as Skytools' does, and so returns
--     NULL here: there is no pgq_ext row in pg_extension.

create schema pgq_ext;

create table pgq_ext.completed_tick (
    consumer_id     text not null,
    subconsumer_id  text not null default '',
    last_tick_id    bigint not null,
    primary key (consumer_id, subconsumer_id)
);

create table pgq_ext.completed_batch (
    consumer_id     text not null,
    subconsumer_id  text not null default '',
    last_batch_id   bigint not null,
    primary key (consumer_id, subconsumer_id)
);

create table pgq_ext.completed_event (
    consumer_id     text not null,
    subconsumer_id  text not null default '',
    batch_id        bigint not null,
    event_id        bigint not null,
    primary key (consumer_id, subconsumer_id, batch_id, event_id)
);

create table pgq_ext.partial_batch (
    consumer_id     text not null,
    subconsumer_id  text not null default '',
    cur_batch_id    bigint not null,
    primary key (consumer_id, subconsumer_id)
);

-- NULL unless pgq_ext was created as an extension.
create function pgq_ext.version() returns text
language plpgsql stable as $$
declare
    v text;
begin
    select e.extversion into v from pg_catalog.pg_extension e where e.extname = 'pgq_ext';
    return v;
end;
$$;

create function pgq_ext.is_batch_done(p_consumer text, p_sub text, p_batch bigint)
returns boolean language plpgsql stable as $$
declare
    last bigint;
begin
    select b.last_batch_id into last from pgq_ext.completed_batch b
     where b.consumer_id = p_consumer and b.subconsumer_id = p_sub;
    return found and last = p_batch;
end;
$$;

create function pgq_ext.is_batch_done(p_consumer text, p_batch bigint)
returns boolean language sql stable as $$
    select pgq_ext.is_batch_done(p_consumer, '', p_batch)
$$;

create function pgq_ext.set_batch_done(p_consumer text, p_sub text, p_batch bigint)
returns boolean language plpgsql as $$
begin
    if pgq_ext.is_batch_done(p_consumer, p_sub, p_batch) then
        return false;
    end if;
    if p_batch > 0 then
        update pgq_ext.completed_batch set last_batch_id = p_batch
         where consumer_id = p_consumer and subconsumer_id = p_sub;
        if not found then
            insert into pgq_ext.completed_batch (consumer_id, subconsumer_id, last_batch_id)
            values (p_consumer, p_sub, p_batch);
        end if;
    end if;
    return true;
end;
$$;

create function pgq_ext.set_batch_done(p_consumer text, p_batch bigint)
returns boolean language sql as $$
    select pgq_ext.set_batch_done(p_consumer, '', p_batch)
$$;

create function pgq_ext.get_last_tick(p_consumer text, p_sub text)
returns bigint language sql stable as $$
    select t.last_tick_id from pgq_ext.completed_tick t
     where t.consumer_id = p_consumer and t.subconsumer_id = p_sub
$$;

create function pgq_ext.get_last_tick(p_consumer text)
returns bigint language sql stable as $$
    select pgq_ext.get_last_tick(p_consumer, '')
$$;

create function pgq_ext.set_last_tick(p_consumer text, p_sub text, p_tick bigint)
returns integer language plpgsql as $$
begin
    if p_tick is null then
        delete from pgq_ext.completed_tick
         where consumer_id = p_consumer and subconsumer_id = p_sub;
        return 1;
    end if;
    update pgq_ext.completed_tick set last_tick_id = p_tick
     where consumer_id = p_consumer and subconsumer_id = p_sub;
    if not found then
        insert into pgq_ext.completed_tick (consumer_id, subconsumer_id, last_tick_id)
        values (p_consumer, p_sub, p_tick);
    end if;
    return 1;
end;
$$;

create function pgq_ext.set_last_tick(p_consumer text, p_tick bigint)
returns integer language sql as $$
    select pgq_ext.set_last_tick(p_consumer, '', p_tick)
$$;
