"""GB/T 28181 digest (drivers/gb28181/digest.py): the standard's J.1 example, qop=auth against an
independent RFC 2617 computation, verify() with the uri and username as the device sent them, and the
nonce store's single use, expiry, unknown nonces and memory bound."""

import hashlib

import pytest
from hypothesis import given, strategies as st

from tianwang.drivers.gb28181 import digest
from tianwang.drivers.gb28181.sip import SipError

J1 = dict(
    username="64010000002020000001",
    realm="64010000",
    nonce="6fe9ba44a76be22a",
    uri="sip:64010000002000000001@172.18.16.5:5060",
    password="12345678",
)
J1_RESPONSE = "9625d92d1bddea7a911926e0db054968"


def md5(text):
    return hashlib.md5(text.encode()).hexdigest()


def test_annex_j1_example():
    got = digest.compute_response(J1["username"], J1["realm"], J1["password"], "REGISTER", J1["uri"], J1["nonce"])
    assert got == J1_RESPONSE


def test_qop_auth_matches_rfc2617_formula():
    ha1 = md5("34020000001320000001:3402000000:s3cret")
    ha2 = md5("REGISTER:sip:34020000002000000001@3402000000")
    expected = md5(f"{ha1}:abcdef0123:00000002:0a4f113b:auth:{ha2}")
    got = digest.compute_response(
        "34020000001320000001",
        "3402000000",
        "s3cret",
        "REGISTER",
        "sip:34020000002000000001@3402000000",
        "abcdef0123",
        qop="auth",
        nc="00000002",
        cnonce="0a4f113b",
    )
    assert got == expected
    assert (
        digest.compute_response(
            "34020000001320000001",
            "3402000000",
            "s3cret",
            "REGISTER",
            "sip:34020000002000000001@3402000000",
            "abcdef0123",
            qop="auth",
            nc=2,
            cnonce="0a4f113b",
        )
        == expected
    )


def test_parse_challenge_quoted_and_bare():
    params = digest.parse_challenge('Digest realm="3402000000", nonce="a,b\\"c", qop="auth",algorithm=MD5, stale=TRUE')
    assert params["realm"] == "3402000000"
    assert params["nonce"] == 'a,b"c'
    assert params["qop"] == "auth"
    assert params["algorithm"] == "MD5"
    assert params["stale"] == "TRUE"


@pytest.mark.parametrize("value", ["Basic abc", 'Digest realm="x"', 'Digest nonce="x', "Digest realm"])
def test_bad_challenges_raise(value):
    with pytest.raises(SipError) as info:
        digest.parse_challenge(value)
    assert info.value.reason == "bad_auth"


def test_j1_authorization_as_a_device_sends_it_verifies():
    header = (
        'Digest username="64010000002020000001", realm="64010000", nonce="6fe9ba44a76be22a", '
        'uri="sip:64010000002000000001@172.18.16.5:5060", response="9625d92d1bddea7a911926e0db054968", '
        "algorithm=MD5"
    )
    auth = digest.parse_authorization(header)
    assert digest.verify(auth, "12345678", "REGISTER")
    assert digest.verify(auth, "12345678", "REGISTER", realm="64010000")
    assert not digest.verify(auth, "12345678", "REGISTER", realm="64010001")
    assert not digest.verify(auth, "12345679", "REGISTER")
    assert not digest.verify(auth, "12345678", "MESSAGE")


def test_verify_hashes_uri_and_username_as_sent():
    # SIPp-style: uri is sip:<ip>:<port>, not the Request-URI; the username is not the device's ID
    header = digest.authorization("admin", "4303000000", "pw", "REGISTER", "sip:10.0.0.1:5060", "n1")
    auth = digest.parse_authorization(header)
    assert auth["uri"] == "sip:10.0.0.1:5060" and auth["username"] == "admin"
    assert digest.verify(auth, "pw", "REGISTER")
    tampered = dict(auth, uri="sip:43030000002000000001@4303000000")
    assert not digest.verify(tampered, "pw", "REGISTER")
    tampered = dict(auth, username="43030000001320000001")
    assert not digest.verify(tampered, "pw", "REGISTER")


def test_verify_qop_uses_nc_as_received():
    header = digest.authorization("dev", "r", "pw", "REGISTER", "sip:r", "n", qop="auth", nc=10, cnonce="cn")
    auth = digest.parse_authorization(header)
    assert auth["nc"] == "0000000a" and auth["qop"] == "auth" and auth["cnonce"] == "cn"
    assert digest.verify(auth, "pw", "REGISTER")
    # an nc spelled differently hashes differently: it is taken as received, never re-rendered
    assert not digest.verify(dict(auth, nc="0000000A"), "pw", "REGISTER")
    assert not digest.verify(dict(auth, qop="auth-int"), "pw", "REGISTER")
    assert not digest.verify({k: v for k, v in auth.items() if k != "cnonce"}, "pw", "REGISTER")
    assert not digest.verify(dict(auth, algorithm="MD5-sess"), "pw", "REGISTER")
    assert not digest.verify({k: v for k, v in auth.items() if k != "response"}, "pw", "REGISTER")


def test_response_compared_case_insensitively():
    header = digest.authorization("dev", "r", "pw", "REGISTER", "sip:r", "n")
    auth = digest.parse_authorization(header)
    assert digest.verify(dict(auth, response=auth["response"].upper()), "pw", "REGISTER")


def test_www_authenticate_round_trips_through_parse_challenge():
    value = digest.www_authenticate("4303000000", "abc", qop="auth", stale=True, opaque="op")
    params = digest.parse_challenge(value)
    assert params["realm"] == "4303000000" and params["nonce"] == "abc"
    assert params["qop"] == "auth" and params["stale"] == "true" and params["opaque"] == "op"
    assert params["algorithm"] == "MD5"
    plain = digest.parse_challenge(digest.www_authenticate("r", "n"))
    assert "qop" not in plain and "stale" not in plain


def test_authorization_refuses_an_unsupported_qop():
    with pytest.raises(ValueError):
        digest.authorization("u", "r", "p", "REGISTER", "sip:r", "n", qop="auth-int")


# -- nonces -------------------------------------------------------------------------------------
def test_nonce_single_use():
    store = digest.NonceStore(ttl_s=60)
    nonce = store.issue(100.0)
    assert store.check(nonce, 101.0) == "ok"
    assert store.check(nonce, 101.5) == "stale"


def test_nonce_reusable_when_not_single_use():
    store = digest.NonceStore(ttl_s=60, single_use=False)
    nonce = store.issue(100.0)
    assert store.check(nonce, 101.0) == "ok"
    assert store.check(nonce, 150.0) == "ok"
    assert store.check(nonce, 160.5) == "stale"


def test_nonce_expires():
    store = digest.NonceStore(ttl_s=60)
    nonce = store.issue(100.0)
    assert store.check(nonce, 160.5) == "stale"
    assert len(store) == 0


def test_unknown_nonces():
    store = digest.NonceStore()
    other = digest.NonceStore()
    assert store.check(other.issue(1.0), 1.0) == "unknown"  # another process's key
    assert store.check("6fe9ba44a76be22a", 1.0) == "unknown"
    assert store.check("", 1.0) == "unknown"
    genuine = store.issue(1.0)
    forged = genuine[:-1] + ("0" if genuine[-1] != "0" else "1")
    assert store.check(forged, 1.0) == "unknown"
    assert store.check(genuine, 1.0) == "ok"


def test_nonce_store_is_bounded_and_forgotten_nonces_are_stale():
    store = digest.NonceStore(ttl_s=300, max_nonces=100)
    nonces = [store.issue(10.0 + i * 0.001) for i in range(1000)]
    assert len(store) == 100
    assert store.evicted == 900
    assert store.check(nonces[0], 11.0) == "stale"
    assert store.check(nonces[-1], 11.0) == "ok"
    assert len(set(nonces)) == 1000


def test_expired_nonces_are_swept_on_issue():
    store = digest.NonceStore(ttl_s=10)
    for i in range(50):
        store.issue(float(i) * 0.1)
    store.issue(100.0)
    assert len(store) == 1


def test_scheme_separated_by_any_whitespace():
    params = digest.parse_authorization('Digest\tusername="a",realm="b"')
    assert params["username"] == "a" and params["realm"] == "b"
    assert digest.parse_authorization("digest") == {"scheme": "digest"}


def check_header_text(text):
    for parse in (digest.parse_authorization, digest.parse_challenge):
        try:
            params = parse(text)
        except SipError as exc:
            assert exc.reason == "bad_auth"
            continue
        assert params["scheme"] == "digest" and all(isinstance(v, str) for v in params.values())
        # verify never raises on whatever a device sent, it only says no
        assert digest.verify(params, "pw", "REGISTER") in (True, False)


@given(st.text(max_size=200))
def test_any_header_text_is_params_or_a_sip_error(text):
    check_header_text(text)


@given(st.text(alphabet='Digest usernamrlcoqp=",\\ \t\x80abc', max_size=200))
def test_digest_like_text_is_params_or_a_sip_error(text):
    check_header_text("Digest " + text)
