/* Private parts of the process module's core, shared by the files that implement
 * Process objects (object.c), the children registry and waiting (registry.c), contexts
 * (context.c), this process's identity and the child side (self.c), at-exit handling
 * (atexit.c) and the fork start method (fork.c). The other start methods' contract is
 * proc.h. */
#ifndef MP_PROCESS_CORE_H
#define MP_PROCESS_CORE_H

#include "multiproc/process.h"
#include "multiproc/value.h"
#include "process/proc.h"

#include <pthread.h>
#include <stdbool.h>
#include <sys/types.h>

enum { ST_NEW, ST_STARTED, ST_DONE, ST_CLOSED };

struct mp_context {
    mp_start_method method;
    const char *name;
};

struct mp_process {
    mp_process *next, *prev; /* registry links while started and unreaped */
    bool in_reg;
    bool detached;           /* freed by the user while running: the registry owns it */
    mp_target_fn target;
    mp_value *args;
    char *name;
    char *identity;
    bool daemon;
    mp_context *ctx;
    mp_start_method method;  /* resolved at start */
    _Atomic int state;       /* ST_DONE is stored after exitcode, under wait_lock */
    pid_t pid;
    pid_t owner;             /* the process that started it */
    int pidfd;               /* fork/spawn: waitable; forkserver: for signals only */
    int statfd;              /* forkserver: the status connection; else -1 */
    int exitcode;
    unsigned char authkey[MP_AUTHKEY_MAX]; /* the child's current_process().authkey */
    size_t authkey_len;
    bool is_parent;          /* mp_parent_process()'s object */
    pthread_mutex_t wait_lock; /* held while a thread collects the end (see DESIGN) */
};

/* This process, as Python's current_process(). */
struct mp__proc_self {
    char *name;      /* NULL: "MainProcess" */
    char *identity;  /* NULL in the main process, "1", "1:2" in children */
    pid_t parent_pid;
    bool is_child;
    bool daemon;
    unsigned counter;
    bool exiting;
    mp_target_fn target;
    mp_start_method default_method; /* MP_START_DEFAULT: not chosen yet */
    bool method_fixed;
    char *parent_name;  /* in a child: the parent's name */
    unsigned char authkey[MP_AUTHKEY_MAX];
    size_t authkey_len; /* 0: not made yet (authkey.c) */
};
extern struct mp__proc_self mp__proc_self;

/* ---- the registry (registry.c): started, not yet reaped children ---- */
extern pthread_mutex_t mp__proc_reg_lock; /* recursive; see registry.c's DESIGN */
extern mp_process *mp__proc_reg_head;
void mp__proc_reg_add(mp_process *p);
void mp__proc_reg_remove(mp_process *p);
/* Collect p's end if it comes before the deadline (0 polls, -1 forever). 0 when it
 * has ended (p may be freed if detached), MP_ETIMEOUT, or an error. */
int mp__proc_wait(mp_process *p, double deadline);
/* The deadline that polls. */
double mp__proc_poll_now(void);
/* Python's _cleanup(): reap finished children so no zombies accumulate. */
void mp__proc_reap_finished(void);

/* ---- the object (object.c) ---- */
void mp__proc_close_fds(mp_process *p);
void mp__proc_destroy(mp_process *p);

/* ---- contexts (context.c) ---- */
/* The method a process of this context starts with (fixing the default on first use). */
mp_start_method mp__proc_resolve_method(const mp_context *ctx);

/* ---- this process (self.c, authkey.c, exec.c) ---- */
/* Copy this process's authkey into p (making it on first use). */
void mp__proc_authkey_inherit(mp_process *p);

/* Children log to their stderr when the parent logs anywhere. */
bool mp__proc_log_enabled(void);

/* ---- the fork start method (fork.c) ---- */
int mp__proc_start_fork(mp_process *p, const char *buf, size_t len, const int *fds,
                        size_t nfds);

#endif
