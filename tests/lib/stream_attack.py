"""Issue 17's attacks on a real PS's shared-memory socket, as a local user
would make them: the socket's abstract name read from /proc/net/unix, the
frames written by hand (common/rpc/stream_internal.h). Standard library only.
  stream_attack.py PS_PID
Prints one line per case: its name and what came back; exits 1 on the
first case whose answer is not the one wanted."""
import fcntl
import os
import socket
import struct
import sys
import tempfile
import time

AREA = 1 << 20
FORGED = "x\n2026-01-01 00:00:00.000 ps0[1] ERROR forged line\x1b[2J"
PULL = "/pstrain.ParameterServer/Pull"
PUSH = "/pstrain.ParameterServer/Push"
STATS = "/pstrain.ParameterServer/Stats"
SHUTDOWN = "/pstrain.ParameterServer/Shutdown"


def socket_name(pid):
    with open("/proc/net/unix") as f:
        for line in f:
            name = line.split()[-1]
            if name.startswith("@pstrain-%d-" % pid):
                return name[1:]
    sys.exit("no abstract socket @pstrain-%d-* in /proc/net/unix" % pid)


def varint(v):
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        out += bytes([b | (0x80 if v else 0)])
        if not v:
            return out


def field(num, wire, payload):
    key = varint(num << 3 | wire)
    return key + (varint(payload) if wire == 0 else varint(len(payload)) + payload)


def sealed_memfd():
    fd = os.memfd_create("attack", os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, 2 * AREA)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
    return fd


class Conn:
    """A connection that sent its hello with fd as its memory."""

    def __init__(self, name, fd):
        self.fd = fd
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(20)
        self.s.connect("\0" + name)
        hello = struct.pack("<IIQQ", 0x314D5350, 0, AREA, AREA)
        try:
            socket.send_fds(self.s, [hello], [fd])
        except OSError:
            pass  # refused at once; the answer is read below

    def call(self, method, body, deadline_us):
        """The status code, or 'closed' when the server closed the connection."""
        os.pwrite(self.fd, body, 0)
        m = method.encode()
        try:
            self.s.sendall(struct.pack("<IIQQ", 0x31525350, len(m), deadline_us, len(body)) + m)
        except OSError:
            pass
        head = b""
        try:
            while len(head) < 24:
                chunk = self.s.recv(24 - len(head))
                if not chunk:
                    return "closed"
                head += chunk
        except ConnectionResetError:
            return "closed"
        magic, code, msg_len = struct.unpack("<III", head[:12])
        assert magic == 0x31415350, "not a response"
        msg = b""
        while len(msg) < msg_len:
            msg += self.s.recv(msg_len - len(msg))
        self.msg = msg.decode(errors="replace")
        return code


def expect(case, got, want):
    print("%s: %s" % (case, got))
    if got != want:
        print("FAIL %s: got %s, want %s" % (case, got, want))
        sys.exit(1)


def main():
    pid = int(sys.argv[1])
    name = socket_name(pid)
    # Item 1: an ordinary 8 MiB file as the memory, a call, the file cut, a pull.
    with tempfile.NamedTemporaryFile() as f:
        f.truncate(8 << 20)
        c = Conn(name, f.fileno())
        first = c.call(STATS, b"", 5000000)
        f.truncate(0)
        second = c.call(PULL, b"", 5000000)
        expect("item 1, plain file: a call", first, "closed")
        expect("item 1, plain file: a pull after the truncate", second, "closed")
    expect("item 1, the PS lives", os.path.exists("/proc/%d" % pid), True)
    # Item 2: another uid pulls, pushes, shuts the PS down.
    child = os.fork()
    if child == 0:
        os.setgid(65534)
        os.setuid(65534)
        fd = sealed_memfd()
        codes = [Conn(name, fd).call(m, b"", 5000000) for m in (PULL, PUSH, SHUTDOWN)]
        os._exit(0 if codes == [7, 7, 7] else 1)
    _, status = os.waitpid(child, 0)
    expect("item 2, uid 65534: Pull, Push, Shutdown", "refused PERMISSION_DENIED" if status == 0
           else "not refused (status %d)" % status, "refused PERMISSION_DENIED")
    # The PS's own uid, with sealed memory, is served.
    fd = sealed_memfd()
    expect("same uid, sealed memfd: Stats", Conn(name, fd).call(STATS, b"", 5000000), 0)
    # Item 6: a push naming a forged tensor is refused; the log is checked by the caller.
    caller = field(1, 2, b"worker")
    tensor = field(1, 2, FORGED.encode()) + field(3, 0, 1) + field(4, 2, b"\0" * 4)
    push = field(1, 2, caller) + field(3, 2, tensor)
    expect("item 6, forged tensor name: Push", Conn(name, fd).call(PUSH, push, 5000000), 3)
    pull = field(3, 2, FORGED.encode())
    expect("item 6, forged variable name: Pull", Conn(name, fd).call(PULL, pull, 5000000), 3)
    # Item 9: an async pull for step 2^64-2 without a deadline.
    t0 = time.time()
    code = Conn(name, fd).call(PULL, field(2, 0, (1 << 64) - 2), 0)
    expect("item 9, pull for step 2^64-2 without a deadline", code, 4)
    print("answered after %.1f s" % (time.time() - t0))


main()
