"""Prints what Skytools' skytools.Config reads, for the Go package's
side-by-side test (TestMatchesPythonSkytools).

Input on stdin: a JSON list of {"file": path, "section": name,
"wildcards": [[key, [values...]], ...]}. Output on stdout: a JSON list
with, for each input, either {"error": kind} when skytools.Config fails,
or {"sections", "keys", "values", "wildcards"}: every key the section
lists (options(), without the built-in defaults the file does not set)
read with every typed getter, plus a key that is not set. A value is
{"v": value} or {"e": kind}; numbers travel as strings (Python ints are
unbounded, floats may be inf or nan).
"""
import configparser
import json
import sys

import skytools

BUILTINS = ("job_name", "service_name", "host_name", "config_dir", "config_file")
GETTERS = ("get", "getint", "getboolean", "getfloat", "getlist", "getdict", "getfile", "getbytes")


def kind(e):
    if isinstance(e, (configparser.ParsingError, configparser.DuplicateSectionError,
                      configparser.DuplicateOptionError, UnicodeDecodeError)):
        return "syntax"
    if isinstance(e, configparser.NoSectionError):
        return "nosection"
    if isinstance(e, configparser.NoOptionError):
        return "nokey"
    if isinstance(e, configparser.InterpolationError):
        return "interpolation"
    if isinstance(e, (ValueError, configparser.Error)):
        return "value"
    return "other:%s:%s" % (type(e).__name__, e)


def read(fn):
    try:
        v = fn()
    except Exception as e:  # every failure is compared by kind
        return {"e": kind(e)}
    if isinstance(v, bool):
        return {"v": v}
    if isinstance(v, (int, float)):
        return {"v": repr(v)}
    if isinstance(v, dict):
        return {"v": dict(v)}
    if isinstance(v, (list, tuple)):
        return {"v": list(v)}
    return {"v": v}


def dump(case):
    try:
        cf = skytools.Config(case["section"], case["file"])
    except Exception as e:
        return {"error": kind(e)}
    raw = configparser.RawConfigParser()
    raw.read(case["file"], encoding="utf-8")
    keys = [k for k in cf.options() if k not in BUILTINS or raw.has_option(case["section"], k)]
    values = {}
    for k in list(cf.options()) + ["no_such_key"]:
        values[k] = {g: read(lambda: getattr(cf, g)(k)) for g in GETTERS}
    wild = [read(lambda: cf.get_wildcard(k, vals)) for k, vals in case.get("wildcards") or []]
    return {"sections": list(cf.sections()), "keys": keys, "values": values, "wildcards": wild}


def main():
    cases = json.load(sys.stdin)
    json.dump([dump(c) for c in cases], sys.stdout)


if __name__ == "__main__":
    main()
