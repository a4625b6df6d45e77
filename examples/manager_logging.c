/* The library's log shows a manager's life: started, serving, shut down. */
/* Logging example in C (the seeds' log_to_stderr with a Manager): at INFO level the
 * manager process and the main process report what Python's do:
 *
 *     [WARNING/MainProcess] doomed
 *     [INFO/SyncManager-1] child process calling self.run()
 *     [INFO/SyncManager-1] manager serving at '@mp-manager-...'
 *     [INFO/MainProcess] sending shutdown message to manager
 *     [INFO/SyncManager-1] process shutting down
 *     [INFO/SyncManager-1] process exiting with exitcode 0
 *     [INFO/MainProcess] process shutting down
 *
 * (Python 3.11's lines; the seed shows an older Python's "manager exiting with exitcode
 * 0". Python also logs "created temp directory /.../pymp-...": its listener is a socket
 * file in a temporary directory; multiproc's default address is an abstract socket, so
 * there is no directory to create. The log goes to stderr.)
 */
#include <multiproc.h>

int main(void)
{
    mp_log_to_stderr(MP_LOG_INFO); /* logger = log_to_stderr(); logger.setLevel(INFO) */
    mp_log(MP_LOG_WARNING, "doomed");
    mp_manager *m = mp_manager_new(NULL);
    if (!m)
        return 1;
    mp_manager_free(m); /* del m */
    return 0;
}
