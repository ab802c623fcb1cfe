/* The reference for compare_hq.py: N `true` programs, at most CPUS at a time, posix_spawnp +
 * waitpid, nothing else. What a task runtime's throughput is measured against.
 * Usage: spawn_loop N CPUS [COMMAND [ARG...]] (COMMAND defaults to `true`; latency_bench.py runs
 * `sleep 0.05`); prints the elapsed seconds. Compiled at run time (cc -O2).
 */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s TASKS CPUS [COMMAND [ARG...]]\n", argv[0]);
        return 2;
    }
    long tasks = atol(argv[1]);
    long cpus = atol(argv[2]);
    char *true_args[] = {"true", NULL};
    char **args = argc > 3 ? argv + 3 : true_args;
    long started = 0, running = 0;
    double begin = now();
    while (started < tasks || running > 0) {
        while (running < cpus && started < tasks) {
            pid_t pid;
            int err = posix_spawnp(&pid, args[0], NULL, NULL, args, environ);
            if (err != 0) {
                fprintf(stderr, "posix_spawnp: %s\n", strerror(err));
                return 1;
            }
            started++;
            running++;
        }
        int status;
        if (waitpid(-1, &status, 0) < 0) {
            perror("waitpid");
            return 1;
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "a task failed (status %d)\n", status);
            return 1;
        }
        running--;
    }
    printf("%.6f\n", now() - begin);
    return 0;
}
