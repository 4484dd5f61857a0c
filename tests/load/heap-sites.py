#!/usr/bin/env python3
"""Bytes in use by allocation site, from the host's `/debug/pprof/heap`.

The profile is pprof's protobuf (gzipped), symbolized by the host; no pprof
reader is installed on these machines, so this reads the few fields it needs
(samples, locations, functions, strings). A site is the first frames that are
not the allocator's or the standard library's.

    curl -s -H "Authorization: Bearer $(cat STATE/admin.token)" \\
        http://ADMIN/debug/pprof/heap -o heap.pb
    python3 tests/load/heap-sites.py heap.pb [--depth 3] [--top 40]
"""
import argparse
import collections
import gzip

MACHINERY = ("jemalloc", "_rjem", "je_", "prof_", "imalloc", "malloc", "calloc", "realloc",
             "__rust", "alloc::", "<alloc", "core::", "<core", "std::", "<std", "hashbrown",
             "bytes::", "<bytes", "tikv")


def varint(buf, i):
    result = shift = 0
    while True:
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, i


def fields(buf):
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(buf, i)
        elif wire == 2:
            length, i = varint(buf, i)
            value, i = buf[i:i + length], i + length
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


def numbers(value, wire):
    if wire == 0:
        return [value]
    out, i = [], 0
    while i < len(value):
        n, i = varint(value, i)
        out.append(n)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("profile")
    parser.add_argument("--depth", type=int, default=3, help="frames that name a site")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    data = open(args.profile, "rb").read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    samples, locations, functions, strings = [], {}, {}, []
    for number, wire, value in fields(data):
        if number == 2:  # Sample: location ids, values
            locs, values = [], []
            for n, w, v in fields(value):
                if n == 1:
                    locs += numbers(v, w)
                elif n == 2:
                    values += numbers(v, w)
            samples.append((locs, values))
        elif number == 4:  # Location: id, lines (function ids)
            lid, funcs = None, []
            for n, w, v in fields(value):
                if n == 1:
                    lid = v
                elif n == 4:
                    funcs += [fv for fn, _, fv in fields(v) if fn == 1]
            locations[lid] = funcs
        elif number == 5:  # Function: id, name
            fid = name = 0
            for n, w, v in fields(value):
                if n == 1:
                    fid = v
                elif n == 2:
                    name = v
            functions[fid] = name
        elif number == 6:
            strings.append(value.decode("utf-8", "replace"))
    sites, total = collections.Counter(), 0
    for locs, values in samples:
        in_use = values[-1]  # inuse_space, the last sample type
        total += in_use
        frames = [strings[functions.get(f, 0)] for loc in locs for f in locations.get(loc, [])]
        ours = [f for f in frames if not f.startswith(MACHINERY) and "alloc" not in f.split("::")[0]]
        sites[" < ".join(ours[:args.depth])] += in_use
    print(f"{total / 2**20:9.2f} MiB in use (sampled estimate)")
    for site, in_use in sites.most_common(args.top):
        print(f"{in_use / 2**20:9.2f} MiB  {site[:300]}")


if __name__ == "__main__":
    main()
