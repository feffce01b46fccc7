"""The python-pgq baseline of the bench's remote INSERT-per-event case: a
Skytools RemoteConsumer whose process_remote_batch runs one INSERT per
event on the destination. It stops once it has applied want_events and
writes "<events> <seconds>" to out_file, the seconds counted from its first
work() call (after the interpreter started) to the end of the last batch
(destination committed, batch finished on the source)."""
import sys
import time

import pgq


class RemoteInsert(pgq.RemoteConsumer):
    def __init__(self, args):
        super().__init__("py_remote", "src_db", "dst_db", args)
        self.want = self.cf.getint("want_events")
        self.out = self.cf.get("out_file")
        self.count = 0
        self.t0 = None

    def process_remote_batch(self, db, batch_id, event_list, dst_db):
        curs = dst_db.cursor()
        for ev in event_list:
            curs.execute(
                "insert into public.bench_dst (ev_id, ev_time, ev_type, ev_data,"
                " ev_extra1, ev_extra2, ev_extra3, ev_extra4)"
                " values (%s, %s, %s, %s, %s, %s, %s, %s)",
                [ev.ev_id, ev.ev_time, ev.ev_type, ev.ev_data,
                 ev.ev_extra1, ev.ev_extra2, ev.ev_extra3, ev.ev_extra4])
            self.count += 1

    def work(self):
        if self.t0 is None:
            self.t0 = time.time()
        more = super().work()
        if self.count >= self.want:
            with open(self.out, "w") as f:
                f.write("%d %f\n" % (self.count, time.time() - self.t0))
            self.looping = 0
        return more


if __name__ == "__main__":
    RemoteInsert(sys.argv[1:]).start()
