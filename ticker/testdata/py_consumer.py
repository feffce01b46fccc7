"""A Skytools python-pgq consumer, used by TestPythonConsumer: it appends
every event's data to the file named by out_file, and stops after an event
whose data is "stop"."""
import sys

import pgq


class Collector(pgq.Consumer):
    def process_event(self, db, ev):
        with open(self.cf.get("out_file"), "a") as f:
            f.write(ev.ev_data + "\n")
        if ev.ev_data == "stop":
            self.looping = 0


if __name__ == "__main__":
    Collector("py_consumer", "src_db", sys.argv[1:]).start()
