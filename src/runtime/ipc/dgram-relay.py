#!/usr/bin/env python3
"""Unix datagram relay for msc's container requests (src/node/container-requests.ts).

Node.js has no AF_UNIX SOCK_DGRAM sockets, so this binds one and hands every datagram to
the node as one JSON line on stdout:

    {"ready": true}                                  once, after the socket is bound
    {"pid": 123, "uid": 0, "data": "<base64>", "truncated": false, "cgroup": "<text>"}

pid and uid are the sender's (SCM_CREDENTIALS, in this process's pid namespace; null if
the kernel sent none). cgroup is /proc/PID/cgroup read at once on receipt, because a
sender that exits loses its cgroup within microseconds; null if it is gone already.
truncated: the datagram was longer than 4096 bytes (data holds the first 4096).

Usage: python3 dgram-relay.py SOCKET_PATH
Exits when stdin closes (the node went away) or on SIGTERM; SIGINT is ignored (the
node decides). Removes the socket file on exit if it is still the one bound here.
"""
import base64
import json
import os
import select
import signal
import socket
import struct
import sys

BUF = 4096
UCRED = struct.Struct('iII')  # struct ucred { pid_t pid; uid_t uid; gid_t gid; }


def emit(obj):
    sys.stdout.buffer.write(json.dumps(obj, separators=(',', ':')).encode() + b'\n')
    sys.stdout.buffer.flush()


def on_sigterm(_signum, _frame):
    raise SystemExit(0)


def read_cgroup(pid):
    try:
        with open('/proc/%d/cgroup' % pid, 'r', encoding='utf-8', errors='replace') as f:
            return f.read(65536)
    except OSError:
        return None


def main():
    if len(sys.argv) != 2:
        sys.stderr.write('usage: dgram-relay.py SOCKET_PATH\n')
        return 2
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    # Bind by a relative name from inside the directory: sun_path holds only 108
    # bytes, a DATA_DIR path may be longer.
    path = os.path.abspath(sys.argv[1])
    os.chdir(os.path.dirname(path))
    name = os.path.basename(path)
    try:
        os.unlink(name)  # a stale socket from an earlier run
    except FileNotFoundError:
        pass

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    old_umask = os.umask(0o111)  # created as 0666 from the start: no window without access
    try:
        sock.bind(name)
    finally:
        os.umask(old_umask)
    os.chmod(name, 0o666)  # any container user may send
    bound = os.stat(name)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)

    try:
        emit({'ready': True})
        stdin = sys.stdin.fileno()
        anc = socket.CMSG_SPACE(UCRED.size)
        while True:
            readable, _, _ = select.select([sock, stdin], [], [])
            if stdin in readable and os.read(stdin, 4096) == b'':
                return 0  # the node closed our stdin: it stopped or died
            if sock not in readable:
                continue
            data, ancdata, flags, _addr = sock.recvmsg(BUF, anc)
            pid = uid = None
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(payload) >= UCRED.size:
                    pid, uid, _gid = UCRED.unpack_from(payload)
                elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    # Nobody should send us descriptors; do not keep them.
                    for i in range(len(payload) // 4):
                        try:
                            os.close(struct.unpack_from('i', payload, i * 4)[0])
                        except OSError:
                            pass
            emit({
                'pid': pid if pid else None,
                'uid': uid,
                'data': base64.b64encode(data).decode('ascii'),
                'truncated': bool(flags & socket.MSG_TRUNC),
                'cgroup': read_cgroup(pid) if pid else None,
            })
    except BrokenPipeError:
        # The node is gone; keep the interpreter from complaining about stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        # Remove the socket only if it is still ours (not replaced by a newer relay).
        try:
            st = os.stat(name)
            if (st.st_dev, st.st_ino) == (bound.st_dev, bound.st_ino):
                os.unlink(name)
        except OSError:
            pass
        sock.close()


if __name__ == '__main__':
    sys.exit(main())
