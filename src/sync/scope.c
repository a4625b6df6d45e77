/* MP_WITH_LOCK's two calls: Python's `with lock:` for C (sync.h).
 *
 * DESIGN: the macro declares a variable with the cleanup attribute whose value is the
 * held lock: the for loop's step and the cleanup both call mp_lock_scope_exit, which
 * releases only when the variable is still set and then clears it, so the lock is
 * released exactly once however the block is left. */
#include "multiproc/sync.h"
#include "internal/common.h"

mp_lock *mp_lock_scope_enter(mp_lock *l, int *rc)
{
    int r = l ? mp_lock_acquire(l, -1) : mp__error(MP_EINVAL, "MP_WITH_LOCK: NULL lock");
    if (rc)
        *rc = r;
    return r == 0 || r == MP_EOWNERDEAD ? l : NULL;
}

void mp_lock_scope_exit(mp_lock **slot)
{
    if (slot && *slot) {
        mp_lock_release(*slot);
        *slot = NULL;
    }
}
