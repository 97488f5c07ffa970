"""Stopping the hub while an AMQP client is between TCP accept and its first AMQP frame (issue
11: the hub never logs a traceback on stop). In process, on the hub's own event loop, so the
moment the race needs is chosen by the test rather than by the machine's load: a TLS client
holds its last handshake flight, sends it, and the hub is told to stop before the loop has read
it. The process-level check (a telemetry reader attached, SIGTERM, the log holds one line) is
tests/host/test_cli_failures.py::test_a_hub_stopped_under_a_long_poll_logs_no_traceback."""
import asyncio
import os
import socket
import ssl

from host_tools.cloud.hub.hub import Hub

DEADLINE = 10.0


async def _held_handshake(loop, port, cafile):
    """A TLS client on 127.0.0.1:port whose handshake is done on its side, with its last flight
    (the client Finished) not yet sent: -> (socket, those bytes)."""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_side=False)
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            await loop.sock_sendall(sock, outgoing.read())
            data = await asyncio.wait_for(loop.sock_recv(sock, 65536), DEADLINE)
            assert data, "the hub closed the connection during the handshake"
            incoming.write(data)
    return sock, outgoing.read()


async def _ended(loop, sock):
    """True once the peer closed the connection (EOF or reset), False at the deadline."""
    try:
        while True:
            data = await asyncio.wait_for(loop.sock_recv(sock, 65536), DEADLINE)
            if not data:
                return True
    except ConnectionError:
        return True
    except asyncio.TimeoutError:
        return False


def test_a_tls_handshake_that_ends_as_the_hub_stops_is_refused_and_leaves_no_task(tmp_path):
    data_dir = str(tmp_path / "hub")
    os.makedirs(data_dir)
    errors, left, ended = [], [], []

    async def scenario():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        hub = Hub(data_dir)
        info = await hub.start(0, 0, 0)
        sock, last_flight = await _held_handshake(loop, info["amqp_port"],
                                                  os.path.join(data_dir, "certs", "ca.pem"))
        try:
            assert sock.send(last_flight) == len(last_flight)   # in the hub's socket buffer now,
            await hub.stop()                                    # read by the loop during stop()
            left.extend(t for t in asyncio.all_tasks() if t is not asyncio.current_task())
            ended.append(await _ended(loop, sock))
        finally:
            sock.close()

    asyncio.run(scenario())     # asyncio.run cancels what is left, as `hub` does on SIGTERM
    assert [t.get_coro().__qualname__ for t in left] == []     # no connection served after stop
    assert ended == [True]                                     # the late connection was closed
    assert [c.get("message") for c in errors] == []            # nothing for the log
