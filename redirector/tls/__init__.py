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
* :mod:`redirector.tls.settings` — what the listener's certificate handling is given
  (hosts, ``[acme]``, timing).
* :mod:`redirector.tls.served` — which certificate each host is served, installed into
  the running listener.
* :mod:`redirector.tls.renewal` — which host needs a certificate when, ordering and
  renewal with jitter and back-off.
* :mod:`redirector.tls.status`, :mod:`redirector.tls.host_state` — what is known about a
  host's certificate; :mod:`redirector.tls.metrics` — its metrics.
* :mod:`redirector.tls.manager` — all of it put together for the HTTPS listener.
"""
