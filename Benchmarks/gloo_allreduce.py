"""torch.distributed gloo all_reduce of N fp32 elements with 2 and 3 ranks on loopback: the
reference beside Cohort's aggregation round (Benchmarks/AggregationBench). Prints
`ELEMENTS RANKS MS MS_SGD` per size and rank count (medians of 12 after a warm-up), or one
`skip: …` line. MS is all_reduce alone; MS_SGD is what a DDP step does with the same gradient:
all_reduce, divide by the ranks, and an SGD momentum step on each rank's own copy of the
parameters (what Cohort's hub does once for everyone before it sends the new parameters).

    python3 gloo_allreduce.py [--ranks 2,3] SIZE...
"""
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
        p = torch.zeros(n, dtype=torch.float32, requires_grad=True)
        opt = torch.optim.SGD([p], lr=0.01, momentum=0.9)
        dist.all_reduce(t)
        plain, stepped = [], []
        for sgd in (False, True):
            for _ in range(13):
                dist.barrier()
                start = time.perf_counter()
                dist.all_reduce(t)
                if sgd:
                    t.div_(world)
                    p.grad = t
                    opt.step()
                (stepped if sgd else plain).append((time.perf_counter() - start) * 1000)
        if rank == 0:
            plain, stepped = sorted(plain[1:]), sorted(stepped[1:])
            queue.put((n, world, plain[len(plain) // 2], stepped[len(stepped) // 2]))
    dist.destroy_process_group()


if __name__ == "__main__":
    args = sys.argv[1:]
    worlds = (2, 3)
    if "--ranks" in args:
        i = args.index("--ranks")
        worlds = tuple(int(w) for w in args[i + 1].split(","))
        del args[i:i + 2]
    sizes = [int(s) for s in args] or [1 << 20]
    ctx = mp.get_context("spawn")
    for world in worlds:
        queue = ctx.Queue()
        port = 29500 + world + os.getpid() % 1000
        procs = [ctx.Process(target=run, args=(r, world, sizes, port, queue)) for r in range(world)]
        for p in procs:
            p.start()
        for _ in sizes:
            n, w, ms, ms_sgd = queue.get()
            print(n, w, f"{ms:.2f}", f"{ms_sgd:.2f}", flush=True)
        for p in procs:
            p.join()
