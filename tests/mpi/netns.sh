# shellcheck shell=bash
# Several hosts on one machine: a test harness sourced by tests/mpi/test_netns_*.sh.
#
#   source "$MP_SOURCE_DIR/tests/mpi/netns.sh"
#   mpt_netns_up 3            # hosts h1 h2 h3 (or exit 77: no privilege / no `ip`)
#   mpt_on h2 cmd args...     # run a command "on host h2" (ip netns exec)
#   mpt_mpiexec -n 3 prog     # mpiexec on h1, one rank per host (hostfile + rsh agent)
#   mpt_link_down h2          # cut h2's cable (its veth on the switch side goes down)
#   mpt_pids h2               # pids of the processes on h2
#   mpt_kill_all              # SIGKILL everything running on the hosts
#   mpt_bg h2 out cmd...      # cmd on h2 in the background (output to out, pid in MPT_PID)
#   mpt_wait_line out regex   # wait (bounded) until the program printed a matching line
#   MPT_SLOTS=2 mpt_mpiexec -n 6 prog   # two ranks per host (set before the first call)
#   MPT_HOSTNAMES=1 mpt_mpiexec ...      # each host with its own hostname (idem)
#
# The network: one namespace per host, "mpt<pid>-h1" ... (unique per test run), and a
# switch namespace "mpt<pid>-sw" holding a bridge; each host has a veth "eth0" whose peer
# "h<i>" is a port of the bridge. Host h<i> is 10.231.1.<i>/24 on its eth0, loopback up.
# Every interface is created directly inside those namespaces (`ip -n ... link add ...
# netns ...`): the root namespace's interfaces, routes and firewall are never touched, and
# the same addresses in two concurrent runs never meet (each run has its own switch).
#
# Cleanup: an EXIT/INT/TERM/HUP trap kills the processes left in this run's namespaces (by
# pid, from `ip netns pids`), deletes the namespaces (which deletes their veths and
# bridge) and the run's temp dir. At start, namespaces "mpt<pid>-*" whose <pid> is no
# longer alive (a run killed with SIGKILL) are cleaned the same way.
#
# Open MPI across the namespaces: mpiexec runs on h1; the hostfile names the hosts
# "mpt<pid>-h1" ... and the rsh agent (a script written to the temp dir, passed as
# --mca plm_rsh_agent) receives "<host> <command...>" and runs the command in the
# namespace of that name with `ip netns exec <host> sh -c "<command>"` (with
# MPT_HOSTNAMES=1, in a UTS namespace whose hostname is <host>: the hosts' names then
# differ, as real hosts' do). The daemons and
# the ranks talk TCP over 10.231.1.0/24 only (oob_tcp_if_include, btl_tcp_if_include,
# btl tcp,self). No mount namespace: the binary is the same file in every host.
# rtc_hwloc_vmhole none: each daemon otherwise maps hwloc's topology into a "hole" of its
# address space for its ranks to share, and orted segfaulted in hwloc_shmem_topology_write
# in about 1 run in 6 here (a hole found free and then taken); the ranks read the topology
# themselves instead.

MPT_NET=10.231.1
MPT_NS_PREFIX="mpt$$"
MPT_NHOSTS=0
MPT_TMP=""

# skip with a message (ctest's SKIP_RETURN_CODE is 77)
mpt_skip() { echo "SKIPPED: $*" >&2; exit 77; }

mpt_ns() { echo "$MPT_NS_PREFIX-$1"; }        # namespace of host h<i>
mpt_ip() { echo "$MPT_NET.${1#h}"; }          # address of host h<i>

# run a command on host h<i> (in its network namespace)
mpt_on() { local h=$1; shift; ip netns exec "$(mpt_ns "$h")" "$@"; }

# mpt_bg h<i> OUT cmd...: start cmd on h<i> in the background, stdout and stderr to OUT;
# MPT_PID is the command's own pid (ip netns exec execs it), to signal or wait for
mpt_bg() {
    local h=$1 out=$2
    shift 2
    (exec ip netns exec "$(mpt_ns "$h")" "$@") >"$out" 2>&1 &
    MPT_PID=$!
}

# mpt_wait_line FILE REGEX [SECONDS]: 0 once a line of FILE matches (grep -E), 1 after
# SECONDS (default 20): a bounded poll of what a program printed
mpt_wait_line() {
    local f=$1 re=$2 n=$((${3:-20} * 100))
    until grep -Eq "$re" "$f" 2>/dev/null; do
        ((n-- > 0)) || { echo "no line /$re/ in $f after ${3:-20} s:" >&2; cat "$f" >&2; return 1; }
        sleep 0.01
    done
}

# the pids of the processes running on host h<i> (e.g. to SIGKILL a rank there)
mpt_pids() { ip netns pids "$(mpt_ns "$1")"; }

# SIGKILL (by pid) every process running on the hosts: a job that cannot end by itself
mpt_kill_all() {
    local i pids
    for ((i = 1; i <= MPT_NHOSTS; i++)); do
        pids=$(mpt_pids h$i 2>/dev/null || true)
        # shellcheck disable=SC2086
        [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
    done
}

# kill (SIGKILL, by pid) what runs in namespace $1, then delete it
mpt__ns_del() {
    local ns=$1 pids
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    if [ -n "$pids" ]; then
        # shellcheck disable=SC2086
        kill -9 $pids 2>/dev/null || true
    fi
    ip netns del "$ns" 2>/dev/null || true
}

# namespaces of runs whose process is gone
mpt__clean_stale() {
    local ns pid
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
        [[ $ns =~ ^mpt([0-9]+)-(h[0-9]+|sw)$ ]] || continue
        pid=${BASH_REMATCH[1]}
        kill -0 "$pid" 2>/dev/null && continue
        mpt__ns_del "$ns"
    done
}

mpt_netns_down() {
    local i
    for ((i = 1; i <= MPT_NHOSTS; i++)); do mpt__ns_del "$(mpt_ns h$i)"; done
    [ "$MPT_NHOSTS" -gt 0 ] && mpt__ns_del "$(mpt_ns sw)"
    MPT_NHOSTS=0
    [ -n "$MPT_TMP" ] && rm -rf "$MPT_TMP"
    MPT_TMP=""
}

mpt__trap() {
    local rc=$?
    trap - EXIT INT TERM HUP
    mpt_netns_down
    exit "$rc"
}

# mpt_netns_up N: hosts h1..hN on one switch; exit 77 if namespaces cannot be made here
mpt_netns_up() {
    local n=${1:-3} i sw
    command -v ip >/dev/null || mpt_skip "no 'ip' command (iproute2): the several-hosts tests need network namespaces"
    mpt__clean_stale
    sw=$(mpt_ns sw)
    if ! ip netns add "$sw" 2>/dev/null; then
        mpt_skip "cannot create a network namespace here (needs root or CAP_SYS_ADMIN + CAP_NET_ADMIN): the several-hosts tests are skipped; the single-host MPI tests still run"
    fi
    trap mpt__trap EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
    MPT_NHOSTS=$n
    MPT_TMP=$(mktemp -d "/tmp/$MPT_NS_PREFIX.XXXXXX")
    ip -n "$sw" link add br0 type bridge || mpt_skip "cannot create a bridge in a namespace"
    ip -n "$sw" link set br0 up
    ip -n "$sw" link set lo up
    for ((i = 1; i <= n; i++)); do
        local ns
        ns=$(mpt_ns h$i)
        ip netns add "$ns"
        ip -n "$sw" link add "h$i" type veth peer name eth0 netns "$ns" ||
            mpt_skip "cannot create a veth pair between namespaces"
        ip -n "$sw" link set "h$i" master br0 up
        ip -n "$ns" link set lo up
        ip -n "$ns" addr add "$MPT_NET.$i/24" dev eth0
        ip -n "$ns" link set eth0 up
    done
    for ((i = 1; i <= n; i++)); do mpt__wait_up h$i; done
}

# veths come up at once; wait (bounded: 5 s) until host h<i>'s eth0 says so
mpt__wait_up() {
    local tries=0
    until ip -n "$(mpt_ns "$1")" -br link show eth0 | grep -q ' UP '; do
        ((tries++ < 500)) || { echo "$1's eth0 did not come up" >&2; return 1; }
        sleep 0.01
    done
}

# cut / restore host h<i>'s cable (the switch side of its veth). Restoring also forgets
# the neighbours (ARP) every host failed to reach meanwhile, which the kernel would
# otherwise answer with EHOSTUNREACH for a few seconds more.
mpt_link_down() { ip -n "$(mpt_ns sw)" link set "$1" down; }
mpt_link_up() {
    local i
    ip -n "$(mpt_ns sw)" link set "$1" up && mpt__wait_up "$1" || return 1
    for ((i = 1; i <= MPT_NHOSTS; i++)); do ip -n "$(mpt_ns h$i)" neigh flush all; done
}

# the rsh agent and hostfile for Open MPI (written once per run)
mpt__mpi_files() {
    [ -f "$MPT_TMP/hostfile" ] && return 0
    # Each host gets a /tmp of its own for Open MPI's session directories (as real hosts
    # have): in one shared /tmp, daemons of hosts with the same hostname race to create
    # the same /tmp/ompi.<hostname>.<uid>/jf.<job> ("File exists": orte_init fails).
    local uts=""
    [ -z "${MPT_HOSTNAMES:-}" ] ||
        uts='unshare --uts /bin/sh -c '"'"'echo "$0" >/proc/sys/kernel/hostname && exec "$@"'"'"' "$host"'
    cat >"$MPT_TMP/rsh-agent" <<EOF
#!/bin/sh
# Open MPI's plm_rsh_agent: "<host> <command...>"; the host is a namespace's name. The
# command runs in that network namespace with its own tmpdir base$([ -z "$uts" ] || echo ",
# in a UTS namespace of its own whose hostname is the host's name (as on a real host:
# gethostname() tells the hosts apart)").
host=\$1
shift
mkdir -p "$MPT_TMP/tmp-\$host"
OMPI_MCA_orte_tmpdir_base="$MPT_TMP/tmp-\$host"
export OMPI_MCA_orte_tmpdir_base
exec ip netns exec "\$host" $uts /bin/sh -c "\$*"
EOF
    chmod +x "$MPT_TMP/rsh-agent"
    local i
    : >"$MPT_TMP/hostfile"
    for ((i = 1; i <= MPT_NHOSTS; i++)); do
        echo "$(mpt_ns h$i) slots=${MPT_SLOTS:-1}" >>"$MPT_TMP/hostfile"
    done
}

# mpt_mpiexec ARGS...: mpiexec on h1 over the hosts' network (ranks by slot: h1, h2, ...),
# ended by SIGTERM (then SIGKILL) after MPT_TIMEOUT seconds (default 60: 124 = timed out).
# With MPT_HOSTNAMES=1 (set before the first call), mpiexec and every rank see their
# host's name as hostname (a UTS namespace each), as on real hosts; by default every
# "host" has the machine's hostname.
mpt_mpiexec() {
    mpt__mpi_files
    local uts=()
    [ -z "${MPT_HOSTNAMES:-}" ] ||
        uts=(unshare --uts /bin/sh -c 'echo "$0" >/proc/sys/kernel/hostname && exec "$@"' "$(mpt_ns h1)")
    mpt_on h1 "${uts[@]}" timeout -k 5 "${MPT_TIMEOUT:-60}" \
        env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
        mpiexec --hostfile "$MPT_TMP/hostfile" \
        --mca plm_rsh_agent "$MPT_TMP/rsh-agent" \
        --mca oob_tcp_if_include "$MPT_NET.0/24" \
        --mca btl tcp,self --mca btl_tcp_if_include "$MPT_NET.0/24" \
        --mca pml ob1 --mca rtc_hwloc_vmhole none \
        "$@"
}
