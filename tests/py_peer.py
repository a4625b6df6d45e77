#!/usr/bin/env python3
"""A Python peer for test_listener: multiprocessing.connection's Client or Listener.

usage: py_peer.py client|listener ADDRESS AUTHKEY [modern]
       py_peer.py objects|roundtrip|hostile|objlistener ADDRESS AUTHKEY [ARG]

The object modes use send()/recv() (pickles) against a C peer with the pickle codec:
  objects      client: sends nested objects, expects each echoed back equal
  roundtrip    client: random nested data (seed ARG), pickled with protocols 2..5 by
               send_bytes, expects each echoed back (re-encoded by C) equal
  hostile      client: sends a pickle that would create the file ARG (GLOBAL posix.system
               + REDUCE), then a plain object; expects the object echoed back
  objlistener  listener: receives an object, sends back [it, 'from python'] and
               expects the C peer to send that back

ADDRESS: /path, @abstract or host:port (port 0: the listener prints the port it got,
as 'ready ADDRESS'). AUTHKEY: text ('-' for none).
'modern' runs the Python 3.12+ digest-prefixed handshake ({sha256}) by hand (copied
from 3.12's multiprocessing/connection.py), so it is tested even on Python 3.11.
Exit 0 on success, 3 on an authentication failure (prints 'auth-failed').
"""
import hmac
import os
import sys
from multiprocessing.connection import AuthenticationError, Client, Listener

CHALLENGE = b'#CHALLENGE#'
WELCOME = b'#WELCOME#'
FAILURE = b'#FAILURE#'
ALLOWED = {b'md5', b'sha256', b'sha384', b'sha3_256', b'sha3_384'}
MAX_DIGEST_LEN = max(len(d) for d in ALLOWED)


def split(message):
    if len(message) in (20, 16):
        return '', message
    if message.startswith(b'{'):
        curly = message.find(b'}', 1, MAX_DIGEST_LEN + 2)
        if curly > 0 and message[1:curly] in ALLOWED:
            return message[1:curly].decode('ascii'), message[curly + 1:]
    raise AuthenticationError('unsupported message: %r' % message)


def create_response(authkey, message):
    name = split(message)[0]
    if not name:
        return hmac.new(authkey, message, 'md5').digest()
    return b'{%s}%s' % (name.encode('ascii'), hmac.new(authkey, message, name).digest())


def verify(authkey, message, response):
    name, mac = split(response)
    expected = hmac.new(authkey, message, name or 'md5').digest()
    if len(expected) != len(mac) or not hmac.compare_digest(expected, mac):
        raise AuthenticationError('digest received was wrong')


def deliver_challenge(conn, authkey, digest='sha256'):
    message = b'{%s}%s' % (digest.encode('ascii'), os.urandom(40))
    conn.send_bytes(CHALLENGE + message)
    response = conn.recv_bytes(MAX_DIGEST_LEN + 256)
    try:
        verify(authkey, message, response)
    except AuthenticationError:
        conn.send_bytes(FAILURE)
        raise
    conn.send_bytes(WELCOME)


def answer_challenge(conn, authkey):
    message = conn.recv_bytes(256)
    if not message.startswith(CHALLENGE):
        raise AuthenticationError('expected a challenge')
    conn.send_bytes(create_response(authkey, message[len(CHALLENGE):]))
    if conn.recv_bytes(256) != WELCOME:
        raise AuthenticationError('digest sent was rejected')


def norm(x):
    """What a value looks like after a trip through mp_value: tuples, sets and frozensets
    become lists (in iteration order), bytearray bytes; dict keys stay hashable."""
    if isinstance(x, (list, tuple, set, frozenset)):
        return [norm(i) for i in x]
    if isinstance(x, dict):
        return {norm_key(k): norm(v) for k, v in x.items()}
    if isinstance(x, bytearray):
        return bytes(x)
    return x


def norm_key(k):
    if isinstance(k, (tuple, frozenset)):
        return tuple(norm_key(i) for i in k)
    return k


SAMPLES = [
    None, True, False, 0, 1, -1, 255, 256, 65535, 65536, -2**31, 2**31 - 1, 2**31,
    2**63 - 1, -2**63, 1.5, -0.0, float('inf'), 1e300, '', 'hello', 'h\u00e9llo \u4e16\u754c \U0001f600',
    '\ud800 lone surrogate', 'x' * 300, b'', b'\x00\xffbytes', b'y' * 70000,
    [42, None, 'hello'], (1, 2), (1, 2, 3), (1, 2, 3, 4), (), [], {}, {'a': 1, 2: 'b', (1, 2): [3]},
    {0.25: None, 1: '1', '2': 2}, {1, 2, 3}, frozenset({'a'}), set(),
    {'nested': [{'deep': [(1, [2, {3: (4,)}])]}], 'list': list(range(2000))},
]


def shared_refs():
    s = 'shared string'
    inner = [1, 2, s]
    return [inner, inner, {'k': inner, 'k2': s}, (inner, s)]


def random_value(rng, depth, proto):
    kinds = ['none', 'bool', 'int', 'bigint', 'float', 'str', 'list', 'tuple', 'dict']
    if proto >= 3:
        kinds.append('bytes')
    if proto >= 4:
        kinds += ['set', 'frozenset']
    if proto >= 5:
        kinds.append('bytearray')
    if depth > 4:
        kinds = [k for k in kinds if k not in ('list', 'tuple', 'dict', 'set', 'frozenset')]
    k = rng.choice(kinds)
    if k == 'none':
        return None
    if k == 'bool':
        return rng.random() < 0.5
    if k == 'int':
        return rng.randint(-70000, 70000)
    if k == 'bigint':
        return rng.randint(-2**63, 2**63 - 1)
    if k == 'float':
        return rng.choice([rng.uniform(-1e9, 1e9), float('inf'), -0.0, rng.random() * 1e-300])
    if k == 'str':
        alphabet = 'abc xyz\u00e9\u4e16\U0001f600\n\'"\\\x00'
        return ''.join(rng.choice(alphabet) for _ in range(rng.randint(0, 300 if rng.random() < 0.1 else 12)))
    if k in ('bytes', 'bytearray'):
        b = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
        return b if k == 'bytes' else bytearray(b)
    n = rng.randint(0, 6)
    if k in ('list', 'tuple'):
        items = [random_value(rng, depth + 1, proto) for _ in range(n)]
        if items and rng.random() < 0.3:
            items.append(items[0])  # a shared reference
        return items if k == 'list' else tuple(items)
    if k in ('set', 'frozenset'):
        items = {random_key(rng, proto) for _ in range(n)}
        return items if k == 'set' else frozenset(items)
    return {random_key(rng, proto): random_value(rng, depth + 1, proto) for _ in range(n)}


def random_key(rng, proto):
    k = rng.choice(['int', 'str', 'tuple', 'none', 'float'] + (['frozenset'] if proto >= 4 else []))
    if k == 'int':
        return rng.randint(-1000, 1000)
    if k == 'str':
        return ''.join(rng.choice('abc\u00e9') for _ in range(rng.randint(0, 5)))
    if k == 'none':
        return None
    if k == 'float':
        return rng.uniform(-10, 10)
    if k == 'tuple':
        return tuple(random_key(rng, proto) for _ in range(rng.randint(0, 3)))
    return frozenset(random_key(rng, proto) for _ in range(rng.randint(0, 3)))


def expect_echo(conn, obj, sent):
    back = conn.recv()
    if norm(back) != norm(obj):
        print('mismatch: sent %r (%r) got %r' % (obj, sent, back), flush=True)
        sys.exit(5)


def object_modes(mode, addr, authkey, arg):
    import pickle
    import random
    if mode == 'objlistener':
        listener = Listener(addr, authkey=authkey)
        print('ready', sys.argv[2], flush=True)
        conn = listener.accept()
        obj = conn.recv()
        conn.send([obj, 'from python'])
        back = conn.recv()
        ok = back == [obj, 'from python']
        print('got %r' % (obj,) if ok else 'mismatch %r' % (back,), flush=True)
        conn.close()
        listener.close()
        sys.exit(0 if ok else 5)
    conn = Client(addr, authkey=authkey)
    if mode == 'objects':
        for obj in SAMPLES + [shared_refs()]:
            conn.send(obj)
            expect_echo(conn, obj, obj)
    elif mode == 'roundtrip':
        rng = random.Random(int(arg))
        count = 0
        for i in range(400):
            proto = 2 + i % 4
            obj = random_value(rng, 0, proto)
            conn.send_bytes(pickle.dumps(obj, proto))
            expect_echo(conn, obj, proto)
            count += 1
        print('roundtrip', count, flush=True)
    elif mode == 'hostile':
        cmd = ('touch ' + arg).encode()
        evil = (b'\x80\x02cposix\nsystem\nq\x00X' + len(cmd).to_bytes(4, 'little') + cmd +
                b'q\x01\x85q\x02Rq\x03.')
        conn.send_bytes(evil)
        conn.send(['still', 'alive'])
        expect_echo(conn, ['still', 'alive'], None)
    conn.close()
    print('ok', flush=True)


def address(text):
    if text.startswith('@'):
        return '\0' + text[1:]
    if text.startswith('/') or text.startswith('.'):
        return text
    host, port = text.rsplit(':', 1)
    return (host, int(port))


def main():
    mode, addr, key = sys.argv[1], address(sys.argv[2]), sys.argv[3]
    if mode in ('objects', 'roundtrip', 'hostile', 'objlistener'):
        object_modes(mode, addr, None if key == '-' else key.encode(),
                     sys.argv[4] if len(sys.argv) > 4 else None)
        return
    modern = len(sys.argv) > 4 and sys.argv[4] == 'modern'
    authkey = None if key == '-' else key.encode()
    try:
        if mode == 'client':
            conn = Client(addr, authkey=None if modern else authkey)
            if modern and authkey is not None:
                answer_challenge(conn, authkey)
                deliver_challenge(conn, authkey)
            msg = conn.recv_bytes()
            conn.send_bytes(msg[::-1])
        else:
            listener = Listener(addr, authkey=None if modern else authkey)
            # the bound address: host:port 0 becomes the port the kernel picked
            bound = listener.address
            if isinstance(bound, tuple):
                bound = '%s:%d' % bound
            print('ready', sys.argv[2] if not isinstance(addr, tuple) else bound, flush=True)
            conn = listener.accept()
            if modern and authkey is not None:
                deliver_challenge(conn, authkey)
                answer_challenge(conn, authkey)
            conn.send_bytes(b'hello from python')
            msg = conn.recv_bytes()
            conn.send_bytes(msg.upper())
            listener.close()
        conn.close()
    except AuthenticationError as e:
        print('auth-failed', e, flush=True)
        sys.exit(3)
    except EOFError:
        print('eof', flush=True)
        sys.exit(4)


if __name__ == '__main__':
    main()
