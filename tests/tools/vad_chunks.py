#!/usr/bin/python3
"""tests/tools/vad_chunks.py DIR [CHUNKS [SEED [ONSET_S]]] - Silero v5 inputs.

Writes DIR/vad_00.npy ... (CHUNKS chunks of one seeded voiced-like signal at
16 kHz, each [1, 576]: 64 samples of context + 512 new, as Silero v5 is fed;
silent before ONSET_S seconds), DIR/sr.npy (16000, int64), DIR/state0.npy (a
zero [2, 1, 128] state) and DIR/one.npy ([1] float32, for error cases).
Defaults: 20 chunks, seed 20240613, onset 0.12 s. Test tooling (python3-numpy
from apt), used by tests/cluster.sh, tests/rejoin.sh and tools/test-rxe.sh.
"""
import sys

import numpy as np


def main():
    if not 2 <= len(sys.argv) <= 5:
        sys.exit(__doc__)
    d = sys.argv[1]
    chunks = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 20240613
    onset = float(sys.argv[4]) if len(sys.argv) > 4 else 0.12
    rng = np.random.default_rng(seed)
    n = 64 + chunks * 512
    t = np.arange(n) / 16000.0
    f0 = 140 + 60 * np.sin(2 * np.pi * 0.7 * t)
    ph = 2 * np.pi * np.cumsum(f0) / 16000.0
    env = 0.5 * (1 + np.sin(2 * np.pi * 4 * t)) * (t > onset)
    sig = env * (0.5 * np.sin(ph) + 0.25 * np.sin(2 * ph) + 0.12 * np.sin(3 * ph))
    sig = (0.4 * sig + 0.01 * rng.standard_normal(n)).astype(np.float32)
    for k in range(chunks):
        np.save("%s/vad_%02d.npy" % (d, k), sig[k * 512: k * 512 + 576].reshape(1, 576))
    np.save(d + "/sr.npy", np.array(16000, dtype=np.int64))
    np.save(d + "/state0.npy", np.zeros((2, 1, 128), np.float32))
    np.save(d + "/one.npy", np.ones((1,), np.float32))


if __name__ == "__main__":
    main()
