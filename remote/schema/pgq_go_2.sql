-- pgq-go destination tracking, version 2 (filled in below).
select 1;
