"""clickrelay's SMTP side: the rewriting engine, the SMTP server, the upstream, preflight."""
