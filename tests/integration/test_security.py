"""Security on real redis-server processes: key injection, isolation, tokens, TLS and ACLs.

What is promised and what is not: docs/security.md. Destructive or server-wide checks (SCAN
of every key, MONITOR, ACL and TLS set-ups) run on private servers; the parallel isolation
test shares the run's server with unique phone numbers.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import logging
import os
import random
import re
import secrets
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import phonenumbers
import pytest
import redis
from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from redis_servers import RedisProcess

from vimbiso_state.adapters.redis.connection import close
from vimbiso_state.adapters.redis.keys import KeySchema
from vimbiso_state.adapters.token_cipher import FernetTokenCipher
from vimbiso_state.domain.conversation import Conversation
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.domain.timeouts import MAX_HANDLED_IDS
from vimbiso_state.services.config import Settings
from vimbiso_state.services.container import Container
from vimbiso_state.services.exceptions import (
    ConfigurationError,
    InvalidPhoneNumber,
    StateError,
    StateUnavailable,
    TokenError,
)
from vimbiso_state.services.state_service import StateService

KEY = Fernet.generate_key().decode()
OFFER = "handle_action_offer_credex"
E164 = re.compile(r"[1-9][0-9]{6,14}")
TAG = r"\{[1-9][0-9]{6,14}\}"
SCHEMA_KEY = re.compile(
    rf"^(user:{TAG}:state|session:{TAG}:data|form:{TAG}:data|handled:{TAG}|token:{TAG}"
    r"|expiry:\{0\})$"
)


def _possible(digits: str) -> bool:
    """Whether libphonenumber takes ``+digits`` as a possible number written canonically."""
    try:
        number = phonenumbers.parse("+" + digits)
    except phonenumbers.NumberParseException:
        return False
    return (
        phonenumbers.is_possible_number_with_reason(number)
        == phonenumbers.ValidationResult.IS_POSSIBLE
        and phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) == "+" + digits
    )


# Numbers that exist as far as their country's lengths go (a third of all digit strings).
possible_digits = st.from_regex(E164, fullmatch=True).filter(_possible)


def _service(url: str, *keys: str, **overrides: Any) -> tuple[Container, StateService]:
    container = Container.from_settings(
        Settings(backend="redis", redis_url=url, token_keys=keys or (KEY,)), **overrides
    )
    return container, container.state_service()


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def _all_keys(client: redis.Redis) -> list[str]:
    return sorted(key.decode() for key in client.scan_iter(count=1000))


# (a) key injection ----------------------------------------------------------------------------

_SEPARATORS = ["", "", "", " ", "-", ".", "(", ")"]
FULLWIDTH = "".join(chr(0xFF10 + int(digit)) for digit in "263771234567")  # str.isdigit() is True


@st.composite
def formatted_numbers(draw: st.DrawFn) -> tuple[str, str]:
    """A valid number as people write it: +, 00, spaces, dashes, dots, parentheses."""
    digits = draw(possible_digits)
    prefix = draw(st.sampled_from(["", "+", "00", "+ ", "00 ", "+(", "(+", "(00)"]))
    body = "".join(digit + draw(st.sampled_from(_SEPARATORS)) for digit in digits)
    padding = draw(st.sampled_from(["", " ", "  "]))
    return padding + prefix + body + padding, digits


# Nothing here is a separator: each one inside a number must make it invalid.
_POISON = [
    "*", "?", "[", "]", "[0-9]", "{", "}", "{x}", ":", ":state", "\\", "\n", "\r", "\t", "\x00",
    "/", "%", "a", "e", "#", "٣", "\uff13", "\u200b", "\u0660", "+", "..\n",
]  # fmt: skip


@st.composite
def poisoned_numbers(draw: st.DrawFn) -> str:
    digits = draw(possible_digits)
    at = draw(st.integers(1, len(digits) - 1))  # inside: outer whitespace is trimmed, fairly
    return digits[:at] + draw(st.sampled_from(_POISON)) + digits[at:]


phone_inputs = st.one_of(
    st.text(),  # full unicode
    st.text(alphabet="*?[]{}:\n\r\t\\ 0123456789+-.()٠١٢３", max_size=40),
    st.from_regex(r"\+?[0-9 ]{6,20}[*?\[\]{}:\n][0-9]{0,8}", fullmatch=True),
    st.builds(
        lambda digits, times: digits * times,
        st.from_regex(E164, fullmatch=True),
        st.integers(3, 400),
    ),
    formatted_numbers().map(lambda pair: pair[0]),
    # Plain possible numbers too: libphonenumber refuses most digit strings (a country's
    # lengths), and the fuzz must still write keys for enough numbers to prove something.
    possible_digits.map(lambda digits: "+" + digits),
    poisoned_numbers(),
)


@pytest.mark.slow
def test_phone_formats_are_canonical_or_refused() -> None:
    @settings(max_examples=300, deadline=None)
    @given(formatted_numbers())
    def formats(pair: tuple[str, str]) -> None:
        text, digits = pair
        if len(text) > 32:  # the documented input limit
            with pytest.raises(InvalidPhoneNumber):
                PhoneNumber.parse(text)
        else:
            assert PhoneNumber.parse(text).digits == digits

    @settings(max_examples=300, deadline=None)
    @given(poisoned_numbers())
    def poisoned(text: str) -> None:
        with pytest.raises(InvalidPhoneNumber):
            PhoneNumber.parse(text)

    formats()
    poisoned()


def test_key_injection_fuzz_leaves_only_schema_keys(private_redis: RedisProcess) -> None:
    container, state = _service(private_redis.url)
    parsed: set[str] = set()

    @settings(
        max_examples=400,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        # A token's length does not reach a key (it is sealed); an unbounded one only makes
        # Hypothesis discard examples that overrun its buffer, and stop before max_examples.
        text=phone_inputs,
        message_id=st.text(min_size=1, max_size=64),
        token=st.text(min_size=1, max_size=300),
    )
    @example(text="+263 77 123 4567", message_id="*", token="{x}")
    @example(text="00263771234568", message_id="wamid.{263771234567}:x", token="*")
    @example(text="(+263) 77-123.4569", message_id="\n", token="\n")
    @example(text=" +263771234570\n", message_id="user:{1}:state", token="token:{1}")
    @example(text="263771234567*", message_id="x", token="x")
    @example(text="user:{263771234567}:state", message_id="x", token="x")
    @example(text="{263771234567}", message_id="x", token="x")
    @example(text="26377123456?", message_id="x", token="x")
    @example(text="2637712345[6]", message_id="x", token="x")
    @example(text="٢٦٣٧٧١٢٣٤٥٦٧", message_id="x", token="x")  # Arabic-Indic digits
    @example(text=FULLWIDTH, message_id="x", token="x")
    @example(text="263771234567" * 3, message_id="x", token="x")
    @example(text="+0263771234567", message_id="x", token="x")
    @example(text="", message_id="x", token="x")
    def run(text: str, message_id: str, token: str) -> None:
        try:
            number = PhoneNumber.parse(text)
        except InvalidPhoneNumber:
            with pytest.raises(InvalidPhoneNumber):
                state.start(text)  # the service refuses it before any I/O
            return
        assert E164.fullmatch(number.digits)
        ascii_digits = "".join(c for c in text if c in "0123456789")
        # The key's digits all come from the input, in order: a "00" or a trunk "(0)" may be
        # dropped, nothing is ever added or converted (letters, unicode digits).
        rest = iter(ascii_digits)
        assert all(digit in rest for digit in number.digits), (text, number.digits)
        written = text.strip()
        written = written[4:] if written.lower().startswith("tel:") else written
        assert not set(written) - set("0123456789 -.()/+"), text
        parsed.add(number.digits)
        assert state.start(text).phone == number.digits
        state.handle_once(text, message_id, lambda conv: conv.context.update(note=message_id))
        state.save_token(text, token)

    run()

    client = private_redis.client()
    keys = _all_keys(client)
    assert len(parsed) >= 30, "too few valid numbers: the fuzz proved little"
    bad = [key for key in keys if not SCHEMA_KEY.match(key)]
    assert bad == []
    # Every key belongs to a number that parsed (but the one expiry index, whose entries
    # do), and nothing went to another database.
    users = [key for key in keys if not key.startswith("expiry:")]
    assert {key[key.index("{") + 1 : key.index("}")] for key in users} == parsed
    entries = {m.decode().partition(":")[2] for m in client.zrange("expiry:{0}", 0, -1)}
    assert entries <= parsed
    assert set(client.info("keyspace")) == {"db0"}
    client.close()
    container.redis_client().close()


# (b) state isolation --------------------------------------------------------------------------

USERS = 1000
ROUNDS = 2
WORKERS = 32


def test_parallel_users_never_see_each_other(redis_url: str) -> None:
    container, state = _service(redis_url)
    # A prefix the other suites do not use (they use 263...), a random block per run.
    base = 277_100_000_000 + random.randrange(0, 800_000_000, USERS)
    phones = [f"+{base + i}" for i in range(USERS)]
    cross_reads: list[str] = []

    def check(conv: Conversation, digits: str, where: str) -> None:
        owner = conv.context.get("owner")
        member = conv.profile.member.member_id if conv.profile else None
        if (
            conv.phone != digits
            or owner not in (None, digits)
            or member not in (None, f"m-{digits}")
        ):
            cross_reads.append(f"{where}: {digits} read {conv.phone}/{owner}/{member}")

    def setup(phone: str) -> None:
        digits = phone[1:]
        check(state.set_profile(phone, {"memberID": f"m-{digits}"}, []), digits, "profile")
        state.save_token(phone, f"tok-{digits}")

    def task(phone: str) -> None:
        digits = phone[1:]

        def bump(conv: Conversation) -> None:
            check(conv, digits, "change")
            conv.context["owner"] = digits
            conv.context["counter"] = conv.context.get("counter", 0) + 1

        check(state.update(phone, bump), digits, "update")
        check(state.start(phone), digits, "start")
        if state.token(phone) != f"tok-{digits}":
            cross_reads.append(f"token of {digits}")

    # Every user's updates in a random order: one user's updates also race each other.
    jobs = phones * ROUNDS
    random.Random(5).shuffle(jobs)
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        list(pool.map(setup, phones))
        list(pool.map(task, jobs))
    try:
        assert cross_reads == []
        for phone in phones:
            conv = state.start(phone)
            check(conv, phone[1:], "final")
            assert conv.context == {"owner": phone[1:], "counter": ROUNDS}
        assert cross_reads == []
    finally:
        for phone in phones:
            state.reset(phone)
        container.redis_client().close()


# (c) tokens -----------------------------------------------------------------------------------


class Monitor:
    """Every command the server receives, raw, from a MONITOR connection."""

    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self._sock.sendall(b"MONITOR\r\n")
        self._chunks: list[bytes] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while chunk := self._sock.recv(65536):
                self._chunks.append(chunk)
        except OSError:
            pass

    def stop(self) -> bytes:
        time.sleep(0.05)  # let the last commands arrive
        self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(timeout=5)
        return b"".join(self._chunks)


def _values(client: redis.Redis) -> bytes:
    """Every key's DUMP and its readable value, concatenated."""
    out = []
    for key in client.scan_iter(count=1000):
        out.append(client.dump(key) or b"")
        kind = client.type(key)
        if kind == b"string":
            out.append(client.get(key) or b"")
        elif kind == b"hash":
            out.extend(v for pair in client.hgetall(key).items() for v in pair)
        elif kind == b"zset":
            out.extend(client.zrange(key, 0, -1))
    return b"\n".join(out)


def _corrupt(client: redis.Redis, key: str) -> None:
    """Break the JSON of a stored session, whichever layout the store uses."""
    if client.type(key) == b"hash":  # {d: json, t: last seen}
        client.hset(key, "d", b"{broken")
    else:  # 16 digits of last-seen time, then the JSON
        client.setrange(key, 16, b"{broken")


def test_a_token_never_appears_in_redis_logs_reprs_or_errors(
    private_redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "S3CR3T" + secrets.token_hex(12)
    jwt = f"eyJhbGciOiJIUzI1NiJ9.{secret}.c2ln"
    caplog.set_level(logging.DEBUG)
    for name in ("redis", "vimbiso_state"):
        caplog.set_level(logging.DEBUG, logger=name)
    admin = private_redis.client()
    monitor = Monitor(private_redis.port)
    container, state = _service(private_redis.url)
    other_container, other = _service(private_redis.url, Fernet.generate_key().decode())
    alice, bob = "+263771110001", "+263771110002"
    errors: list[BaseException] = []

    def expect(error: type[BaseException], call: Callable[[], object]) -> BaseException:
        with pytest.raises(error) as raised:
            call()
        errors.append(raised.value)
        return raised.value

    conversations = [state.start(alice), state.start(bob)]
    conversations.append(state.set_profile(alice, {"memberID": "m-a"}, [{"accountID": "a-a"}]))
    state.save_token(alice, jwt)
    assert state.token(alice) == jwt
    # A wrong key: a clear error, and not the token.
    wrong_key = expect(TokenError, lambda: other.token(alice))
    assert "cannot be decrypted" in str(wrong_key)
    # Alice's ciphertext copied under Bob's key decrypts, but is bound to Alice: refused.
    admin.set(f"token:{{{bob[1:]}}}", admin.get(f"token:{{{alice[1:]}}}") or b"")
    assert "another user" in str(expect(TokenError, lambda: state.token(bob)))
    # Tampered ciphertext.
    sealed = bytearray(admin.get(f"token:{{{alice[1:]}}}") or b"")
    sealed[-5] = ord("A") if sealed[-5] != ord("A") else ord("B")
    admin.set(f"token:{{{bob[1:]}}}", bytes(sealed))
    expect(TokenError, lambda: state.token(bob))
    # An undecodable document is logged (at WARNING) with the rest of the run's DEBUG lines.
    _corrupt(admin, f"session:{{{alice[1:]}}}:data")
    conversations.append(state.start(alice))
    assert "undecodable" in caplog.text
    conversations.append(state.update(alice, lambda conv: conv.navigate(OFFER)))
    assert state.token(alice) == jwt

    sent = monitor.stop()
    stored = _values(admin)
    assert b"EVALSHA" in sent.upper() or b"evalsha" in sent  # the monitor really saw traffic
    assert secret.encode() not in sent, "the token went to Redis in plain text"
    assert secret.encode() not in stored, "the token is stored in plain text"

    # The server goes away in the middle of saving a token.
    private_redis.stop()
    expect(StateUnavailable, lambda: state.save_token(alice, jwt))
    expect(StateUnavailable, lambda: state.token(alice))
    # A bad key in the configuration: the error does not echo it.
    bad_key = "not-a-fernet-key-" + secrets.token_hex(8)
    bad = Container.from_settings(Settings(backend="redis", token_keys=(bad_key,)))
    assert bad_key not in str(expect(ConfigurationError, bad.state_service))

    cipher = container.cipher()
    assert cipher is not None
    shown = [
        repr(state), str(state), repr(container), str(container), repr(container.settings()),
        str(container.settings()), repr(cipher), repr(other),
        repr(container.tokens()), repr(container.redis_client()),
        repr(cipher.open(PhoneNumber.parse(alice), cipher.seal(
            PhoneNumber.parse(alice), jwt, dt.datetime.now(dt.UTC), dt.datetime.now(dt.UTC)
        ))),
        *(repr(conv) for conv in conversations), *(str(conv) for conv in conversations),
        *(str(conv.to_json()) for conv in conversations),
    ]  # fmt: skip
    for text in shown:
        assert secret not in text and KEY not in text, text[:200]
    for error in errors:
        for text in (str(error), repr(error), "".join(traceback.format_exception(error))):
            assert secret not in text and KEY not in text and bad_key not in text, text[-500:]
    logged = caplog.text + "".join(record.getMessage() for record in caplog.records)
    assert secret not in logged and KEY not in logged
    other_container.redis_client().close()
    container.redis_client().close()
    admin.close()


def test_rotation_old_tokens_still_open_and_new_ones_use_the_new_key(
    private_redis: RedisProcess,
) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    before, state_old = _service(private_redis.url, old)
    during, state_rotating = _service(private_redis.url, new, old)  # new first: it encrypts
    after, state_new_only = _service(private_redis.url, new)
    alice, bob = "+263771110011", "+263771110012"

    state_old.save_token(alice, "jwt-sealed-with-old")
    assert state_rotating.token(alice) == "jwt-sealed-with-old"  # old key, second in the list
    with pytest.raises(TokenError):
        state_new_only.token(alice)  # ...which is the only thing that opens it

    state_rotating.save_token(bob, "jwt-sealed-with-new")
    with pytest.raises(TokenError):
        state_old.token(bob)  # an old-key-only cipher cannot open a new save
    assert state_new_only.token(bob) == "jwt-sealed-with-new"
    assert state_rotating.token(bob) == "jwt-sealed-with-new"

    # The cipher's own rotation re-encrypts an old ciphertext under the new key.
    cipher_old, cipher_rotating = FernetTokenCipher([old]), FernetTokenCipher([new, old])
    phone = PhoneNumber.parse(alice)
    now = dt.datetime.now(dt.UTC)
    rotated = cipher_rotating.rotate(cipher_old.seal(phone, "jwt", now, now))
    assert FernetTokenCipher([new]).open(phone, rotated).value == "jwt"
    for container in (before, during, after):
        container.redis_client().close()


# (d) TLS --------------------------------------------------------------------------------------


def _write_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vimbiso-state test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = (
        directory / "ca.crt",
        directory / "redis.crt",
        directory / "redis.key",
    )
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


class TLSRedisProcess(RedisProcess):
    """A private redis-server that speaks TLS only: its port is the TLS port, plain is off."""

    def __init__(self, certificates: tuple[Path, Path, Path], executable: str) -> None:
        super().__init__(executable=executable)
        self.ca, self.cert, self.key = certificates

    @property
    def url(self) -> str:
        query = f"ssl_cert_reqs=required&ssl_ca_certs={quote(str(self.ca))}"
        return f"rediss://127.0.0.1:{self.port}/0?{query}"

    def command_line(self) -> list[str]:
        return [
            *super().command_line(),
            "--port", "0",
            "--tls-port", str(self.port),
            "--tls-cert-file", str(self.cert),
            "--tls-key-file", str(self.key),
            "--tls-ca-cert-file", str(self.ca),
            "--tls-auth-clients", "no",
        ]  # fmt: skip


@pytest.fixture
def tls_redis(redis_server_bin: str, tmp_path: Path) -> Iterator[TLSRedisProcess]:
    server = TLSRedisProcess(_write_certificates(tmp_path), redis_server_bin)
    try:
        server.start(timeout=5)
    except RuntimeError as exc:
        server.close()
        reason = f"this redis-server cannot serve TLS (built without it?): {exc}"
        if _in_ci():
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    yield server
    server.close()


def test_a_rediss_url_works_end_to_end(tls_redis: TLSRedisProcess) -> None:
    container, state = _service(tls_redis.url)
    phone = "+263771110021"
    assert state.start(phone).version > 0
    state.set_profile(phone, {"memberID": "m-tls"}, [{"accountID": "a-tls"}])
    conv = state.update(phone, lambda c: c.navigate(OFFER))
    assert conv.stage == OFFER
    state.save_token(phone, "jwt-over-tls")
    assert state.token(phone) == "jwt-over-tls"
    assert state.start(phone).profile is not None
    container.redis_client().close()

    # The port speaks TLS only, and the server's certificate is checked.
    plain = tls_redis.url.replace("rediss://", "redis://").split("?")[0]
    unverified = tls_redis.url.split("?")[0]  # rediss:// without our CA: system CAs only
    for url in (plain, unverified):
        container, state = _service(url)
        began = time.monotonic()
        with pytest.raises(StateUnavailable):
            state.start(phone)
        assert time.monotonic() - began < 2.0
        container.redis_client().close()


# (e) ACL and passwords ------------------------------------------------------------------------

# Every command the library sends for its data (found by removing each in turn: see
# test_every_granted_command_is_needed). EVALSHA runs the scripts and EVAL of the source
# answers NOSCRIPT (after a restart or failover) and runs the script a waiting message sends
# after its BLPOP; MGET is the read before a write; TIME sets the clock; PING is the idle
# health check; the scripts call the rest.
LIBRARY_COMMANDS = (
    "evalsha", "eval", "mget", "get", "set", "del", "getrange", "setrange", "pexpire", "pttl",
    "zadd", "zscore", "zremrangebyrank", "ping", "time", "blpop", "rpush",
    "incr", "decr", "hget", "hset", "hgetall", "hdel", "persist", "zrem",
    "zremrangebyscore", "zrange", "zcount",
)  # fmt: skip
DANGEROUS = ("flushall", "flushdb", "config", "keys", "debug", "shutdown")
ACL_USER, ACL_PASSWORD = "vimbiso", "acl-" + secrets.token_hex(8)


def _grant(admin: redis.Redis, commands: tuple[str, ...]) -> None:
    rules = [
        "reset", "on", f">{ACL_PASSWORD}",
        *(f"~{pattern}" for pattern in KeySchema.patterns),  # braces are literal in ACL globs
        "resetchannels", "-@all", *(f"+{command}" for command in commands),
        *(f"-{command}" for command in DANGEROUS),
    ]  # fmt: skip
    admin.execute_command("ACL", "SETUSER", ACL_USER, *rules)
    # redis-py announces itself with CLIENT SETINFO on Redis 7.2+ (7.0 lacks the command).
    with contextlib.suppress(redis.ResponseError):
        admin.execute_command("ACL", "SETUSER", ACL_USER, "+client|setinfo")


# A short session in the ACL tests so that a resume slides last-seen after a brief wait.
SESSION_TTL = 30
SLIDE_STEP = SESSION_TTL / 300
# A short dedupe window, so that an effect's result ages out (and is pruned) within the test.
DEDUPE_TTL = 1
ACL_SETTINGS: dict[str, Any] = {"session_ttl": SESSION_TTL, "dedupe_ttl": DEDUPE_TTL}
ELSEWHERE_FORM_TTL = 1


def _acl_url(server: RedisProcess) -> str:
    return f"redis://{ACL_USER}:{ACL_PASSWORD}@127.0.0.1:{server.port}/0"


def _realistic_flow(state: StateService, phone: str, elsewhere: StateService) -> None:
    """Every operation, on ``state``, plus a write by ``elsewhere`` (another process, which
    reads the conversation before it writes, and whose forms expire in a second)."""
    abandoned = phone.replace("+26377111", "+26377112")  # leaves a form: a due event
    elsewhere.form_start(abandoned, "offer", required=["amount"])
    due = time.monotonic() + ELSEWHERE_FORM_TTL
    state.start(phone)
    state.set_profile(phone, {"memberID": "m-acl"}, [{"accountID": "a-1"}, {"accountID": "a-2"}])
    state.navigate(phone, OFFER)
    state.back(phone)
    state.navigate(phone, OFFER)
    time.sleep(SLIDE_STEP + 0.05)  # a resume a slide step later: it reads and slides
    assert state.start(phone).stage == OFFER
    state.form_start(phone, "offer", required=["amount", "recipient"])
    state.update(phone, lambda conv: conv.context.update(step="amount"))  # the form as stored
    state.form_fill(phone, amount="USD 100")
    state.form_fill(phone, recipient="bob_smith")
    assert state.form_complete(phone)["recipient"] == "bob_smith"
    state.save_token(phone, "jwt-acl")
    assert state.token(phone) == "jwt-acl"
    assert state.revoke_token(phone) is True
    assert state.handle_once(phone, "wamid.1", lambda conv: conv.context.update(n=1)) is not None
    assert state.handle_once(phone, "wamid.1", lambda conv: conv.context.update(n=2)) is None
    state.update(phone, lambda conv: conv.select_account("a-2"))
    elsewhere.update(phone, lambda conv: conv.select_account("a-1"))
    assert state.start(phone, "hi").current_account is not None
    _messages(state, phone, elsewhere)
    for n in range(MAX_HANDLED_IDS):  # a burst: the handled ids are trimmed to their bound
        state.handle_once(phone, f"wamid.burst.{n}", lambda conv: None)
    time.sleep(max(0.0, due + 0.1 - time.monotonic()))  # the sleeps above took this already
    with state.expirations() as batch:  # the expiry index is polled and its event claimed
        assert [(event.phone, event.kind) for event in batch] == [(abandoned[1:], "form")]
    state.reset(phone)
    assert state.start(phone).profile is None


def _messages(state: StateService, phone: str, elsewhere: StateService) -> None:
    """A message with an effect and a token, while another (on ``elsewhere``) waits for it;
    then an effect left in doubt, seen and settled by the next message, and one more effect
    once the first one's result has aged out of the dedupe window."""
    waited: list[BaseException | bool] = []

    def second() -> None:
        try:
            with elsewhere.message(phone, "wamid.m2", "2") as msg:
                waited.append(msg.conversation.stage == OFFER)
        except BaseException as exc:  # raised in the test below, not lost in the thread
            waited.append(exc)

    with state.message(phone, "wamid.m1", "1") as msg:
        msg.conversation.navigate(OFFER)
        assert msg.effect("create_credex", lambda: {"credex": "c-1"}) == {"credex": "c-1"}
        msg.save_token("jwt-message")
        other = threading.Thread(target=second)
        other.start()
        time.sleep(0.2)  # it is waiting on this message by now
    other.join()
    if isinstance(waited[0], BaseException):
        raise waited[0]
    assert waited == [True]
    assert state.token(phone) == "jwt-message"
    with state.message(phone, "wamid.m3") as msg, contextlib.suppress(TimeoutError):
        msg.effect("create_credex", _times_out, key="offer-2")
    with state.message(phone, "wamid.m4") as msg:
        assert [doubt.key for doubt in msg.in_doubt] == ["offer-2"]
        msg.settle("create_credex", {"credex": "c-2"}, key="offer-2")
    time.sleep(DEDUPE_TTL + 0.1)
    with state.message(phone, "wamid.m5") as msg:
        assert msg.effect("create_credex", lambda: {"credex": "c-3"}, key="offer-3")


def _times_out() -> None:
    raise TimeoutError("Credex did not answer")


def test_the_library_runs_as_an_acl_user_limited_to_its_keys(
    debug_redis: RedisProcess,
) -> None:
    private_redis = debug_redis
    admin = private_redis.client(decode_responses=True)
    _grant(admin, LIBRARY_COMMANDS)
    admin.acl_log_reset()
    container, state = _service(_acl_url(private_redis), **ACL_SETTINGS)
    other, elsewhere = _service(
        _acl_url(private_redis), **ACL_SETTINGS, form_ttl=ELSEWHERE_FORM_TTL
    )
    for index in range(3):
        _realistic_flow(state, f"+26377111003{index}", elsewhere)
    assert admin.acl_log() == [], "the library sent a command or key its ACL user may not use"

    restricted = redis.Redis.from_url(_acl_url(private_redis), socket_timeout=2)
    for command in (("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "*"), ("KEYS", "*"),
                    ("DEBUG", "SLEEP", "0"), ("SHUTDOWN", "NOSAVE"), ("ACL", "LIST")):  # fmt: skip
        with pytest.raises(redis.exceptions.NoPermissionError):
            restricted.execute_command(*command)
    # Keys outside the schema, and schema look-alikes without the hash tag, are off limits.
    for key in ("cache:menu", "user:263771110030:state", "tokens"):
        with pytest.raises(redis.exceptions.NoPermissionError):
            restricted.set(key, "x")
    assert restricted.pttl("user:{263771110030}:state") > 0  # its own keys are fine
    assert admin.ping()  # SHUTDOWN really was refused
    restricted.close()
    container.redis_client().close()
    other.redis_client().close()
    admin.close()


def test_every_granted_command_is_needed(private_redis: RedisProcess) -> None:
    admin = private_redis.client(decode_responses=True)
    for index, command in enumerate(LIBRARY_COMMANDS):
        if command == "ping":
            continue  # only the health check after 30 s idle: too slow to wait for here
        _grant(admin, tuple(c for c in LIBRARY_COMMANDS if c != command))
        admin.script_flush()  # so that the EVAL fallback (NOSCRIPT) is exercised every time
        # New processes each time: the clock reads the server's TIME when first used.
        container, state = _service(_acl_url(private_redis), **ACL_SETTINGS)
        other, elsewhere = _service(
            _acl_url(private_redis), **ACL_SETTINGS, form_ttl=ELSEWHERE_FORM_TTL
        )
        with pytest.raises(StateError, match=r"permission|can't run"):
            _realistic_flow(state, f"+2637711104{index:02d}", elsewhere)
            pytest.fail(f"the flow did not need {command}")
        close(container.redis_client())
        close(other.redis_client())
    admin.close()


@pytest.mark.parametrize("credentials", ["wrong", "missing", "wrong_acl_user"])
def test_wrong_credentials_give_a_clear_error_without_the_password(
    redis_server_bin: str, credentials: str, caplog: pytest.LogCaptureFixture
) -> None:
    password = "right-" + secrets.token_hex(8)
    wrong = "wrong-" + secrets.token_hex(8)
    caplog.set_level(logging.DEBUG)
    with RedisProcess(password=password, executable=redis_server_bin) as server:
        url = {
            "wrong": f"redis://:{wrong}@127.0.0.1:{server.port}/0",
            "missing": f"redis://127.0.0.1:{server.port}/0",
            "wrong_acl_user": f"redis://{ACL_USER}:{wrong}@127.0.0.1:{server.port}/0",
        }[credentials]
        container, state = _service(url)
        began = time.monotonic()
        with pytest.raises(StateUnavailable, match="credentials") as raised:
            state.start("+263771110041")
        assert time.monotonic() - began < 0.5
        text = "".join(traceback.format_exception(raised.value))
        shown = text + repr(container.settings()) + caplog.text
        assert password not in shown and wrong not in shown
        container.redis_client().close()

        _, good = _service(server.url)
        assert good.start("+263771110041").version > 0
