"""A warm job worker (run by the jobs image's Python as `python -c <this file's text> SOCKET MODULE`).

It imports MODULE once (and so everything the job imports: pandas, xgboost, ray, boto3), never
initialises Ray, and waits on the unix socket SOCKET. For every launcher that connects it forks a
child that becomes the job: its own session, the launcher's stdin/stdout/stderr, exactly the
environment, working directory and arguments the launcher sent, then `runpy` runs MODULE as
`__main__` as `python -m MODULE` would. The zygote runs no Python thread and no Ray (fork is
only safe without them; it refuses to serve if an import started either), reports each child's
pid and exit status to its launcher, and kills the child's process group when its launcher goes
away.

Only the standard library at the top: this text runs before the image's packages are imported.
"""
import array
import json
import os
import select
import signal
import socket
import struct
import sys


def _unsafe_to_fork():
    """Why forking this process now would be unsafe, or None. Python threads (a lock held by one
    is held forever in the child) and an initialised Ray (not fork-safe) are; the native helper
    threads of OpenBLAS, jemalloc (pyarrow) and XGBoost are not: those libraries re-create them in
    the child through their fork handlers."""
    import threading

    if threading.active_count() != 1:
        return f"{threading.active_count() - 1} Python thread(s) running"
    ray = sys.modules.get("ray")
    if ray is not None and getattr(ray, "is_initialized", lambda: False)():
        return "Ray is initialised"
    return None


def _recv_request(conn):
    fds = array.array("i")
    header, ancillary, _flags, _addr = conn.recvmsg(4, socket.CMSG_SPACE(3 * fds.itemsize))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    if len(header) < 4 or len(fds) != 3:
        raise ValueError("a launcher request carries a length and three file descriptors")
    (size,) = struct.unpack("!I", header)
    body = b""
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise ValueError("the launcher closed the connection mid-request")
        body += chunk
    return json.loads(body.decode("utf-8")), list(fds)


def _become_job(module, request, fds, listener, conns):
    os.setsid()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    listener.close()
    for conn in conns:
        conn.close()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    sys.argv = ["-m", *request["args"]]
    code = 0
    try:
        import runpy

        # As under `python -m`, the module runs as __main__ only (its warm import stays imported
        # for nothing but its dependencies' sake).
        sys.modules.pop(module, None)
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if not isinstance(exit_.code, (int, type(None))):
            print(exit_.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - the job's traceback goes to its log, as python -m prints it
        import traceback

        traceback.print_exc()
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def main():
    socket_path, module = sys.argv[1], sys.argv[2]
    import importlib

    importlib.import_module(module)
    unsafe = _unsafe_to_fork()
    if unsafe:
        print(f"WARM-REFUSED after importing {module}: {unsafe}; forking would be unsafe", flush=True)
        return 3
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    os.chmod(socket_path, 0o600)
    listener.listen(16)
    print("WARM-READY", flush=True)
    children = {}  # connection -> child pid
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    parent = os.getppid()
    try:
        while os.getppid() == parent:  # the executor is gone (killed): so is its pool
            readable, _, _ = select.select([listener, *children], [], [], 0.05)
            for conn in readable:
                if conn is listener:
                    client, _ = listener.accept()
                    try:
                        request, fds = _recv_request(client)
                    except (OSError, ValueError) as err:
                        print(f"bad launcher request: {err}", file=sys.stderr, flush=True)
                        client.close()
                        continue
                    pid = os.fork()
                    if pid == 0:
                        _become_job(module, request, fds, listener, [*children, client])
                    for fd in fds:
                        os.close(fd)
                    client.sendall(struct.pack("!i", pid))
                    children[client] = pid
                elif not conn.recv(1):  # the launcher is gone (killed): so is its job
                    try:
                        os.killpg(children[conn], signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
            for conn, pid in list(children.items()):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    try:
                        conn.sendall(struct.pack("!i", os.waitstatus_to_exitcode(status)))
                    except OSError:
                        pass
                    conn.close()
                    del children[conn]
    finally:
        for pid in children.values():
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        listener.close()


if __name__ == "__main__":
    sys.exit(main())
