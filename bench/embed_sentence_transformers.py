"""The peer for the embedding benchmark, and the reference for correctness:
sentence-transformers on PyTorch (CPU), same model files, same sentences, same threads.

    python bench/embed_sentence_transformers.py MODEL_DIR [THREADS] [OURS.jsonl ...]

Prints sentences/s at batch 1 and 32, and for each OURS.jsonl (vectors from
`embed_bench`) the largest absolute difference, the lowest cosine similarity, and whether
every sentence's nearest neighbours come in the same order.
"""

import json
import os
import resource
import sys
import time

import torch
from sentence_transformers import SentenceTransformer

SENTENCES = open(os.path.join(os.path.dirname(__file__), "reference_sentences.txt"), encoding="utf-8").read().splitlines()
WORDS = ["coach", "goal", "habit", "focus", "sleep", "run", "career", "plan", "week", "progress", "client", "session"]
CORPUS = [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(8 + i % 17)) for i in range(512)]

model_dir = sys.argv[1]
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
torch.set_num_threads(threads)
model = SentenceTransformer(model_dir, device="cpu")
ref = model.encode(SENTENCES, normalize_embeddings=True)

model.encode(CORPUS[:32], batch_size=32)
t = time.perf_counter()
model.encode(CORPUS, batch_size=32)
b32 = len(CORPUS) / (time.perf_counter() - t)
t = time.perf_counter()
for s in CORPUS[:128]:
    model.encode([s], batch_size=1)
b1 = 128 / (time.perf_counter() - t)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"engine: sentence-transformers on torch {torch.__version__} CPU, threads {threads}")
print(f"batch 1: {b1:.0f} sentences/s | batch 32: {b32:.0f} sentences/s | peak RSS MB {rss:.0f}")


def order(vectors, i):
    sims = [(float(sum(a * b for a, b in zip(vectors[i], v))), j) for j, v in enumerate(vectors) if j != i]
    return [j for _, j in sorted(sims, reverse=True)]


for path in sys.argv[3:]:
    ours = [json.loads(line) for line in open(path)]
    max_diff = max(abs(a - b) for u, v in zip(ours, ref) for a, b in zip(u, v))
    min_cos = min(sum(a * b for a, b in zip(u, v)) for u, v in zip(ours, ref))
    same = all(order(ours, i) == order(ref.tolist(), i) for i in range(len(SENTENCES)))
    print(f"{path}: max |diff| {max_diff:.2e}, min cosine {min_cos:.6f}, same neighbour order: {same}")
