"""torch.distributed gloo all_reduce of N fp32 elements with 2 and 3 ranks on loopback: the
reference beside Cohort's aggregation round (Benchmarks/AggregationBench). Prints
`ELEMENTS RANKS MS MS_SGD` per size and rank count (medians of 12 after a warm-up), or one
`skip: …` line. MS is all_reduce alone; MS_SGD is what a DDP step does with the same gradient:
all_reduce, divide by the ranks, and an SGD momentum step on each rank's own copy of the
parameters (what Cohort's hub does once for everyone before it sends the new parameters).

    python3 gloo_allreduce.py [--ranks 2,3] SIZE...

With `--serve`, one rank count and one size: the ranks start once and print `ready`; then each
line `go` on standard input measures again (ROUNDS rounds of each, default 9) and prints
`MS MS_SGD`; end of input stops them. The aggregation benchmark uses it to time gloo right
before and right after each of its own cases, on a host whose speed drifts from minute to minute.

    python3 gloo_allreduce.py --serve [--rounds ROUNDS] --ranks W SIZE
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


def join(rank, world, port):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)


def measure(n, world, rounds, state):
    """(all_reduce ms, all_reduce + SGD ms): medians of `rounds` after a warm-up round."""
    import time
    if n not in state:
        p = torch.zeros(n, dtype=torch.float32, requires_grad=True)
        state[n] = (torch.ones(n, dtype=torch.float32), p, torch.optim.SGD([p], lr=0.01, momentum=0.9))
    t, p, opt = state[n]
    dist.all_reduce(t)
    plain, stepped = [], []
    for sgd in (False, True):
        for _ in range(rounds + 1):
            dist.barrier()
            start = time.perf_counter()
            dist.all_reduce(t)
            if sgd:
                t.div_(world)
                p.grad = t
                opt.step()
            (stepped if sgd else plain).append((time.perf_counter() - start) * 1000)
    plain, stepped = sorted(plain[1:]), sorted(stepped[1:])
    return plain[len(plain) // 2], stepped[len(stepped) // 2]


def run(rank, world, sizes, port, queue):
    join(rank, world, port)
    state = {}
    for n in sizes:
        ms, ms_sgd = measure(n, world, 12, state)
        if rank == 0:
            queue.put((n, world, ms, ms_sgd))
    dist.destroy_process_group()


def follow(rank, world, n, rounds, port):
    """A rank other than 0 in --serve: measures whenever rank 0 says so, until it says stop."""
    join(rank, world, port)
    state, command = {}, torch.zeros(1)
    while True:
        dist.broadcast(command, src=0)
        if command.item() == 0:
            break
        measure(n, world, rounds, state)
    dist.destroy_process_group()


def serve(world, n, rounds):
    """Rank 0 is this process: it reads the commands and prints the figures."""
    port = 29500 + world + os.getpid() % 1000
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=follow, args=(r, world, n, rounds, port)) for r in range(1, world)]
    for p in procs:
        p.start()
    join(0, world, port)
    state, command = {}, torch.zeros(1)
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            continue
        command.fill_(1)
        dist.broadcast(command, src=0)
        ms, ms_sgd = measure(n, world, rounds, state)
        print(f"{ms:.2f} {ms_sgd:.2f}", flush=True)
    command.fill_(0)
    dist.broadcast(command, src=0)
    dist.destroy_process_group()
    for p in procs:
        p.join()


if __name__ == "__main__":
    args = sys.argv[1:]
    worlds = (2, 3)
    if "--ranks" in args:
        i = args.index("--ranks")
        worlds = tuple(int(w) for w in args[i + 1].split(","))
        del args[i:i + 2]
    rounds = 9
    if "--rounds" in args:
        i = args.index("--rounds")
        rounds = int(args[i + 1])
        del args[i:i + 2]
    serving = "--serve" in args
    if serving:
        args.remove("--serve")
    sizes = [int(s) for s in args] or [1 << 20]
    if serving:
        serve(worlds[0], sizes[0], rounds)
        sys.exit(0)
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
