"""Starts one job in a warm worker (run as `python -c <this file's text> SOCKET ARG...`).

The executor starts this in place of `python -m MODULE ARG...`: a bare interpreter that sends the
warm zygote its own stdin/stdout/stderr, environment (the job's role credentials included),
working directory and arguments, forwards SIGTERM/SIGINT to the job's process group, and exits
with the job's exit code (128 + signal when the job was killed by one). If this process is
killed, the zygote kills the job.
"""
import array
import json
import os
import signal
import socket
import struct
import sys


def _recv_int(conn):
    data = b""
    while len(data) < 4:
        chunk = conn.recv(4 - len(data))
        if not chunk:
            raise ConnectionError("the warm worker went away")
        data += chunk
    return struct.unpack("!i", data)[0]


def main():
    socket_path, args = sys.argv[1], sys.argv[2:]
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(socket_path)
    body = json.dumps({"args": args, "env": dict(os.environ), "cwd": os.getcwd()}).encode("utf-8")
    conn.sendmsg([struct.pack("!I", len(body))],
                 [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]).tobytes())])
    conn.sendall(body)
    pid = _recv_int(conn)

    def forward(signum, _frame):
        try:
            os.killpg(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        code = _recv_int(conn)
    except ConnectionError as err:
        print(f"warm launcher: {err}", file=sys.stderr, flush=True)
        return 1
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main())
