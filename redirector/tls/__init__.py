"""HTTPS for the tracking hosts: certificates by SNI, from files or from ACME.

* :mod:`redirector.tls.certs` — pure certificate logic: parse a PEM bundle, pick the one
  that covers a host, judge its expiry.
* :mod:`redirector.tls.sni` — the listener's ``SSLContext``: one certificate per tracking
  host, chosen by SNI; any other name gets no certificate (the handshake is refused).
* :mod:`redirector.tls.files` — ``[redirector] tls_certificates``: PEM files you bring.
* :mod:`redirector.tls.storage` — where ACME state lives (SQLite under the data
  directory, or the PostgreSQL click store's database for several nodes).
* :mod:`redirector.tls.acme_client` — one ACME order with certbot's ``acme`` library
  (synchronous, so it runs in a worker thread).
* :mod:`redirector.tls.manager` — which host needs a certificate when, renewal with
  jitter and back-off, installation into the running listener, metrics.
"""
