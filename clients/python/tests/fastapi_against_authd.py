#!/usr/bin/env python3
"""A FastAPI app that delegates to a real authd through the `authd` package, driven
with FastAPI's TestClient. Run by tests/api/python_package.rs against a fresh server
(an admin's access token in AUTHD_TEST_ADMIN_TOKEN); prints one line per check and
exits non-zero at the first that fails.

    python3 fastapi_against_authd.py --addr 127.0.0.1:50051 --http 127.0.0.1:9090
"""

import argparse
import os
import sys
import time

from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

import authd.fastapi
from authd import Client
from authd.fastapi import require_permission, require_role, require_user
from authd.pb import admin_pb2

PASSWORD = "correct horse battery staple"


def check(what: str, ok: bool, detail: object = "") -> None:
    if not ok:
        sys.exit(f"FAILED: {what} {detail}")
    print(f"ok: {what}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr", required=True)
    parser.add_argument("--http", required=True)
    args = parser.parse_args()

    client = Client(args.addr)
    admin = client.admin_as(os.environ["AUTHD_TEST_ADMIN_TOKEN"])
    alice = client.register("alice", "alice@example.com", PASSWORD)
    bob = client.register("bob", "bob@example.com", PASSWORD)
    admin.AssignRole(admin_pb2.AssignRoleRequest(user_id=bob.id, role="editor"))
    admin.CreateRole(
        admin_pb2.CreateRoleRequest(
            name="publisher", description="publishes", permissions=["articles.publish"]
        )
    )
    admin.AssignRole(admin_pb2.AssignRoleRequest(user_id=bob.id, role="publisher"))
    api_key = admin.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(name="drafts-bot", roles=["editor"])
    ).api_key
    alice_tokens = client.login("alice", PASSWORD).tokens
    bob_tokens = client.login("bob", PASSWORD).tokens

    # The three lines a FastAPI app needs: the import above, this, and Depends(...).
    verifier = authd.fastapi.configure(
        args.addr, jwks_url=f"http://{args.http}/.well-known/jwks.json"
    )
    check("the verifier has the stream's snapshot", verifier.revocations.healthy())

    app = FastAPI()

    @app.get("/me")
    async def me(user=Depends(require_user())):
        return {"user_id": user.user_id, "roles": list(user.roles)}

    @app.get("/drafts")
    async def drafts(user=Depends(require_role("editor"))):
        return {"user_id": user.user_id, "local": user.verified_locally}

    @app.post("/publish")
    async def publish(user=Depends(require_permission("articles.publish"))):
        return {"user_id": user.user_id, "username": user.username}

    http = TestClient(app)

    def get(path: str, token: str = None, scheme: str = "Bearer"):
        headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
        return http.get(path, headers=headers)

    asked = verifier.remote_calls
    answer = get("/drafts", bob_tokens.access_token)
    check("an editor's token is allowed", answer.status_code == 200, answer.text)
    check("as the editor", answer.json()["user_id"] == bob.id, answer.json())
    check(
        "verified in this process, without asking authd",
        answer.json()["local"] and verifier.remote_calls == asked,
        (answer.json(), verifier.remote_calls, asked),
    )
    answer = get("/drafts", alice_tokens.access_token)
    check("a user without the role is 403", answer.status_code == 403, answer.text)
    check("naming the role", "editor" in answer.json()["detail"], answer.json())

    for what, token, scheme in [
        ("no Authorization header", None, "Bearer"),
        ("garbage", "garbage", "Bearer"),
        ("another scheme", "YWxpY2U6cHc=", "Basic"),
        ("a refresh token", alice_tokens.refresh_token, "Bearer"),
    ]:
        answer = get("/me", token, scheme)
        check(f"{what} is 401", answer.status_code == 401, answer.text)
        check(
            f"{what} asks for a bearer token",
            answer.headers.get("www-authenticate") == "Bearer",
            answer.headers,
        )

    answer = http.post("/publish", headers={"Authorization": f"Bearer {bob_tokens.access_token}"})
    check("a holder of the permission may publish", answer.status_code == 200, answer.text)
    check("with the username authd gave", answer.json()["username"] == "bob", answer.json())
    answer = http.post("/publish", headers={"Authorization": f"Bearer {alice_tokens.access_token}"})
    check("a user without the permission is 403", answer.status_code == 403, answer.text)

    answer = get("/drafts", api_key)
    check("an API key with the role is allowed", answer.status_code == 200, answer.text)
    asked = verifier.remote_calls
    get("/drafts", api_key)
    check("the key's answer is kept", verifier.remote_calls == asked, verifier.remote_calls)

    # Logout: refused by the local verifier within 1 s, without asking authd.
    answer = get("/me", alice_tokens.access_token)
    check("alice's token is allowed before logout", answer.status_code == 200, answer.text)
    asked = verifier.remote_calls
    client.logout(alice_tokens.refresh_token)
    started = time.monotonic()
    while True:
        status = get("/me", alice_tokens.access_token).status_code
        waited = time.monotonic() - started
        if status == 401 or waited > 1.0:
            break
        time.sleep(0.01)
    check("a logged-out token is refused within 1 s", status == 401, f"after {waited:.3f} s")
    print(f"logout refused after {waited * 1000:.0f} ms")
    check(
        "refused by the local verifier",
        verifier.remote_calls == asked,
        (verifier.remote_calls, asked),
    )

    admin.SetUserActive(admin_pb2.SetUserActiveRequest(user_id=bob.id, active=False))
    started = time.monotonic()
    while get("/drafts", bob_tokens.access_token).status_code != 401:
        check("a deactivated user's token is refused within 1 s", time.monotonic() - started < 1.0)
        time.sleep(0.01)
    check("a deactivated user's token is refused", True)

    verifier.close()
    client.close()
    print("all checks passed")


if __name__ == "__main__":
    main()
