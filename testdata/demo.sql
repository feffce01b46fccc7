-- Node schema of the targeted-copy demo. rows receives copied rows; the
-- trigger logs every write into applies, so a row applied twice shows up
-- even though the row applier upserts; sent records what this node sent.
create table if not exists rows (id text primary key, origin text not null, payload text);
create table if not exists applies (id text not null, at timestamptz not null default clock_timestamp());
create table if not exists sent (id text primary key, targets text[] not null);
create or replace function log_apply() returns trigger language plpgsql as
  $$ begin insert into applies (id) values (new.id); return new; end $$;
drop trigger if exists log_apply on rows;
create trigger log_apply after insert or update on rows for each row execute function log_apply();
truncate rows, applies, sent;
