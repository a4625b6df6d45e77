#!/usr/bin/env bash
# A manager served on one host, used from two others (network namespaces on one machine,
# tests/mpi/netns.sh), by TCP address + authkey (tests/helper_mgr_net.c):
#   1. three clients on h2 and h3 at once: atomic dict updates (add, compare-and-set,
#      setdefault, pop with a default) through nested proxies; the final values are
#      exact, every token is popped exactly once; a wrong key is MP_EAUTH;
#   2. a client SIGKILLed while it holds a lock and waits in Queue.get, and one killed in
#      the middle of its updates: the server goes on serving the others, the lock is free;
#   3. a link cut (h3's cable) while h3's clients wait: the server frees h3's lock and
#      h3's waiting calls fail with MP_EEOF ("unreachable") within the peer limit (2 s
#      here), later calls at once; a call made into the cut link fails as soon; a cut shorter than the limit breaks nothing; after
#      the link is back, h3 connects again;
#   4. the server SIGKILLed while clients on h2 and h3 wait: both calls fail with MP_EEOF
#      at once, and a new connection is refused;
#   5. a second server shut down by a remote client: its waiting clients get MP_EEOF;
#   6. a server on 0.0.0.0 whose objects were stored in root by a client on its own host
#      (through 127.0.0.1): clients on h2 and h3 use those nested proxies.
set -euo pipefail
source "${MP_SOURCE_DIR:?run through ctest}/tests/mpi/netns.sh"
H="${MP_TEST_BINDIR:?}/helper_mgr_net"
mpt_netns_up 3
T=$MPT_TMP
A=10.231.1.1:50000
KEY=net-test-key
LIMIT=2

fail() { echo "FAIL: $*"; for f in "$T"/*.out; do echo "--- $f"; cat "$f"; done; exit 1; }
# the "<tag> <code> <seconds> ..." line a helper printed
field() { awk -v t="$2" -v n="$3" '$1 == t { print $n; exit }' "$1"; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }

mpt_bg h1 "$T/serve.out" "$H" serve "$A" "$KEY" "$LIMIT"
server=$MPT_PID
mpt_wait_line "$T/serve.out" '^serving' || fail "the server did not start"
ROOT=$(field "$T/serve.out" root 2)

# ---- 1. several clients at once ----------------------------------------------------------
N=150
TOKENS=100
mpt_bg h2 "$T/w1.out" "$H" work "$A" "$KEY" "$ROOT" 1 $N $TOKENS; w1=$MPT_PID
mpt_bg h3 "$T/w2.out" "$H" work "$A" "$KEY" "$ROOT" 2 $N $TOKENS; w2=$MPT_PID
mpt_bg h3 "$T/w3.out" "$H" work "$A" "$KEY" "$ROOT" 3 $N $TOKENS; w3=$MPT_PID
wait $w1 && wait $w2 && wait $w3 || fail "a worker failed"
popped=$(($(field "$T/w1.out" popped 2) + $(field "$T/w2.out" popped 2) + $(field "$T/w3.out" popped 2)))
[ "$popped" = $TOKENS ] || fail "the tokens were popped $popped times, not $TOKENS"
mpt_on h2 "$H" check "$A" "$KEY" "$ROOT" 3 $N $TOKENS >"$T/check.out" || fail "final values"
grep -q "^count=450 cas=450 hits=450 len(l)=451 first=[123] len(d)=3$" "$T/check.out" || fail "final values"
mpt_on h3 "$H" badkey "$A" >"$T/badkey.out"
[ "$(field "$T/badkey.out" result 2)" = MP_EAUTH ] || fail "a wrong key"
echo "ok 1: 3 clients on 2 hosts: $(cat "$T/check.out")"

# ---- 2. clients killed mid-request -------------------------------------------------------
mpt_bg h3 "$T/hold.out" "$H" hold "$A" "$KEY" "$ROOT"; holder=$MPT_PID
mpt_bg h2 "$T/busy.out" "$H" work "$A" "$KEY" "$ROOT" 4 100000 0; busy=$MPT_PID
mpt_wait_line "$T/hold.out" '^holding' && mpt_wait_line "$T/busy.out" '^started' || fail "clients did not start"
kill -KILL $holder $busy
wait $holder $busy 2>/dev/null || true
mpt_on h2 "$H" acquire "$A" "$KEY" "$ROOT" 5 >"$T/acq.out"
grep -q '^acquired' "$T/acq.out" || fail "the lock of a killed client was not released"
mpt_bg h3 "$T/w5.out" "$H" work "$A" "$KEY" "$ROOT" 5 20 0
wait $MPT_PID || fail "a client after the kills"
echo "ok 2: SIGKILLed clients: lock released ($(cat "$T/acq.out") s), others served"

# ---- 3. a link cut while clients wait ------------------------------------------------------
# a cut shorter than the limit: the waiting call goes on and sees the event set later
mpt_bg h2 "$T/short.out" "$H" wait "$A" "$KEY" "$ROOT"; short=$MPT_PID
mpt_wait_line "$T/short.out" '^waiting'
mpt_link_down h2
sleep 0.3 # the outage to survive (well under the limit: not a synchronisation)
mpt_link_up h2
mpt_on h3 "$H" set "$A" "$KEY" "$ROOT"
mpt_wait_line "$T/short.out" '^again' 5 || fail "the wait after a short outage"
wait $short
[ "$(field "$T/short.out" result 2)" = OK ] || fail "a short outage broke a waiting call"
mpt_on h3 "$H" clear "$A" "$KEY" "$ROOT"
echo "ok 3a: a 0.3 s outage survived"

# the cut: on h3 one client holds the lock and waits in q.get, another waits for the event,
# a third has a connected proxy and makes its call after the cut (its request is never
# acknowledged: TCP_USER_TIMEOUT ends it)
mpt_bg h3 "$T/hold3.out" "$H" hold "$A" "$KEY" "$ROOT"; hold3=$MPT_PID
mpt_bg h3 "$T/wait3.out" "$H" wait "$A" "$KEY" "$ROOT"; wait3=$MPT_PID
mkfifo "$T/go"
(exec ip netns exec "$(mpt_ns h3)" "$H" later "$A" "$KEY" "$ROOT" <"$T/go" >"$T/later3.out" 2>&1) &
later3=$!
exec 7>"$T/go"
mpt_wait_line "$T/hold3.out" '^holding' && mpt_wait_line "$T/wait3.out" '^waiting' &&
    mpt_wait_line "$T/later3.out" '^ready' || fail "h3's clients"
t0=$(date +%s.%N)
mpt_link_down h3
echo go >&7 # the third client's call, into the cut link
exec 7>&-
# the server drops h3's connections once h3 is silent for the limit: the lock is free
# (every wait below is bounded: without the peer limit these calls wait forever)
mpt_on h2 "$H" acquire "$A" "$KEY" "$ROOT" $((LIMIT * 3)) >"$T/acq3.out"
grep -q '^acquired' "$T/acq3.out" || fail "the lock of an unreachable client was not released"
mpt_wait_line "$T/wait3.out" '^again' $((LIMIT * 3)) && mpt_wait_line "$T/hold3.out" '^result' 2 &&
    mpt_wait_line "$T/later3.out" '^result' 2 || fail "h3's calls still wait $((LIMIT * 3)) s after the cut"
t1=$(date +%s.%N)
wait $wait3 $hold3 $later3 || fail "h3's clients"
[ "$(field "$T/later3.out" result 2)" = MP_EEOF ] || fail "a call made after the cut did not fail with MP_EEOF"
[ "$(field "$T/wait3.out" result 2)" = MP_EEOF ] || fail "h3's wait did not fail with MP_EEOF"
grep -q "^result MP_EEOF .*unreachable" "$T/wait3.out" || fail "the message does not say unreachable"
[ "$(field "$T/wait3.out" again 2)" = MP_EEOF ] && lt "$(field "$T/wait3.out" again 3)" 0.5 ||
    fail "a later call on h3 did not fail at once"
[ "$(field "$T/hold3.out" result 2)" = MP_EEOF ] || fail "h3's q.get did not fail with MP_EEOF"
cut=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
# the bound: about limit + limit/6 (keepalive), with room for a loaded machine
lt "$cut" $((LIMIT * 3)) || fail "h3's calls ended $cut s after the cut (limit $LIMIT s)"
mpt_link_up h3
mpt_on h3 "$H" acquire "$A" "$KEY" "$ROOT" 5 >"$T/acq4.out" || true
grep -q "^acquired" "$T/acq4.out" || fail "h3 cannot use the manager after the link is back"
echo "ok 3b: link cut: lock freed in $(field "$T/acq3.out" acquired 2) s, h3's waiting calls failed $cut s after the cut, a call made after it in $(field "$T/later3.out" result 3) s"

# ---- 4. the server killed while clients wait ----------------------------------------------
mpt_bg h2 "$T/k2.out" "$H" wait "$A" "$KEY" "$ROOT"; k2=$MPT_PID
mpt_bg h3 "$T/k3.out" "$H" wait "$A" "$KEY" "$ROOT"; k3=$MPT_PID
mpt_wait_line "$T/k2.out" '^waiting' && mpt_wait_line "$T/k3.out" '^waiting' || fail "waiters"
t0=$(date +%s.%N)
kill -KILL $server
wait $server 2>/dev/null || true
mpt_wait_line "$T/k2.out" '^again' 5 && mpt_wait_line "$T/k3.out" '^again' 5 || fail "waiters after the server's death"
t1=$(date +%s.%N)
wait $k2 $k3 || fail "waiters after the server's death"
for f in k2 k3; do
    [ "$(field "$T/$f.out" result 2)" = MP_EEOF ] && [ "$(field "$T/$f.out" again 2)" = MP_EEOF ] ||
        fail "$f: not MP_EEOF"
done
gone=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
lt "$gone" 2 || fail "the clients noticed the dead server after $gone s"
mpt_on h3 "$H" badkey "$A" >"$T/refused.out"
grep -q "^result ECONNREFUSED" "$T/refused.out" || fail "connecting to the dead server"
echo "ok 4: server killed: the waiting clients failed with MP_EEOF in $gone s; connect refused"

# ---- 5. a server shut down by a remote client ----------------------------------------------
mpt_bg h1 "$T/serve2.out" "$H" serve "$A" "$KEY"
server=$MPT_PID
mpt_wait_line "$T/serve2.out" '^serving' || fail "the second server did not start"
ROOT=$(field "$T/serve2.out" root 2)
mpt_bg h2 "$T/s2.out" "$H" wait "$A" "$KEY" "$ROOT"; s2=$MPT_PID
mpt_wait_line "$T/s2.out" '^waiting'
mpt_on h3 "$H" shutdown "$A" "$KEY" || fail "shutdown"
mpt_wait_line "$T/serve2.out" '^stopped' 5 && mpt_wait_line "$T/s2.out" '^again' 5 || fail "shutdown"
wait $server || fail "the server's exit code"
wait $s2
grep -q '^stopped 0' "$T/serve2.out" || fail "serve_forever did not return 0"
[ "$(field "$T/s2.out" result 2)" = MP_EEOF ] || fail "a client waiting on a server shut down"
echo "ok 5: a remote shutdown ends serve_forever; its waiting client gets MP_EEOF"

# ---- 6. nested proxies stored under an address that means nothing elsewhere --------------
# The server listens on every interface; the objects in root were stored by a client on
# the server's host that reached it by 127.0.0.1: a client on h2 reading them out of root
# reaches them by the address it used for root itself.
mpt_bg h1 "$T/serve3.out" "$H" serve "0.0.0.0:50001" "$KEY" 0 10.231.1.1:50001 127.0.0.1:50001
server=$MPT_PID
mpt_wait_line "$T/serve3.out" '^serving' || fail "the third server did not start"
ROOT=$(field "$T/serve3.out" root 2)
mpt_on h2 "$H" work 10.231.1.1:50001 "$KEY" "$ROOT" 1 5 100 >"$T/w6.out" 2>&1 ||
    fail "nested proxies stored by 127.0.0.1, used from h2"
mpt_on h3 "$H" check 10.231.1.1:50001 "$KEY" "$ROOT" 1 5 100 >"$T/check6.out" || fail "values (6)"
mpt_on h3 "$H" shutdown 10.231.1.1:50001 "$KEY"
mpt_wait_line "$T/serve3.out" '^stopped' 5 || fail "the third server did not stop"
echo "ok 6: proxies stored by a client on 127.0.0.1 work from h2 and h3 ($(cat "$T/check6.out"))"
echo PASS
