"""The FAISS peer of `ann_bench run`: HNSW (IndexHNSWFlat, inner product) on the same
vectors, same M / efConstruction / efSearch, one thread, queries one at a time.

    pip install faiss-cpu numpy
    python bench/ann_faiss.py DIR [M] [EF_CONSTRUCTION] [EF_SEARCH,...]
"""
import sys
import time
from pathlib import Path

import faiss
import numpy as np

DIMS, K = 384, 10


def main() -> None:
    d = Path(sys.argv[1])
    m = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    ef_c = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    efs = [int(x) for x in (sys.argv[4] if len(sys.argv) > 4 else "32,64,128").split(",")]
    base = np.fromfile(d / "base.f32", dtype="<f4").reshape(-1, DIMS)
    queries = np.fromfile(d / "queries.f32", dtype="<f4").reshape(-1, DIMS)
    truth = np.fromfile(d / "truth.u32", dtype="<u4").reshape(-1, K)
    faiss.omp_set_num_threads(1)
    index = faiss.IndexHNSWFlat(DIMS, m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_c
    t = time.perf_counter()
    index.add(base)
    build = time.perf_counter() - t
    print(f"FAISS {faiss.__version__} HNSW: {len(base)} vectors, M={m}, efConstruction={ef_c}: built in {build:.1f} s")
    for ef in efs:
        index.hnsw.efSearch = ef
        for q in queries[:50]:
            index.search(q[None, :], K)
        lat, found = [], 0
        for i, q in enumerate(queries):
            t = time.perf_counter()
            _, ids = index.search(q[None, :], K)
            lat.append((time.perf_counter() - t) * 1000)
            found += len(set(ids[0].tolist()) & set(truth[i].tolist()))
        lat.sort()
        p = lambda x: lat[min(len(lat), max(1, int(np.ceil(x / 100 * len(lat))))) - 1]
        print(f"| FAISS HNSW | {len(base)} | {ef} | {found / (len(queries) * K):.4f} | {p(50):.3f} | {p(99):.3f} | {build:.1f} |")


if __name__ == "__main__":
    main()
