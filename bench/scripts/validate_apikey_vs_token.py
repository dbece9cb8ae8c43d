# ValidateToken calls/s for an access token vs an API key: same client, same server.
# Usage: python3 bench/scripts/validate_apikey_vs_token.py HOST:PORT
# Needs an admin "root" with password "change-me-now-please" (authd user create) and
# examples/python/requirements.txt. The Python client is the bottleneck (~5k calls/s),
# so this shows the two credentials side by side, not the server's maximum.
import asyncio, json, subprocess, sys, time, os, tempfile
import grpc
from grpc_tools import protoc
out = tempfile.mkdtemp()
import grpc_tools
WKT = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
protoc.main(["protoc", f"-I{os.path.join(os.path.dirname(__file__), '..', '..', 'proto')}", f"-I{WKT}", f"--python_out={out}", f"--grpc_python_out={out}", "auth/v1/auth.proto", "auth/v1/admin.proto"])
sys.path.insert(0, out)
from auth.v1 import auth_pb2, auth_pb2_grpc, admin_pb2, admin_pb2_grpc

ADDR = sys.argv[1]
async def bench(stub, token, seconds=5, conc=32):
    n = 0; stop = time.time() + seconds
    async def worker():
        nonlocal n
        while time.time() < stop:
            await stub.ValidateToken(auth_pb2.ValidateTokenRequest(token=token)); n += 1
    await asyncio.gather(*[worker() for _ in range(conc)])
    return n / seconds

async def main():
    async with grpc.aio.insecure_channel(ADDR) as ch:
        auth = auth_pb2_grpc.AuthServiceStub(ch); admin = admin_pb2_grpc.AdminServiceStub(ch)
        login = await auth.Login(auth_pb2.LoginRequest(username="root", password="change-me-now-please"))
        at = login.tokens.access_token
        key = await admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="bench", roles=["viewer"]), metadata=[("authorization", f"Bearer {at}")])
        await bench(auth, at, 1); await bench(auth, key.api_key, 1)
        for label, tok in [("access token", at), ("API key", key.api_key), ("access token", at), ("API key", key.api_key)]:
            print(f"{label:12s} {await bench(auth, tok):8.0f} calls/s")
asyncio.run(main())
