/*
 * hqaffinity: CPU topology, affinity, NUMA memory policy and a vfork-style launcher for hqshm.
 *
 * This header is also the cffi cdef: setup.py feeds it to cffi with the preprocessor lines
 * removed, so it holds only plain declarations (no macros that cffi would need to see).
 * Failures come back as a negative errno (hq_spawn: in its result struct), so the caller
 * never reads errno after the call has released the GIL.
 */
#ifndef HQAFFINITY_H
#define HQAFFINITY_H

#include <stddef.h>
#include <stdint.h>

/* Where a launch failed. Values are shared with hqshm.node.affinity.SpawnStage. */
enum hq_spawn_stage {
    HQ_STAGE_NONE = 0,
    HQ_STAGE_CWD = 1,
    HQ_STAGE_STDIN = 2,
    HQ_STAGE_STDOUT = 3,
    HQ_STAGE_STDERR = 4,
    HQ_STAGE_AFFINITY = 5,
    HQ_STAGE_MEMPOLICY = 6,
    HQ_STAGE_EXEC = 7,
    HQ_STAGE_FORK = 8,
    HQ_STAGE_SESSION = 9,
    HQ_STAGE_PDEATHSIG = 10
};

struct hq_spawn_args {
    const char *path;            /* program to run; NULL means argv[0] */
    const char *const *argv;     /* NULL-terminated */
    const char *const *envp;     /* NULL-terminated; the task's whole environment */
    const char *cwd;             /* NULL: inherit */
    const char *stdin_path;      /* wins over stdin_fd */
    int stdin_fd;                /* fd to dup2 onto 0; -1 with no path: /dev/null */
    const char *stdout_path;     /* NULL: /dev/null; otherwise created and truncated */
    const char *stderr_path;     /* NULL: /dev/null; otherwise created and truncated */
    const uint64_t *cpumask;     /* CPU bitmap, little-endian words */
    int nwords;                  /* words in cpumask; 0: inherit the affinity */
    int mem_mode;                /* 0 default, 1 preferred, 2 bind (kernel MPOL_* values) */
    int mem_node;                /* -1: leave the memory policy alone */
    int new_session;             /* nonzero: setsid() */
    int pdeathsig;               /* signal sent when the spawning thread dies; 0: none */
};

struct hq_spawn_result {
    int stage;                   /* enum hq_spawn_stage */
    int err;                     /* errno of the failed step */
};

struct hq_cpu {
    int id;
    int core;                    /* core_id, unique only within its socket */
    int socket;                  /* physical_package_id */
    int numa;                    /* NUMA node; 0 when sysfs has no node directories */
    int first_sibling;           /* lowest CPU id among its hyper-thread siblings */
};

int hq_getaffinity(int pid, uint64_t *mask, int nwords);
int hq_setaffinity(int pid, const uint64_t *mask, int nwords);
int hq_set_mempolicy(int mode, int node);
int hq_get_mempolicy(int *mode, uint64_t *nodemask, int nwords);

/* Points out[0..n-1] at the n NUL-terminated strings packed in blob[0..len) and sets out[n]
 * to NULL. Returns n, or -1 unless the blob holds exactly n strings (an embedded NUL). */
int hq_split_strings(const char *blob, size_t len, const char **out, int n);

/* Returns the child's pid, or -1 with r filled in; a child that failed has been reaped. */
int hq_spawn(const struct hq_spawn_args *a, struct hq_spawn_result *r);

/* Fills out[0..max) with the online CPUs, in the order of the online list, and returns how
 * many CPUs are online (possibly more than max), or -errno. */
int hq_read_topology(const char *sysfs_root, struct hq_cpu *out, int max);

#endif
