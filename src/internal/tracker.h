/* The resource tracker: named objects (shared memory segments, POSIX semaphores,
 * files) registered here are removed when every process of the program is gone, even
 * if all were SIGKILLed, with a warning on stderr like Python's resource_tracker:
 *   "resource_tracker: There appear to be 2 leaked shared_memory objects to clean up
 *    at shutdown".
 *
 * How: the first registration starts a tracker process (double fork, setsid, every
 * fd closed but the read end of a pipe and stderr). Every process of the program
 * holds the pipe's write end: fork children inherit it; spawn and forkserver children
 * must be given it (see mp__tracker_fd below). When the last writer is gone the
 * tracker reads EOF, removes whatever is still registered and exits.
 * Messages are single write()s under PIPE_BUF, so writers never interleave.
 *
 * Contract for the process module (spawn/forkserver start methods): before starting
 * such a child (or the forkserver), call mp__tracker_ensure_running(); pass the fd
 * mp__tracker_fd() to the child at the same number (pass_fds) and put
 * "MP_TRACKER_FD=<fd>" (mp__tracker_env()) in its environment. The child adopts it
 * from a library constructor (and makes it close-on-exec again), so objects created
 * anywhere in the program tree share one tracker. Handles of named objects passed
 * inside values also carry the fd, as a fallback.
 */
#ifndef MP_INTERNAL_TRACKER_H
#define MP_INTERNAL_TRACKER_H

#define MP__TRACKER_ENV "MP_TRACKER_FD"

/* Types the tracker knows how to remove. */
#define MP__RT_SHM "shared_memory" /* shm_unlink(name) */
#define MP__RT_SEM "semaphore"     /* sem_unlink(name) */
#define MP__RT_FILE "file"         /* unlink(path) */

/* Start the tracker if this process has none. 0 or -errno. */
int mp__tracker_ensure_running(void);
/* Register / unregister a named object (starts the tracker if needed). 0 or -errno,
 * MP_EINVAL for an unknown type or a name with a newline or over 1000 bytes. */
int mp__tracker_register(const char *type, const char *name);
int mp__tracker_unregister(const char *type, const char *name);
/* The write end this process uses (close-on-exec), -1 if none. Borrowed. */
int mp__tracker_fd(void);
/* "MP_TRACKER_FD=<fd>" for a child's environment, or NULL when no tracker runs.
 * Static storage, valid until the next call. */
const char *mp__tracker_env(void);
/* Use `fd` (adopted) as this process's tracker pipe if it has none yet; otherwise
 * closes it. */
void mp__tracker_adopt(int fd);

#endif
