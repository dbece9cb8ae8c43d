#!/usr/bin/env python3
"""Calling authd from Python with grpcio.

Registers an account (one that already exists is fine), logs in, asks ValidateToken and
CheckRole, then verifies the same access token locally with PyJWT from authd's JWK Set.
Prints what it gets; exits non-zero on any failure.

    pip install -r examples/python/requirements.txt
    python3 examples/python/client.py --addr 127.0.0.1:50051 --http 127.0.0.1:9090

The gRPC stubs are generated at start from proto/auth/v1/auth.proto into a temporary
directory with grpc_tools.protoc, so nothing generated is checked in. In your own
project, run the same protoc command once at build time and import the modules.
"""
import argparse
import pathlib
import sys
import tempfile

import grpc
import jwt  # PyJWT
from grpc_tools import protoc

PROTO_ROOT = pathlib.Path(__file__).resolve().parents[2] / "proto"


def generate_stubs(out_dir: pathlib.Path):
    """Compiles auth.proto into out_dir and returns the (messages, stubs) modules."""
    # grpc_tools ships the well-known types (google/protobuf/timestamp.proto).
    well_known = pathlib.Path(protoc.__file__).parent / "_proto"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            "auth/v1/auth.proto",
        ]
    )
    if code != 0:
        sys.exit(f"protoc failed on {PROTO_ROOT}/auth/v1/auth.proto (exit {code})")
    # Regular packages, so that no installed package named `auth` can shadow them.
    for package in (out_dir / "auth", out_dir / "auth" / "v1"):
        (package / "__init__.py").touch()
    sys.path.insert(0, str(out_dir))
    from auth.v1 import auth_pb2, auth_pb2_grpc

    return auth_pb2, auth_pb2_grpc


def verify_locally(token: str, jwks_url: str, issuer: str, audience: str) -> dict:
    """Checks signature, typ, iss, aud and expiry against the published JWK Set.
    Cannot see logout or revocation: that is what ValidateToken is for."""
    if jwt.get_unverified_header(token).get("typ") != "at+jwt":
        raise jwt.InvalidTokenError("not an access token")
    signing_key = jwt.PyJWKClient(jwks_url, timeout=5).get_signing_key_from_jwt(token)
    return jwt.decode(
        token,
        signing_key.key,
        algorithms=["EdDSA"],  # never taken from the token's header
        audience=audience,
        issuer=issuer,
        leeway=1,
        options={"require": ["exp", "iat", "sub", "sid", "iss", "aud"]},
    )


def run(args, pb, rpc) -> None:
    channel = grpc.insecure_channel(args.addr)
    grpc.channel_ready_future(channel).result(timeout=10)
    auth = rpc.AuthServiceStub(channel)
    timeout = 10  # seconds, for every call

    try:
        user = auth.Register(
            pb.RegisterRequest(
                username=args.username,
                email=f"{args.username}@example.com",
                password=args.password,
                full_name="Python Example",
            ),
            timeout=timeout,
        ).user
        print(f"Register: created {user.username} (id {user.id})")
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
        print(f"Register: {args.username} already exists; logging in")

    login = auth.Login(
        pb.LoginRequest(username=args.username, password=args.password), timeout=timeout
    )
    token = login.tokens.access_token
    print(f"Login: {login.tokens.token_type} access token, expires in {login.tokens.expires_in} s")

    me = auth.ValidateToken(pb.ValidateTokenRequest(token=token), timeout=timeout)
    print(f"ValidateToken: user {me.username} (id {me.user_id}), roles {list(me.roles)}")
    if me.user_id != login.user.id:
        sys.exit(f"ValidateToken names {me.user_id}, Login named {login.user.id}")

    for role in ("user", "admin"):
        check = auth.CheckRole(pb.CheckRoleRequest(token=token, role=role), timeout=timeout)
        print(f"CheckRole {role}: allowed = {check.allowed}")
        if role == "user" and not check.allowed:
            sys.exit("CheckRole user: a registered account should hold `user`")

    jwks_url = f"http://{args.http}/.well-known/jwks.json"
    claims = verify_locally(token, jwks_url, args.issuer, args.audience)
    print(f"local JWT check: sub {claims['sub']}, sid {claims['sid']}, roles {claims.get('roles')}")
    if claims["sub"] != me.user_id or claims["sid"] != me.session_id:
        sys.exit("the token's claims disagree with ValidateToken")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", default="127.0.0.1:50051", help="authd's gRPC host:port")
    parser.add_argument("--http", default="127.0.0.1:9090", help="authd's HTTP host:port (JWKS)")
    parser.add_argument("--username", default="python-example")
    parser.add_argument("--password", default="example password 1")
    parser.add_argument("--issuer", default="authd", help="AUTHD_ISSUER")
    parser.add_argument("--audience", default="authd", help="AUTHD_AUDIENCE")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="authd-stubs-") as out_dir:
        pb, rpc = generate_stubs(pathlib.Path(out_dir))
        try:
            run(args, pb, rpc)
        except grpc.FutureTimeoutError:
            sys.exit(f"authd is not answering at {args.addr}")
        except grpc.RpcError as err:
            sys.exit(f"call failed: {err.code().name}: {err.details()}")
        except (jwt.InvalidTokenError, jwt.PyJWKClientError) as err:
            sys.exit(f"local JWT check failed: {type(err).__name__}: {err}")
    print("all checks passed")


if __name__ == "__main__":
    main()
