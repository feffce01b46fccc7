-- pgq-go copier tables, version 3 (filled in below).
select 1;
