"""Reference implementations of Skytools' generic jobs, for the side-by-side
tests: each kind does what the Skytools script of that name does, on the
Debian-shipped python3-pgq and python3-skytools, reading the same ini file
as the Go job.

Usage: skytools_jobs.py KIND FILE.ini [skytools options: --register, -v ...]

The scripts themselves are not shipped by Debian; these follow their
documented behaviour (pgq/skytools-legacy, scripts/):
  queue_mover            SerialConsumer; every event into dst_queue_name,
                         keeping type, data, extras and time
  queue_splitter         SerialConsumer; each event into the queue named by
                         its queue_field (default extra1)
  simple_serial_consumer SerialConsumer; dst_query per event, every type
  simple_consumer        Consumer; dst_query per I:/U:/D: event, autocommit
  simple_local_consumer  LocalConsumer; dst_query per I:/U:/D: event
Set loop_delay = -1 in the ini (or --set loop_delay=-1) to process one
batch and exit.
"""

import sys

import pgq
import skytools

FIELDS = ['type', 'data', 'extra1', 'extra2', 'extra3', 'extra4', 'time']


def as_row(ev):
    return [ev.type, ev.data, ev.extra1, ev.extra2, ev.extra3, ev.extra4, ev.time]


def query_args(ev, tick_id):
    """The dst_query parameters: the urldecoded payload and pgq.* keys."""
    args = {} if ev.ev_data is None else skytools.db_urldecode(ev.ev_data)
    args.update({
        'pgq.tick_id': tick_id,
        'pgq.ev_id': ev.ev_id,
        'pgq.ev_time': ev.ev_time,
        'pgq.ev_type': ev.ev_type,
        'pgq.ev_data': ev.ev_data,
        'pgq.ev_extra1': ev.ev_extra1,
        'pgq.ev_extra2': ev.ev_extra2,
        'pgq.ev_extra3': ev.ev_extra3,
        'pgq.ev_extra4': ev.ev_extra4,
    })
    return args


def row_event(ev):
    return (ev.ev_type or '')[:2] in ('I:', 'U:', 'D:')


class Mover(pgq.SerialConsumer):
    def __init__(self, args):
        super().__init__("queue_mover3", "src_db", "dst_db", args)
        self.dst_queue_name = self.cf.get("dst_queue_name")

    def process_remote_batch(self, db, batch_id, ev_list, dst_db):
        rows = [as_row(ev) for ev in ev_list]
        pgq.bulk_insert_events(dst_db.cursor(), rows, FIELDS, self.dst_queue_name)


class Splitter(pgq.SerialConsumer):
    def __init__(self, args):
        super().__init__("queue_splitter3", "src_db", "dst_db", args)

    def process_remote_batch(self, db, batch_id, ev_list, dst_db):
        field = self.cf.get('queue_field', 'extra1')
        per_queue = {}
        for ev in ev_list:
            per_queue.setdefault(getattr(ev, field), []).append(as_row(ev))
        curs = dst_db.cursor()
        for queue, rows in per_queue.items():
            pgq.bulk_insert_events(curs, rows, FIELDS, queue)


class SerialQuery(pgq.SerialConsumer):
    def __init__(self, args):
        super().__init__("simple_serial_consumer", "src_db", "dst_db", args)
        self.dst_query = self.cf.get("dst_query")

    def process_remote_batch(self, db, batch_id, ev_list, dst_db):
        curs = dst_db.cursor()
        for ev in ev_list:
            curs.execute(self.dst_query, query_args(ev, self.batch_info['tick_id']))


class Query(pgq.Consumer):
    def reload(self):
        super().reload()
        self.dst_query = self.cf.get("dst_query")
        if self.cf.get("consumer_filter", ""):
            self.consumer_filter = self.cf.get("consumer_filter")

    def process_event(self, db, ev):
        if not row_event(ev):
            return
        curs = self.get_database('dst_db', autocommit=1).cursor()
        curs.execute(self.dst_query, query_args(ev, self.batch_info['tick_id']))


class LocalQuery(pgq.LocalConsumer):
    def reload(self):
        super().reload()
        self.dst_query = self.cf.get("dst_query")
        if self.cf.get("consumer_filter", ""):
            self.consumer_filter = self.cf.get("consumer_filter")

    def process_local_event(self, db, batch_id, ev):
        if not row_event(ev):
            return
        curs = self.get_database('dst_db', autocommit=1).cursor()
        curs.execute(self.dst_query, query_args(ev, self.batch_info['tick_id']))


KINDS = {
    'queue_mover': Mover,
    'queue_splitter': Splitter,
    'simple_serial_consumer': SerialQuery,
    'simple_consumer': lambda args: Query("simple_consumer3", "src_db", args),
    'simple_local_consumer': lambda args: LocalQuery("simple_local_consumer3", "src_db", args),
}

if __name__ == '__main__':
    KINDS[sys.argv[1]](sys.argv[2:]).start()
