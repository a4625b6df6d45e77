/* The util module's private contract (src/util/): what the process module calls. */
#ifndef MP_UTIL_INTERNAL_H
#define MP_UTIL_INTERNAL_H

/* A child forgets its parent's finalizers (finalize.c). */
void mp__finalizers_forget(void);
/* In a child the library started, before its target: forget the parent's finalizers,
 * then run the after-fork callbacks (afterfork.c). */
void mp__util_child_start(void);

#endif
