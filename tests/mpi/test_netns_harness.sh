#!/usr/bin/env bash
# The several-hosts harness (tests/mpi/netns.sh) leaves nothing behind: its namespaces,
# their veths and bridge, the processes started in them and its temp dir go when the
# test exits with a failure, when it is killed with SIGTERM, and (at the next run's
# start) when it was killed with SIGKILL. The root namespace's links and routes are the
# same before and after. Hosts reach each other over TCP, and a cut link stops that.
set -euo pipefail
src="${MP_SOURCE_DIR:?run through ctest}/tests/mpi/netns.sh"
source "$src"
command -v ip >/dev/null || mpt_skip "no 'ip' command"
ip netns add "mpt$$-probe" 2>/dev/null || mpt_skip "cannot create a network namespace here (needs root): the several-hosts tests are skipped"
ip netns del "mpt$$-probe"

fail() { echo "FAIL: $*"; exit 1; }
links_before=$(ip -o link | awk -F': ' '{print $2}' | sort)
routes_before=$(ip route; ip -6 route)

left() { ip netns list | awk '{print $1}' | grep -c "^mpt$1-" || true; }

# a test that fails: exit 3 after starting a process "on h2"
out=$(bash -c "source '$src'; mpt_netns_up 2; echo \$\$ \$MPT_TMP; mpt_on h2 sleep 1000 & mpt_on h1 true; exit 3" || echo "rc=$?")
read -r pid tmp rest <<<"$out"
[[ $rest == *rc=3* || $out == *rc=3* ]] || fail "exit code kept: $out"
[ "$(left "$pid")" = 0 ] || fail "namespaces of an exited run left: $(ip netns list)"
[ ! -e "$tmp" ] || fail "temp dir $tmp left"

# a test killed with SIGTERM (as ctest's timeout does) while "h2" runs a process
bash -c "source '$src'; mpt_netns_up 2; mpt_on h2 sleep 1000 & echo \$\$; wait" >"/tmp/mpt$$.pid" &
runner=$!
until [ -s "/tmp/mpt$$.pid" ] && [ -n "$(ip netns pids "mpt$(cat "/tmp/mpt$$.pid")-h2" 2>/dev/null)" ]; do sleep 0.01; done
pid=$(cat "/tmp/mpt$$.pid"); rm -f "/tmp/mpt$$.pid"
kill -TERM "$runner"
wait "$runner" || true
[ "$(left "$pid")" = 0 ] || fail "namespaces of a SIGTERMed run left: $(ip netns list)"

# a test killed with SIGKILL leaves its namespaces and process; the next run's start cleans them
bash -c "source '$src'; mpt_netns_up 2; mpt_on h2 sleep 1000 & echo \$\$; wait" >"/tmp/mpt$$.pid" &
runner=$!
until [ -s "/tmp/mpt$$.pid" ] && [ -n "$(ip netns pids "mpt$(cat "/tmp/mpt$$.pid")-h2" 2>/dev/null)" ]; do sleep 0.01; done
pid=$(cat "/tmp/mpt$$.pid"); rm -f "/tmp/mpt$$.pid"
sleeper=$(ip netns pids "mpt$pid-h2")
kill -KILL "$runner"
wait "$runner" 2>/dev/null || true
# (3 left, unless a test running meanwhile started and cleaned them already: also fine)
case "$(left "$pid")" in 3 | 0) ;; *) fail "a SIGKILLed run's namespaces: $(ip netns list)" ;; esac
rm -rf /tmp/mpt"$pid".*
bash -c "source '$src'; mpt__clean_stale"
[ "$(left "$pid")" = 0 ] || fail "stale namespaces not cleaned: $(ip netns list)"
! kill -0 "$sleeper" 2>/dev/null || fail "the stale run's process $sleeper still runs"

# hosts talk TCP to each other; a cut cable stops it
mpt_netns_up 3
mpt_on h1 bash -c 'exec 3<>/dev/tcp/10.231.1.3/9' 2>/dev/null && fail "connect to a closed port succeeded"
err=$(mpt_on h1 bash -c 'exec 3<>/dev/tcp/10.231.1.3/9' 2>&1 || true)
[[ $err == *refused* ]] || fail "h1 cannot reach h3: $err"
mpt_link_down h3
mpt_on h1 timeout 2 bash -c 'exec 3<>/dev/tcp/10.231.1.3/9' 2>/dev/null && fail "h3 reachable with its link down"
mpt_link_up h3
mpt_netns_down
[ "$(ip -o link | awk -F': ' '{print $2}' | sort)" = "$links_before" ] || fail "the root namespace's links changed"
[ "$(ip route; ip -6 route)" = "$routes_before" ] || fail "the root namespace's routes changed"
ip -o addr | grep -q "10\.231\." && fail "a test address in the root namespace"
echo PASS
