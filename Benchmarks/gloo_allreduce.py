"""torch.distributed gloo all_reduce of N fp32 elements with 2 and 3 ranks on loopback: the
reference beside Cohort's aggregation round (Benchmarks/AggregationBench). Prints
`ELEMENTS RANKS MILLISECONDS` (median of 12 after a warm-up), or one `skip: …` line."""
import os
import sys

try:
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
except Exception as e:  # torch is optional: pip install torch==2.13.0
    print(f"skip: torch not importable ({e.__class__.__name__}); pip install torch==2.13.0")
    sys.exit(0)


def run(rank, world, sizes, port, queue):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    import time
    for n in sizes:
        t = torch.ones(n, dtype=torch.float32)
        dist.all_reduce(t)
        times = []
        for _ in range(12):
            dist.barrier()
            start = time.perf_counter()
            dist.all_reduce(t)
            times.append((time.perf_counter() - start) * 1000)
        if rank == 0:
            times.sort()
            queue.put((n, world, times[len(times) // 2]))
    dist.destroy_process_group()


if __name__ == "__main__":
    sizes = [int(s) for s in sys.argv[1:]] or [1 << 20]
    ctx = mp.get_context("spawn")
    for world in (2, 3):
        queue = ctx.Queue()
        port = 29500 + world + os.getpid() % 1000
        procs = [ctx.Process(target=run, args=(r, world, sizes, port, queue)) for r in range(world)]
        for p in procs:
            p.start()
        for _ in sizes:
            n, w, ms = queue.get()
            print(n, w, f"{ms:.2f}", flush=True)
        for p in procs:
            p.join()
