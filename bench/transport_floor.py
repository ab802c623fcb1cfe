"""The transport's own cost per task on a wide cluster (issue 9, item 6): one message in and one
out through pyzmq, with nothing done between them.

    python bench/transport_floor.py [--peers 30,100] [--period 0.1] [--seconds 10]

A ROUTER socket, bound as the server's node socket is (CURVE on, and once off), answers every
message at once with one of about a `ComputeTasks`' size. Its peers are `--peers` DEALER sockets
in one other process, each sending a message of about a task report's size every `--period`
seconds, staggered: what that many one-CPU nodes running `sleep PERIOD` send. The figure is the
answering process's CPU time (user + system, libzmq's I/O thread included) per message answered,
the least a server spends per task that reaches it in a message of its own. Compare it with
`scale_bench.py`'s server CPU per task, measured in the same minutes.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

import zmq

REPORT = b"r" * 120  # a report of one task's end and the next one's start, about
ASSIGNMENT = b"a" * 150  # a ComputeTasks of one task, about


def _peers(endpoint: str, server_key: bytes | None, peers: int, period: float,
           seconds: float) -> None:
    context = zmq.Context()
    sockets = []
    for _ in range(peers):
        sock = context.socket(zmq.DEALER)
        if server_key is not None:
            public, secret = zmq.curve_keypair()
            sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = (
                server_key, public, secret)
        sock.connect(endpoint)
        sockets.append(sock)
    poller = zmq.Poller()
    for sock in sockets:
        poller.register(sock, zmq.POLLIN)
    start = time.monotonic()
    due = [start + period * i / peers for i in range(peers)]
    while time.monotonic() - start < seconds:
        now = time.monotonic()
        for i, sock in enumerate(sockets):
            if now >= due[i]:
                sock.send(REPORT)
                due[i] += period
        for sock, _event in poller.poll(1):
            sock.recv()
    for sock in sockets:
        sock.close(0)
    context.term()


def answer(peers: int, period: float, seconds: float, curve: bool) -> tuple[int, float]:
    """(messages answered, CPU seconds of this process per message) over ``seconds``."""
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    server_key = None
    if curve:
        server_key, secret = zmq.curve_keypair()
        router.curve_server = True
        router.curve_secretkey = secret
    port = router.bind_to_random_port("tcp://127.0.0.1")
    # The peers run a second longer than we count, so that the count ends while they send.
    sender = multiprocessing.Process(
        target=_peers, args=(f"tcp://127.0.0.1:{port}", server_key, peers, period, seconds + 1))
    sender.start()
    try:
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        answered = 0
        started = cpu_start = 0.0
        while not started or time.monotonic() - started < seconds:
            if not poller.poll(5000):
                raise RuntimeError("the peers stopped sending")
            if not started:
                started, cpu_start = time.monotonic(), time.process_time()
            while True:
                try:
                    frames = router.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                router.send_multipart([frames[0].bytes, ASSIGNMENT], zmq.NOBLOCK)
                answered += 1
        cpu = time.process_time() - cpu_start
    finally:
        sender.join(timeout=seconds + 10)
        if sender.is_alive():
            sender.kill()
            sender.join()
        router.close(0)
        context.term()
    return answered, cpu / max(answered, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", default="30,100", help="comma-separated peer counts")
    parser.add_argument("--period", type=float, default=0.1, help="seconds between a peer's "
                        "messages")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(f"One message in, one out, through pyzmq {zmq.__version__} (libzmq "
          f"{zmq.zmq_version()}), a message every {args.period} s from each peer:\n")
    print("| peers | messages a second | CURVE | CPU per message answered |")
    print("| ---: | ---: | --- | ---: |")
    for peers in (int(p) for p in args.peers.split(",")):
        for curve in (True, False):
            count, per_message = answer(peers, args.period, args.seconds, curve)
            print(f"| {peers} | {count / args.seconds:,.0f} | {'on' if curve else 'off'} | "
                  f"{per_message * 1e6:.0f} us |")


if __name__ == "__main__":
    main()
