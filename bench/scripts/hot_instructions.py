"""Server instructions per hot call, counted by callgrind: a figure that does not move
with the machine's load, for comparing methods (and builds) where calls/s does.

Usage:
    python3 bench/scripts/hot_instructions.py target/release/authd [--calls 2000]
        [--roles 200 --permissions 2000]

Sets up, on a fresh SQLite database, what `authd-bench --roles R --permissions P`
does (roles in chains of four, the user holding the top of the first chain), with the
server running natively; then restarts it under `valgrind --tool=callgrind` with
instrumentation off, and for each hot method turns it on, makes --calls calls (one at a
time, after a warm-up), dumps the counters and divides. Only the server's user-space
instructions are counted (not the kernel's TCP work, which callgrind cannot see).
Needs valgrind, and grpcio and protobuf (clients/python's dependencies); with
xds-protos installed, Envoy's ext_authz Check is counted too (the request authd-bench's
`ext-authz` sends: a dozen headers, both peers' addresses, a route needing `user`).
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python", "src"))
import grpc  # noqa: E402
from authd.pb import admin_pb2, admin_pb2_grpc, auth_pb2, auth_pb2_grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

try:
    from envoy.config.core.v3 import address_pb2
    from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc
except ImportError:
    external_auth_pb2 = None

PASSWORD = "hot-instructions-password"
CHAIN = 4


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_serving(addr, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with grpc.insecure_channel(addr) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=2
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"authd at {addr} was not SERVING after {seconds} s")


def bearer(token):
    return [("authorization", f"Bearer {token}")]


def set_up(addr, roles, permissions):
    """The bench's role graph and one user holding its first chain; their token."""
    with grpc.insecure_channel(addr) as channel:
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        root = auth.Login(auth_pb2.LoginRequest(username="root", password=PASSWORD))
        root = bearer(root.tokens.access_token)
        per_role = -(-permissions // max(roles, 1))
        for i in range(roles):
            admin.CreateRole(
                admin_pb2.CreateRoleRequest(
                    name=f"bench-role-{i}",
                    includes=[] if i % CHAIN == 0 else [f"bench-role-{i - 1}"],
                    permissions=[f"bench.r{i}.p{j}" for j in range(per_role)],
                ),
                metadata=root,
            )
        user = auth.Register(
            auth_pb2.RegisterRequest(
                username="alice", email="alice@example.com", password=PASSWORD
            )
        ).user
        if roles:
            held = f"bench-role-{min(CHAIN, roles) - 1}"
            admin.AssignRole(admin_pb2.AssignRoleRequest(user_id=user.id, role=held), metadata=root)
        token = auth.Login(auth_pb2.LoginRequest(username="alice", password=PASSWORD))
        token = token.tokens.access_token
        reply = auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=token))
        return token, len(reply.roles), len(reply.permissions)


def envoy_check(token):
    """Envoy's Check of a typical request, as authd-bench's ext-authz sends it."""
    ctx = attribute_context_pb2.AttributeContext

    def peer(ip, port):
        return ctx.Peer(address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=ip, port_value=port)))

    headers = {
        ":authority": "app.example.com", ":method": "GET", ":path": "/api/articles?page=2",
        ":scheme": "https", "accept": "application/json",
        "accept-encoding": "gzip, deflate, br", "accept-language": "en-GB,en;q=0.9",
        "user-agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)",
        "x-forwarded-proto": "https", "x-request-id": "7f9c2ba4-e88f-4a3e-9d2b-1c0b5e8d7a61",
        "x-envoy-expected-rq-timeout-ms": "15000", "authorization": f"Bearer {token}",
    }
    return external_auth_pb2.CheckRequest(attributes=ctx(
        source=peer("203.0.113.7", 51234),
        destination=peer("10.0.0.12", 8080),
        request=ctx.Request(http=ctx.HttpRequest(
            id="7f9c2ba4-e88f-4a3e-9d2b-1c0b5e8d7a61", method="GET", headers=headers,
            path="/api/articles?page=2", host="app.example.com", scheme="https",
            protocol="HTTP/2")),
        context_extensions={"authd_role": "user"},
    ))


def answered(name, reply):
    """The call was answered as the set-up means it to be: allowed, with the grants."""
    if name == "ext-authz":
        return reply.status.code == 0
    if name == "validate":
        return bool(reply.user_id)
    return getattr(reply, "allowed", True)


def callgrind_control(*args):
    subprocess.run(
        ["callgrind_control", *args], check=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


# Under valgrind, sha2 cannot see the CPU's SHA extensions and runs its portable code,
# which costs every token-carrying call tens of thousands of instructions that the
# native server spends a few hundred on; it is shown, and taken out in the last column.
PORTABLE_SHA256 = "sha2::sha256::soft::compress"


def dumped(work):
    """Each dump's instruction total and portable SHA-256 share, by the dump's name."""
    totals = {}
    for name in os.listdir(work):
        if not re.fullmatch(r"callgrind\.out\.\d+", name):
            continue
        path = os.path.join(work, name)
        trigger, total = None, None
        with open(path) as f:
            for line in f:
                if m := re.match(r"desc: Trigger: dump (\S+)", line):
                    trigger = m.group(1)
                elif m := re.match(r"totals:\s+(\d+)", line):
                    total = int(m.group(1))
        if trigger and total is not None:
            totals[trigger] = (total, self_cost(path, PORTABLE_SHA256))
    return totals


def self_cost(dump, function):
    """Instructions spent in `function` itself (callgrind_annotate's exclusive count)."""
    report = subprocess.run(
        ["callgrind_annotate", "--threshold=100", dump],
        check=True, capture_output=True, text=True,
    ).stdout
    for line in report.splitlines():
        if function in line:
            return int(line.split()[0].replace(",", ""))
    return 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("authd")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--roles", type=int, default=200)
    parser.add_argument("--permissions", type=int, default=2000)
    args = parser.parse_args()
    authd = os.path.abspath(args.authd)

    work = tempfile.mkdtemp(prefix="authd-hot-instructions-")
    addr = f"127.0.0.1:{free_port()}"
    env = dict(
        os.environ,
        AUTHD_DATABASE_URL=f"sqlite://{work}/authd.db?mode=rwc",
        AUTHD_LISTEN=addr,
        AUTHD_HTTP_LISTEN=f"127.0.0.1:{free_port()}",
        RUST_LOG="warn",
    )
    subprocess.run(
        [authd, "user", "create", "--username", "root", "--email", "root@example.com",
         "--role", "admin", "--password-stdin"],
        input=PASSWORD.encode(), env=env, check=True, stdout=subprocess.DEVNULL,
    )
    log = open(os.path.join(work, "authd.log"), "ab")
    server = subprocess.Popen([authd, "serve"], env=env, stdout=log, stderr=log)
    try:
        wait_serving(addr, 60)
        token, n_roles, n_permissions = set_up(addr, args.roles, args.permissions)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)

    out = os.path.join(work, "callgrind.out")
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         authd, "serve"],
        env=env, stdout=log, stderr=log,
    )
    calls = {
        "health": lambda c: health_pb2_grpc.HealthStub(c).Check(health_pb2.HealthCheckRequest()),
        "validate": lambda c: auth_pb2_grpc.AuthServiceStub(c).ValidateToken(
            auth_pb2.ValidateTokenRequest(token=token)),
        "check-role": lambda c: auth_pb2_grpc.AuthServiceStub(c).CheckRole(
            auth_pb2.CheckRoleRequest(token=token, role="user")),
        "check-permission": lambda c: auth_pb2_grpc.AuthServiceStub(c).CheckPermission(
            auth_pb2.CheckPermissionRequest(token=token, permission="bench.r0.p0")),
    }
    if not args.roles:
        del calls["check-permission"]  # no role carries a permission to ask for
    if external_auth_pb2 is not None:
        check = envoy_check(token)
        calls["ext-authz"] = lambda c: external_auth_pb2_grpc.AuthorizationStub(c).Check(check)
    try:
        wait_serving(addr, 300)
        callgrind_control("--instr=on", str(server.pid))
        with grpc.insecure_channel(addr) as channel:
            for name, call in calls.items():
                first = call(channel)
                if not answered(name, first):
                    raise SystemExit(f"{name} did not allow the call: {first}")
                for _ in range(200):
                    call(channel)
                callgrind_control("--zero", str(server.pid))
                for _ in range(args.calls):
                    call(channel)
                callgrind_control(f"--dump={name}", str(server.pid))
        totals = dumped(work)
        print(f"{authd}: {args.roles} roles, {args.permissions} permissions; the token has "
              f"{n_roles} effective roles and {n_permissions} permissions; {args.calls} calls each")
        print(f"{'method':18s} {'instructions/call':>18s} {'portable SHA-256':>17s} {'without it':>11s}")
        for name in calls:
            total, sha = totals[name]
            n = args.calls
            print(f"{name:18s} {total / n:18.0f} {sha / n:17.0f} {(total - sha) / n:11.0f}")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(120)


if __name__ == "__main__":
    main()
