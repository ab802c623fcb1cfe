/*
 * hqaffinity: see hqaffinity.h.
 *
 * hq_spawn uses clone(CLONE_VM | CLONE_VFORK) on a stack of its own, as glibc's posix_spawn
 * does: the cost of fork() grows with the parent's memory, and executors must keep launching
 * thousands of programs a second. The child shares the parent's memory until it execs, so
 * everything between clone and execve is async-signal-safe, allocates nothing, and reports
 * failure by writing (stage, errno) into the parent's frame before _exit(127).
 */
#include "hqaffinity.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

#define MPOL_MODE_MASK 0xff        /* strips MPOL_F_* flags from get_mempolicy's mode */
#define MAX_NODE_WORDS 16          /* 1024 NUMA nodes */
#define CHILD_STACK_SIZE (32 * 1024)
#define DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin"
#define MAX_CPU_ID (1 << 20)       /* refuse absurd sysfs contents rather than allocate them */

/* ---------------------------------------------------------------- affinity and memory policy */

int hq_getaffinity(int pid, uint64_t *mask, int nwords)
{
    if (nwords <= 0)
        return -EINVAL;
    memset(mask, 0, (size_t)nwords * sizeof(uint64_t));
    if (sched_getaffinity(pid, (size_t)nwords * sizeof(uint64_t), (cpu_set_t *)mask) < 0)
        return -errno;
    return 0;
}

int hq_setaffinity(int pid, const uint64_t *mask, int nwords)
{
    if (nwords <= 0)
        return -EINVAL;
    if (sched_setaffinity(pid, (size_t)nwords * sizeof(uint64_t), (const cpu_set_t *)mask) < 0)
        return -errno;
    return 0;
}

/* The kernel reads maxnode - 1 bits, hence the + 1 (libnuma does the same). */
static int set_mempolicy_node(int mode, int node)
{
    uint64_t mask[MAX_NODE_WORDS];
    long rc;

    if (mode == 0) {
        rc = syscall(SYS_set_mempolicy, 0, NULL, 0UL);
    } else if (node < 0) {
        /* MPOL_PREFERRED with no node means "allocate locally"; BIND refuses it. */
        rc = syscall(SYS_set_mempolicy, mode, NULL, 0UL);
    } else {
        int words = node / 64 + 1;
        if (node >= MAX_NODE_WORDS * 64)
            return -EINVAL;
        memset(mask, 0, sizeof(mask));
        mask[node / 64] = (uint64_t)1 << (node % 64);
        rc = syscall(SYS_set_mempolicy, mode, mask, (unsigned long)words * 64 + 1);
    }
    return rc < 0 ? -errno : 0;
}

int hq_set_mempolicy(int mode, int node)
{
    return set_mempolicy_node(mode, node);
}

int hq_get_mempolicy(int *mode, uint64_t *nodemask, int nwords)
{
    if (nwords <= 0)
        return -EINVAL;
    memset(nodemask, 0, (size_t)nwords * sizeof(uint64_t));
    if (syscall(SYS_get_mempolicy, mode, nodemask, (unsigned long)nwords * 64 + 1, NULL, 0UL) < 0)
        return -errno;
    *mode &= MPOL_MODE_MASK;
    return 0;
}

int hq_split_strings(const char *blob, size_t len, const char **out, int n)
{
    const char *p = blob, *end = blob + len;
    int i;

    for (i = 0; i < n; i++) {
        const char *nul;
        if (p >= end)
            return -1;
        nul = memchr(p, '\0', (size_t)(end - p));
        if (nul == NULL)
            return -1;
        out[i] = p;
        p = nul + 1;
    }
    out[n] = NULL;
    return p == end ? n : -1;
}

/* ---------------------------------------------------------------- the child of hq_spawn */

struct child_ctx {
    const struct hq_spawn_args *a;
    const char *file;              /* what to exec, searched in path_env unless it has a '/' */
    const char *path_env;
    pid_t parent;
    volatile int stage;
    volatile int err;
};

static void __attribute__((noreturn)) child_fail(struct child_ctx *c, int stage, int err)
{
    c->err = err;
    c->stage = stage;
    _exit(127);
}

/* The child shares our memory, so a Python signal handler run there would corrupt the parent:
 * every caught signal goes back to SIG_DFL (while all are blocked), and so do the signals
 * Python ignores or a task must see with their defaults. */
static int must_default(int sig)
{
    return sig == SIGINT || sig == SIGTERM || sig == SIGPIPE || sig == SIGCHLD || sig == SIGXFSZ;
}

static void child_reset_signals(void)
{
    struct sigaction dfl;
    int sig;

    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    for (sig = 1; sig < _NSIG; sig++) {
        struct sigaction old;
        void *h;
        if (sig == SIGKILL || sig == SIGSTOP)
            continue;
        if (sigaction(sig, NULL, &old) < 0)
            continue;   /* glibc's internal signals */
        h = (old.sa_flags & SA_SIGINFO) ? (void *)old.sa_sigaction : (void *)old.sa_handler;
        if (h == (void *)SIG_DFL || (h == (void *)SIG_IGN && !must_default(sig)))
            continue;
        sigaction(sig, &dfl, NULL);
    }
}

/* Makes target refer to fd, which must not stay open under its own number. */
static int child_move_fd(int fd, int target)
{
    if (fd == target)
        return fcntl(fd, F_SETFD, 0) < 0 ? -errno : 0;
    if (dup2(fd, target) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    close(fd);
    return 0;
}

static int child_open_onto(const char *path, int flags, int target)
{
    int fd = open(path, flags | O_CLOEXEC, 0666);
    if (fd < 0)
        return -errno;
    return child_move_fd(fd, target);
}

struct linux_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

/* Keeps fds >= 3 out of the task. close_range(CLOEXEC) needs Linux 5.11; older kernels get
 * a walk of /proc/self/fd with raw getdents64, and without /proc a bounded loop. */
static void child_cloexec_from(int low)
{
    char buf[1024] __attribute__((aligned(8)));
    struct rlimit rl;
    int dfd, fd, limit;

    if (syscall(SYS_close_range, (unsigned)low, ~0U, CLOSE_RANGE_CLOEXEC) == 0)
        return;
    dfd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        long n;
        while ((n = syscall(SYS_getdents64, dfd, buf, sizeof(buf))) > 0) {
            long off = 0;
            while (off < n) {
                struct linux_dirent64 *d = (struct linux_dirent64 *)(buf + off);
                const char *s = d->d_name;
                int v = 0;
                off += d->d_reclen;
                if (*s < '0' || *s > '9')
                    continue;
                while (*s >= '0' && *s <= '9')
                    v = v * 10 + (*s++ - '0');
                if (v >= low && v != dfd)
                    fcntl(v, F_SETFD, FD_CLOEXEC);
            }
        }
        close(dfd);
        return;
    }
    limit = 65536;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)limit)
        limit = (int)rl.rlim_cur;
    for (fd = low; fd < limit; fd++)
        fcntl(fd, F_SETFD, FD_CLOEXEC);
}

/* execvpe semantics against the task's PATH, not ours: a missing entry moves on, EACCES is
 * remembered (it wins at the end over the last error), any other error stops the search. */
static int child_exec(struct child_ctx *c)
{
    char *const *argv = (char *const *)c->a->argv;
    char *const *envp = (char *const *)c->a->envp;
    const char *file = c->file, *p = c->path_env;
    char buf[PATH_MAX];
    size_t flen;
    int seen_eacces = 0, last = ENOENT;

    if (file[0] == '\0')
        return ENOENT;
    if (strchr(file, '/') != NULL) {
        execve(file, argv, envp);
        return errno;
    }
    flen = strlen(file);
    for (;;) {
        const char *end = strchrnul(p, ':');
        size_t dlen = (size_t)(end - p);
        if (dlen + 1 + flen + 1 <= sizeof(buf)) {
            char *q = buf;
            if (dlen > 0) {   /* an empty entry is the working directory */
                memcpy(q, p, dlen);
                q += dlen;
                *q++ = '/';
            }
            memcpy(q, file, flen + 1);
            execve(buf, argv, envp);
            last = errno;
            switch (last) {
            case EACCES:
                seen_eacces = 1;
                break;
            case ENOENT:
            case ENOTDIR:
            case ESTALE:
            case ENODEV:
            case ETIMEDOUT:
            case ENAMETOOLONG:
                break;
            default:
                return last;
            }
        }
        if (*end == '\0')
            break;
        p = end + 1;
    }
    return seen_eacces ? EACCES : last;
}

/* Steps in the documented order; the stdio files are opened before exec so that HQ's empty
 * output files exist even for a program that cannot run. */
static int child_main(void *arg)
{
    struct child_ctx *c = arg;
    const struct hq_spawn_args *a = c->a;
    sigset_t none;
    int rc;

    child_reset_signals();
    if (a->new_session && setsid() < 0)
        child_fail(c, HQ_STAGE_SESSION, errno);
    if (a->pdeathsig > 0) {
        if (prctl(PR_SET_PDEATHSIG, (unsigned long)a->pdeathsig) < 0)
            child_fail(c, HQ_STAGE_PDEATHSIG, errno);
        if (getppid() != c->parent)   /* the parent died before prctl took effect */
            child_fail(c, HQ_STAGE_PDEATHSIG, ESRCH);
    }
    if (a->nwords > 0 &&
        sched_setaffinity(0, (size_t)a->nwords * sizeof(uint64_t), (const cpu_set_t *)a->cpumask) < 0)
        child_fail(c, HQ_STAGE_AFFINITY, errno);
    if (a->mem_node >= 0 && (rc = set_mempolicy_node(a->mem_mode, a->mem_node)) < 0)
        child_fail(c, HQ_STAGE_MEMPOLICY, -rc);
    if (a->cwd != NULL && chdir(a->cwd) < 0)
        child_fail(c, HQ_STAGE_CWD, errno);

    if (a->stdin_path != NULL)
        rc = child_open_onto(a->stdin_path, O_RDONLY, 0);
    else if (a->stdin_fd == 0)
        rc = fcntl(0, F_SETFD, 0) < 0 ? -errno : 0;
    else if (a->stdin_fd > 0)
        rc = dup2(a->stdin_fd, 0) < 0 ? -errno : 0;
    else
        rc = child_open_onto("/dev/null", O_RDONLY, 0);
    if (rc < 0)
        child_fail(c, HQ_STAGE_STDIN, -rc);
    rc = child_open_onto(a->stdout_path ? a->stdout_path : "/dev/null",
                         O_WRONLY | O_CREAT | O_TRUNC, 1);
    if (rc < 0)
        child_fail(c, HQ_STAGE_STDOUT, -rc);
    rc = child_open_onto(a->stderr_path ? a->stderr_path : "/dev/null",
                         O_WRONLY | O_CREAT | O_TRUNC, 2);
    if (rc < 0)
        child_fail(c, HQ_STAGE_STDERR, -rc);

    child_cloexec_from(3);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    child_fail(c, HQ_STAGE_EXEC, child_exec(c));
    return 0;
}

int hq_spawn(const struct hq_spawn_args *a, struct hq_spawn_result *r)
{
    /* The child runs on this array: our frame stays put while CLONE_VFORK suspends us, and
     * an overrun would land in the unused part of our own stack rather than in a heap. */
    char stack[CHILD_STACK_SIZE] __attribute__((aligned(16)));
    struct child_ctx c;
    sigset_t all, old;
    const char *const *e;
    int pid, saved;

    r->stage = HQ_STAGE_NONE;
    r->err = 0;
    c.a = a;
    c.file = a->path != NULL ? a->path : a->argv[0];
    if (c.file == NULL) {
        r->stage = HQ_STAGE_EXEC;
        r->err = EINVAL;
        return -1;
    }
    c.path_env = DEFAULT_PATH;
    for (e = a->envp; e != NULL && *e != NULL; e++) {
        if (strncmp(*e, "PATH=", 5) == 0) {
            c.path_env = *e + 5;
            break;
        }
    }
    c.parent = getpid();
    c.stage = HQ_STAGE_NONE;
    c.err = 0;

    /* Signals stay blocked in the child until its handlers are reset. The raw syscall also
     * blocks glibc's internal signals, which pthread_sigmask leaves open. */
    memset(&all, 0xff, sizeof(all));
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, &old, (size_t)(_NSIG / 8));
    pid = clone(child_main, stack + sizeof(stack), CLONE_VM | CLONE_VFORK | SIGCHLD, &c);
    saved = errno;
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &old, NULL, (size_t)(_NSIG / 8));

    if (pid < 0) {
        r->stage = HQ_STAGE_FORK;
        r->err = saved;
        return -1;
    }
    if (c.stage != HQ_STAGE_NONE) {
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        r->stage = c.stage;
        r->err = c.err;
        return -1;
    }
    return pid;
}

/* ---------------------------------------------------------------- topology */

/* Reads a small sysfs file into buf as a NUL-terminated string; returns its length or -errno. */
static int read_text(const char *path, char *buf, size_t size)
{
    size_t len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return -errno;
    while (len + 1 < size) {
        ssize_t n = read(fd, buf + len, size - 1 - len);
        if (n < 0) {
            int e = errno;
            if (e == EINTR)
                continue;
            close(fd);
            return -e;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    return (int)len;
}

/* Parses the next "a" or "a-b" item of a cpulist such as "0-3,8,10-11\n". Returns 1 with the
 * range, 0 at the end, -EINVAL on malformed input. */
static int cpulist_next(const char **pp, int *lo, int *hi)
{
    const char *p = *pp;
    char *end;
    long a, b;

    while (*p == ',' || *p == ' ' || *p == '\n' || *p == '\t')
        p++;
    if (*p == '\0') {
        *pp = p;
        return 0;
    }
    if (*p < '0' || *p > '9')
        return -EINVAL;
    a = strtol(p, &end, 10);
    b = a;
    if (*end == '-') {
        p = end + 1;
        if (*p < '0' || *p > '9')
            return -EINVAL;
        b = strtol(p, &end, 10);
    }
    if (a > b || b >= MAX_CPU_ID)
        return -EINVAL;
    *lo = (int)a;
    *hi = (int)b;
    *pp = end;
    return 1;
}

/* Reads an integer file; a missing file leaves *out at its default (containers and some VMs
 * lack parts of topology/). */
static int read_int(const char *path, char *buf, size_t size, int *out)
{
    int rc = read_text(path, buf, size);
    char *end;
    long v;

    if (rc == -ENOENT)
        return 0;
    if (rc < 0)
        return rc;
    v = strtol(buf, &end, 10);
    if (end == buf)
        return -EINVAL;
    *out = (int)v;
    return 0;
}

static int read_first_sibling(const char *path, char *buf, size_t size, int *out)
{
    const char *p = buf;
    int rc = read_text(path, buf, size), lo, hi, best = -1;

    if (rc == -ENOENT)
        return 0;
    if (rc < 0)
        return rc;
    while ((rc = cpulist_next(&p, &lo, &hi)) > 0)
        if (best < 0 || lo < best)
            best = lo;
    if (rc < 0)
        return rc;
    if (best >= 0)
        *out = best;
    return 0;
}

/* Marks the NUMA node of every CPU listed in <root>/devices/system/node/node<N>/cpulist.
 * Returns the number of node directories seen, or -errno. */
static int read_nodes(const char *root, int *node_of, int max_id, char *buf, size_t size)
{
    char path[PATH_MAX];
    struct dirent *d;
    DIR *dir;
    int seen = 0, rc = 0;

    snprintf(path, sizeof(path), "%s/devices/system/node", root);
    dir = opendir(path);
    if (dir == NULL)
        return errno == ENOENT ? 0 : -errno;
    while ((d = readdir(dir)) != NULL) {
        const char *s = d->d_name + 4, *p = buf;
        char *end;
        long node;
        int lo, hi, cpu;
        if (strncmp(d->d_name, "node", 4) != 0 || *s < '0' || *s > '9')
            continue;
        node = strtol(s, &end, 10);
        if (*end != '\0')
            continue;
        snprintf(path, sizeof(path), "%s/devices/system/node/%s/cpulist", root, d->d_name);
        rc = read_text(path, buf, size);
        if (rc == -ENOENT) {
            rc = 0;
            continue;
        }
        if (rc < 0)
            break;
        seen++;
        while ((rc = cpulist_next(&p, &lo, &hi)) > 0)
            for (cpu = lo; cpu <= hi && cpu <= max_id; cpu++)
                node_of[cpu] = (int)node;
        if (rc < 0)
            break;
    }
    closedir(dir);
    return rc < 0 ? rc : seen;
}

int hq_read_topology(const char *root, struct hq_cpu *out, int max)
{
    const size_t size = 64 * 1024;
    char path[PATH_MAX];
    char *buf = NULL;
    int *ids = NULL, *node_of = NULL;
    const char *p;
    int n = 0, cap = 0, max_id = -1, lo, hi, cpu, i, rc, nodes;

    buf = malloc(size);
    if (buf == NULL)
        return -ENOMEM;
    snprintf(path, sizeof(path), "%s/devices/system/cpu/online", root);
    rc = read_text(path, buf, size);
    if (rc < 0)
        goto out;
    p = buf;
    while ((rc = cpulist_next(&p, &lo, &hi)) > 0) {
        for (cpu = lo; cpu <= hi; cpu++) {
            if (n == cap) {
                int *grown = realloc(ids, sizeof(int) * (size_t)(cap ? cap * 2 : 64));
                if (grown == NULL) {
                    rc = -ENOMEM;
                    goto out;
                }
                ids = grown;
                cap = cap ? cap * 2 : 64;
            }
            ids[n++] = cpu;
            if (cpu > max_id)
                max_id = cpu;
        }
    }
    if (rc < 0)
        goto out;

    node_of = malloc(sizeof(int) * (size_t)(max_id + 1));
    if (node_of == NULL && max_id >= 0) {
        rc = -ENOMEM;
        goto out;
    }
    for (i = 0; i <= max_id; i++)
        node_of[i] = -1;
    nodes = read_nodes(root, node_of, max_id, buf, size);
    if (nodes < 0) {
        rc = nodes;
        goto out;
    }

    for (i = 0; i < n && i < max; i++) {
        struct hq_cpu *c = &out[i];
        cpu = ids[i];
        c->id = cpu;
        c->core = cpu;
        c->socket = 0;
        c->first_sibling = cpu;
        c->numa = nodes == 0 ? 0 : node_of[cpu];
        snprintf(path, sizeof(path), "%s/devices/system/cpu/cpu%d/topology/core_id", root, cpu);
        if ((rc = read_int(path, buf, size, &c->core)) < 0)
            goto out;
        snprintf(path, sizeof(path), "%s/devices/system/cpu/cpu%d/topology/physical_package_id",
                 root, cpu);
        if ((rc = read_int(path, buf, size, &c->socket)) < 0)
            goto out;
        snprintf(path, sizeof(path), "%s/devices/system/cpu/cpu%d/topology/thread_siblings_list",
                 root, cpu);
        if ((rc = read_first_sibling(path, buf, size, &c->first_sibling)) < 0)
            goto out;
    }
    rc = n;
out:
    free(node_of);
    free(ids);
    free(buf);
    return rc;
}
