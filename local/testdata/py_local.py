"""A Skytools python-pgq LocalConsumer, run by python_test.go beside the Go
local consumer on the same queue, consumer and tracking file.

Each batch's events go into the destination's applied table (ev_id,
tick_id, by_whom = 'python') in one transaction. The script stops after
finishing the batch that ends at tick stop_tick; with die_after_save_tick
it instead dies (exit code 9) right after writing that tick to the
tracking file, before finish_batch.
"""
import os
import sys

import pgq


class LocalApply(pgq.LocalConsumer):
    def process_local_batch(self, db, batch_id, event_list):
        dst = self.get_database("dst_db")
        curs = dst.cursor()
        tick = self.batch_info["tick_id"]
        for ev in event_list:
            curs.execute("insert into applied (ev_id, tick_id, by_whom) values (%s, %s, 'python')",
                         [ev.ev_id, tick])
        dst.commit()

    def set_batch_done(self):
        super().set_batch_done()
        if self.batch_info["tick_id"] == self.cf.getint("die_after_save_tick", 0):
            os._exit(9)

    def process_batch(self, db, batch_id, event_list):
        super().process_batch(db, batch_id, event_list)
        if self.batch_info["tick_id"] >= self.cf.getint("stop_tick"):
            self.stop()


if __name__ == "__main__":
    LocalApply("py_local", "src_db", sys.argv[1:]).start()
