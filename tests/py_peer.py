#!/usr/bin/env python3
"""A Python peer for test_listener: multiprocessing.connection's Client or Listener.

usage: py_peer.py client|listener ADDRESS AUTHKEY [modern]

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


def address(text):
    if text.startswith('@'):
        return '\0' + text[1:]
    if text.startswith('/') or text.startswith('.'):
        return text
    host, port = text.rsplit(':', 1)
    return (host, int(port))


def main():
    mode, addr, key = sys.argv[1], address(sys.argv[2]), sys.argv[3]
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
