#!/usr/bin/env python3
"""Writes fuzz/seeds/: one file per distinct message of the golden captures
in bgp/tests/data (see its README.md), each prefixed with the selector byte
of the context its session negotiated (fuzz_targets/decode_message.rs,
`context`). Run from anywhere: python3 fuzz/make_seeds.py"""
import hashlib
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "bgp", "tests", "data")
SEEDS = os.path.join(HERE, "seeds")
# Selector per scenario: 0 = 2-octet AS, 1 = 4-octet AS, 2 = 4-octet AS
# with ADD-PATH both ways, 4 = 4-octet AS with extended messages.
CONTEXT = {"ebgp-mp": 2, "as4-trans": 0, "ibgp-rr": 1, "ext-msg": 4}

os.makedirs(SEEDS, exist_ok=True)
for old in os.listdir(SEEDS):
    os.remove(os.path.join(SEEDS, old))
seen = set()
for scenario, selector in sorted(CONTEXT.items()):
    sdir = os.path.join(DATA, scenario)
    for name in sorted(os.listdir(sdir)):
        if not name.endswith(".bin"):
            continue
        buf = open(os.path.join(sdir, name), "rb").read()
        off = i = 0
        while off + 19 <= len(buf):
            (length,) = struct.unpack(">H", buf[off + 16:off + 18])
            msg = buf[off:off + length]
            seed = bytes([selector]) + msg
            digest = hashlib.sha1(seed).hexdigest()
            if digest not in seen:
                seen.add(digest)
                out = f"{scenario}-{name[:-4]}-{i:03d}"
                with open(os.path.join(SEEDS, out), "wb") as fh:
                    fh.write(seed)
            off += length
            i += 1
print(f"{len(seen)} seeds in {SEEDS}")
