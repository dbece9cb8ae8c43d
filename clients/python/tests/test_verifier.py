"""The local verifier without a server: tokens signed here with an Ed25519 key
whose JWK Set is a file, and an authd address where nothing listens, so every
question to authd shows as ``Unavailable`` and in ``remote_calls``."""

import json
import os
import socket
import tempfile
import time
import unittest

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from authd import Unauthenticated, Unavailable, Verifier
from authd.revocations import Kind

KID = "key-1"


def free_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


class VerifierTest(unittest.TestCase):
    def setUp(self):
        self.key = Ed25519PrivateKey.generate()
        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(self.key.public_key()))
        jwk.update(kid=KID, alg="EdDSA", use="sig")
        self.dir = tempfile.TemporaryDirectory()
        self.jwks = os.path.join(self.dir.name, "jwks.json")
        with open(self.jwks, "w") as f:
            json.dump({"keys": [jwk]}, f)
        self.verifier = Verifier(
            free_address(), jwks_url=f"file://{self.jwks}", timeout=0.5, jwks_min_interval=0
        )
        self.verifier.refresh_keys()
        # As if the stream's snapshot had arrived.
        self.verifier.revocations.connected()
        self.verifier.revocations.apply(Kind.SNAPSHOT_COMPLETE, "", time.time() - 3600, "c0")

    def tearDown(self):
        self.verifier.close()
        self.dir.cleanup()

    def token(self, key=None, kid=KID, typ="at+jwt", **claims) -> str:
        now = int(time.time())
        body = {
            "iss": "authd",
            "aud": "authd",
            "sub": "user-1",
            "sid": "session-1",
            "iat": now - 10,
            "nbf": now - 10,
            "exp": now + 600,
            "jti": "j",
            "roles": ["viewer", "user"],
        }
        body.update(claims)
        return jwt.encode(
            body, key or self.key, algorithm="EdDSA", headers={"kid": kid, "typ": typ}
        )

    def assert_refused(self, token: str):
        with self.assertRaises(Unauthenticated):
            self.verifier.verify(token)

    def test_a_good_token_verifies_without_asking_authd(self):
        token = self.token()
        for _ in range(3):
            principal = self.verifier.verify(token)
        self.assertEqual(principal.user_id, "user-1")
        self.assertEqual(principal.session_id, "session-1")
        self.assertEqual(principal.roles, ("viewer", "user"))
        self.assertTrue(principal.has_role("user") and not principal.has_role("editor"))
        self.assertTrue(principal.verified_locally)
        self.assertIsNone(principal.username)
        self.assertEqual(self.verifier.remote_calls, 0)

    def test_bad_tokens_are_refused_locally(self):
        self.assert_refused("garbage")
        self.assert_refused("")
        self.assert_refused(self.token(key=Ed25519PrivateKey.generate()))
        self.assert_refused(self.token(exp=int(time.time()) - 5))
        self.assert_refused(self.token(iss="someone-else"))
        self.assert_refused(self.token(aud="another-service"))
        self.assert_refused(self.token(typ="JWT"))
        hs256 = jwt.encode({"sub": "x"}, "s" * 32, algorithm="HS256", headers={"kid": KID})
        self.assert_refused(hs256)
        self.assertEqual(self.verifier.remote_calls, 0)

    def test_an_ended_session_is_refused_from_the_stream(self):
        token = self.token()
        self.verifier.verify(token)
        self.verifier._apply_event(Kind.SESSION_ENDED, "session-1", time.time())
        self.assert_refused(token)
        self.assertEqual(self.verifier.remote_calls, 0)

    def test_what_it_cannot_decide_goes_to_authd(self):
        unsure = [
            self.token(kid="a-kid-nobody-published"),
            "authd_abcdefgh_" + "x" * 43,  # an API key
        ]
        for token in unsure:
            with self.assertRaises(Unavailable):
                self.verifier.verify(token)
        with self.assertRaises(Unavailable):
            self.verifier.verify(self.token(), need_permissions=True)
        self.assertEqual(self.verifier.remote_calls, 3)

    def test_a_stream_down_past_the_bound_sends_every_check_to_authd(self):
        self.verifier.revocations.max_outage = 0.0
        self.verifier.revocations.disconnected()
        time.sleep(0.01)
        with self.assertRaises(Unavailable):
            self.verifier.verify(self.token())
        self.assertEqual(self.verifier.remote_calls, 1)

    def test_a_key_published_later_is_fetched_once_seen(self):
        other = Ed25519PrivateKey.generate()
        token = self.token(key=other, kid="key-2")
        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(other.public_key()))
        jwk.update(kid="key-2", alg="EdDSA", use="sig")
        with open(self.jwks) as f:
            keys = json.load(f)
        keys["keys"].append(jwk)
        with open(self.jwks, "w") as f:
            json.dump(keys, f)
        self.assertEqual(self.verifier.verify(token).user_id, "user-1")
        self.assertEqual(self.verifier.remote_calls, 0)


if __name__ == "__main__":
    unittest.main()
