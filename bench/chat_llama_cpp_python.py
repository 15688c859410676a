"""The peer for the embedded chat benchmark: llama.cpp through llama-cpp-python.

Same GGUF, same prompt and chat template (from the GGUF), greedy, 64 new tokens at most,
same thread count; median of RUNS runs after one warm-up. Usage:
    python bench/chat_llama_cpp_python.py MODEL.gguf [RUNS] [THREADS]
"""

import resource
import statistics
import sys
import time

from llama_cpp import Llama

SYSTEM = "You are a helpful study coach. Answer in a few sentences."
USER = "Give me one practical tip that can help me stay focused while studying for my exams this week."

path = sys.argv[1]
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 6
threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2

t0 = time.perf_counter()
llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=512, verbose=False)
load = time.perf_counter() - t0
messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]

# Warm-up, not streamed, for the answer and the prompt's token count.
warm = llm.create_chat_completion(messages, max_tokens=64, temperature=0.0)
answer = warm["choices"][0]["message"]["content"]
n_prompt = warm["usage"]["prompt_tokens"]

pp, tg, ttft = [], [], []
for run in range(runs):
    llm.reset()
    start = time.perf_counter()
    first = None
    chunks = 0
    for chunk in llm.create_chat_completion(messages, max_tokens=64, temperature=0.0, stream=True):
        if chunk["choices"][0]["delta"].get("content"):
            if first is None:
                first = time.perf_counter() - start
            chunks += 1
    total = time.perf_counter() - start
    ttft.append(first * 1000)
    pp.append(n_prompt / first)
    tg.append((chunks - 1) / (total - first))

rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"engine: llama-cpp-python {__import__('llama_cpp').__version__}, threads {threads}, load {load:.2f} s")
print(f"prompt tok/s {statistics.median(pp):.0f} | generated tok/s {statistics.median(tg):.1f} | TTFT ms {statistics.median(ttft):.1f} | peak RSS MB {rss:.0f}")
print(f"answer: {answer}")
