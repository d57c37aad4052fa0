"""One ACME order for one host, with certbot's ``acme`` library (RFC 8555).

The library is synchronous (``requests`` underneath, ``time.sleep`` while polling), so
:func:`order_certificate` is meant to run in a worker thread; it talks back to the event
loop only through the ``publish``/``withdraw`` callbacks that place and remove the
HTTP-01 answer where every redirector node can serve it.

Errors the CA reports are kept verbatim (problem type and detail) in
:class:`AcmeOrderError`, so ``clickrelay check`` can show exactly what the CA said.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256
from josepy.jwk import JWKEC

from clickrelay.common import __version__
from clickrelay.common.errors import ClickrelayError

#: Seconds one HTTP request to the CA may take.
NETWORK_TIMEOUT = 30
#: Seconds an order may take from the first request to the certificate.
ORDER_TIMEOUT = 120.0


class AcmeOrderError(ClickrelayError):
    """The order failed; the message is what the CA (or the network) said."""


@dataclass(frozen=True)
class Account:
    """The ACME account: its key (PEM) and, once registered, its URL at the CA."""

    key_pem: bytes
    uri: str | None = None


def new_account_key() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _jwk(account: Account) -> JWKEC:
    key = serialization.load_pem_private_key(account.key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise AcmeOrderError("the ACME account key is not an ECDSA key")
    return JWKEC(key=key)


def _problem(error: messages.Error | None) -> str:
    if error is None:
        return "no details given by the CA"
    parts = [p for p in (error.typ, error.detail) if p]
    return ": ".join(parts) if parts else str(error)


def describe_error(exc: BaseException) -> str:
    """What the CA said, verbatim, for any failure of an order."""
    if isinstance(exc, errors.ValidationError):
        found = []
        for authzr in exc.failed_authzrs:
            for challb in authzr.body.challenges:
                if challb.error is not None:
                    found.append(_problem(challb.error))
        return "; ".join(found) or str(exc)
    if isinstance(exc, errors.IssuanceError):
        return _problem(exc.error)
    if isinstance(exc, messages.Error):
        return _problem(exc)
    if isinstance(exc, errors.TimeoutError):
        return "the CA did not finish the order in time"
    if isinstance(exc, requests.RequestException):
        return f"cannot reach the ACME server: {type(exc).__name__}: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _client(directory_url: str, ca_file: Path | None, account: Account) -> client.ClientV2:
    net = client.ClientNetwork(
        _jwk(account),
        alg=ES256,
        user_agent=f"clickrelay/{__version__} (acme-python)",
        timeout=NETWORK_TIMEOUT,
    )
    # ``verify_ssl`` is handed to requests as ``verify=``, which also takes a CA bundle
    # path; the library's annotation says bool only.
    verify: Any = str(ca_file) if ca_file is not None else True
    net.verify_ssl = verify
    directory = client.ClientV2.get_directory(directory_url, net)
    return client.ClientV2(directory, net)


def _register(acme: client.ClientV2, account: Account, email: str) -> Account:
    if account.uri:
        acme.net.account = messages.RegistrationResource(
            body=messages.Registration(), uri=account.uri
        )
        return account
    registration = messages.NewRegistration.from_data(
        email=email or None, terms_of_service_agreed=True
    )
    try:
        regr = acme.new_account(registration)
    except errors.ConflictError as exc:
        # The key is already registered (e.g. its URL was lost): the CA names the account.
        regr = messages.RegistrationResource(body=messages.Registration(), uri=exc.location)
        acme.net.account = regr
    return Account(account.key_pem, regr.uri)


def register_account(
    *, directory_url: str, ca_file: Path | None, account: Account, email: str
) -> Account:
    """``account`` registered at the CA (its URL set). Blocking: run in a thread.

    Raises :class:`AcmeOrderError` with the CA's words."""
    try:
        return _register(_client(directory_url, ca_file, account), account, email)
    except Exception as exc:  # any library or network failure is one failed order
        raise AcmeOrderError(describe_error(exc)) from exc


def order_certificate(
    *,
    directory_url: str,
    ca_file: Path | None,
    account: Account,
    email: str,
    host: str,
    key_pem: bytes,
    publish: Callable[[str, str], None],
    withdraw: Callable[[str], None],
) -> tuple[Account, str]:
    """Order a certificate for ``host`` (HTTP-01) and return (account, full chain PEM).

    ``publish(token, key_authorization)`` must make
    ``http://<host>/.well-known/acme-challenge/<token>`` answer ``key_authorization``
    before it returns; ``withdraw(token)`` is called for every published token at the end.
    Raises :class:`AcmeOrderError` with the CA's words. Blocking: run in a thread.
    """
    published: list[str] = []
    try:
        acme = _client(directory_url, ca_file, account)
        account = _register(acme, account, email)
        csr = crypto_util.make_csr(key_pem, [host])
        order = acme.new_order(csr)
        jwk = _jwk(account)
        for authzr in order.authorizations:
            if authzr.body.status == messages.STATUS_VALID:
                continue
            challb = next(
                (c for c in authzr.body.challenges if isinstance(c.chall, challenges.HTTP01)),
                None,
            )
            if challb is None:
                raise AcmeOrderError(f"the CA offers no http-01 challenge for {host}")
            response, validation = challb.response_and_validation(jwk)
            token = challb.chall.encode("token")
            publish(token, validation)
            published.append(token)
            acme.answer_challenge(challb, response)
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=ORDER_TIMEOUT)
        done = acme.poll_and_finalize(order, deadline)
        return account, str(done.fullchain_pem)
    except AcmeOrderError:
        raise
    except Exception as exc:  # any library or network failure is one failed order
        raise AcmeOrderError(describe_error(exc)) from exc
    finally:
        for token in published:
            withdraw(token)
