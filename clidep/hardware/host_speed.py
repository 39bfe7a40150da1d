"""The host's own figures, measured: memory read bandwidth and fp32 GEMM throughput.

``clidep bench`` scales projections and rooflines by them; ``compress --device host`` sizes a
student by them.
"""

from __future__ import annotations

import os
import time

import numpy as np


def measure_host(size_mb: int = 512) -> dict:
    """This machine's memory read bandwidth (GB/s) and fp32 GEMM throughput (GFLOP/s), medians of 5.

    Bandwidth is a multi-threaded read, as decode reads the weights: one thread per core takes the
    maximum of its share of a SIZE_MB buffer (numpy releases the GIL while it reduces; a maximum is
    lighter arithmetic than a pairwise sum, which ran compute-bound at 27 GB/s against 37 here). A
    single-threaded copy reports about half of that on a 2-core VM and flatters every roofline.
    """
    from concurrent.futures import ThreadPoolExecutor

    cores = os.cpu_count() or 1
    a = np.ones(size_mb * 2**20 // 4, np.float32)
    chunks = np.array_split(a, cores)
    times = []
    with ThreadPoolExecutor(cores) as pool:
        for _ in range(6):
            t = time.perf_counter()
            list(pool.map(np.max, chunks))
            times.append(time.perf_counter() - t)
    bandwidth = a.nbytes / np.median(times[1:]) / 1e9  # the first pass faults the pages in
    m = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        m @ m
        times.append(time.perf_counter() - t)
    return {
        "mem_bandwidth_gbs": bandwidth,
        "bandwidth_method": f"read, {cores} threads, {size_mb} MB",
        "fp32_gflops": 2 * 1024**3 / np.median(times) / 1e9,
        "cores": cores,
    }
