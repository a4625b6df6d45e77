/* Process information: pid, parent, state, start time, CPU, memory, cwd, cmdline and environment of this process and of a child. */
/* Process information, for this process and for a child, the C way.
 *
 * What Python offers:
 *   os.getpid(), os.getppid()                  -> info.pid, info.ppid
 *   process state (ps / psutil status())       -> info.state_name
 *   psutil.Process().create_time()             -> info.start_time
 *   os.times()                                 -> info.user_time, info.system_time
 *   psutil.Process().memory_info()             -> info.rss, info.vms
 *   os.getcwd()                                -> info.cwd
 *   os.environ                                 -> info.environ
 * mp_proc_info_get reads all of it from /proc, for any pid. */
#include <multiproc.h>
#include <multiproc/info.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void show(const char *title, const mp_proc_info *in)
{
    char when[64];
    time_t t = (time_t)in->start_time;
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime(&t));
    printf("%s\n", title);
    printf("  pid          %d\n", (int)in->pid);
    printf("  ppid         %d\n", (int)in->ppid);
    printf("  name         %s\n", in->name);
    printf("  status       %s (%c)\n", in->state_name, in->state);
    printf("  create_time  %s\n", when);
    printf("  cpu_times    user=%.2f system=%.2f\n", in->user_time, in->system_time);
    printf("  memory_info  rss=%.1f MiB vms=%.1f MiB\n", in->rss / 1048576.0,
           in->vms / 1048576.0);
    printf("  num_threads  %d\n", in->num_threads);
    printf("  cwd          %s\n", in->cwd ? in->cwd : mp_strerror(in->cwd_error));
    printf("  cmdline      [");
    for (size_t i = 0; i < in->cmdline_len; i++)
        printf("%s'%s'", i ? ", " : "", in->cmdline[i]);
    printf("]\n");
    printf("  environ      %zu variables, LANGUAGE=%s\n", in->environ_len,
           mp_proc_env_get(in->environ, "LANGUAGE") ? mp_proc_env_get(in->environ, "LANGUAGE")
                                                    : "(unset)");
}

int main(void)
{
    mp_proc_info in;
    if (mp_proc_info_get(0, &in) < 0) {
        fprintf(stderr, "%s\n", mp_last_error());
        return 1;
    }
    show("this process:", &in);
    mp_proc_info_free(&in);

    pid_t pid = fork();
    if (pid == 0) {
        char *argv[] = {"sleep", "10", NULL};
        char *envp[] = {"LANGUAGE=C", "WORKER=1", NULL};
        if (chdir("/tmp") < 0)
            _exit(1);
        execve("/bin/sleep", argv, envp);
        _exit(127);
    }
    /* wait until the child has exec'd and gone to sleep */
    bool seen = false;
    for (int i = 0; i < 500 && !seen; i++) {
        if (mp_proc_info_get(pid, &in) == 0) {
            seen = in.state == 'S' && in.cmdline_len && strcmp(in.cmdline[0], "sleep") == 0;
            if (seen)
                show("a child running sleep in /tmp:", &in);
            mp_proc_info_free(&in);
        }
        if (!seen)
            usleep(10000);
    }

    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    int r = mp_proc_info_get(pid, &in);
    printf("after it exited: %s (%s)\n", mp_errname(r),
           strstr(mp_last_error(), "pid ") ? strstr(mp_last_error(), "pid ") : "");
    return r == -ESRCH ? 0 : 1;
}
