#!/usr/bin/env python3
"""Spawn hey_jarvis on the local node, run it on a golden input, print the score.

    aidos-node ... --socket /tmp/aidos.sock &
    AIDOS_SOCKET=/tmp/aidos.sock python3 node/python/example.py \
        ~/.cache/aidos/models/openwakeword/hey_jarvis_v0.1.onnx
"""
import sys

import aidos

model = sys.argv[1]
with aidos.Client() as c:
    try:
        c.spawn("jarvis-example", model, priority=1)
    except aidos.AidosError as e:
        if e.code != -17:  # -EEXIST: spawned by an earlier run
            raise
    try:
        import numpy as np
        x = c.tensor(np.float32, (1, 16, 96))   # lives in the shared heap: no copy at infer
        x[:] = 0.5
    except ImportError:
        import array
        x = aidos.Tensor(array.array("f", [0.5] * (16 * 96)), "float32", (1, 16, 96))
    out = c.infer("jarvis-example", {"x.1": x})
    for name, v in out.items():
        print(name, v)
    rtt = sorted(c.ping(1000))
    print("ping median %d ns, p99 %d ns" % (rtt[500], rtt[990]))
    print(c.stats())
    c.kill("jarvis-example")
